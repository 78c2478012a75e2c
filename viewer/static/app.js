// spanflow viewer: the entry point. The server sends this same page for "/", "/runs/<id>" and
// "/compare/<a>[/<b>]"; the path picks the view.
// Every element is built with createElement/textContent: captured data is never parsed as HTML.
// Nothing is loaded from outside this server (see the Content-Security-Policy).

import { ComparePage } from "./compare.js";
import { RunPage } from "./run.js";
import { ListPage } from "./runs.js";

let page = null; // the view on screen; stop() ends its polling

function route() {
  if (page) page.stop();
  const m = location.pathname.match(/^\/runs\/([^/]+)\/?$/);
  const c = location.pathname.match(/^\/compare\/([^/]+)(?:\/([^/]+))?\/?$/);
  if (m) page = new RunPage(decodeURIComponent(m[1]));
  else if (c) page = new ComparePage(decodeURIComponent(c[1]), c[2] ? decodeURIComponent(c[2]) : null);
  else page = new ListPage(go);
}

function go(href) {
  history.pushState(null, "", href);
  route();
}

window.addEventListener("popstate", route);

// The first visit's ?token= is now a cookie: keep it out of history, bookmarks and screenshots.
const here = new URL(location.href);
if (here.searchParams.has("token")) {
  here.searchParams.delete("token");
  history.replaceState(null, "", here.pathname + here.search + here.hash);
}

route();
