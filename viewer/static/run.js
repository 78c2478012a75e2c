// spanflow viewer: one run: header, waterfall of spans, span panel and state playback.
// Every element is built with createElement/textContent: captured data is never parsed as HTML.

import { compareLinks } from "./compare.js";
import { opsList, renderDetail } from "./detail.js";
import { ago, badge, el, fmtDate, fmtMs, getJSON, incompleteTag, link, runHref, setCrumbs, setStore, shortId, showError } from "./dom.js";
import { playback } from "./state.js";
import { ancestors, buildModel, pickFailed, spanClass, spanTags, tokenText } from "./trace.js";

const ROW_H = 26; // keep in sync with --row-h in app.css
const OVERSCAN = 15;
const RUN_POLL_MS = 2000;

export function RunPage(key) {
  this.key = key;
  this.stopped = false;
  this.timer = null;
  this.selected = null;
  this.userSelected = false;
  this.collapsed = new Set();
  this.filter = "";
  this.tab = "span";
  this.frame = 0;
  this.win = { first: -1, last: -1 };
  this.rendered = false;
  this.extra = new Map(); // seq -> span, from "show more" pages
  this.loadingMore = false;
  setCrumbs([{ text: "Runs", href: "/" }, { text: shortId(key) }]);
  this.load();
}

RunPage.prototype.stop = function () {
  this.stopped = true;
  clearTimeout(this.timer);
};

RunPage.prototype.load = async function () {
  let data;
  try {
    data = await getJSON("/api/runs/" + encodeURIComponent(this.key));
  } catch (e) {
    if (this.stopped) return;
    if (this.rendered && e.status !== 404) {
      this.timer = setTimeout(() => this.load(), RUN_POLL_MS);
      return;
    }
    showError(e.status === 404 ? "No such run: " + e.message : "Cannot load the run: " + e.message);
    return;
  }
  if (this.stopped) return;
  // A refresh starts from the first page again: a running run's order may have changed.
  this.extra = new Map();
  this.first = data;
  this.show(data);
  if (data.run.status === "running") this.timer = setTimeout(() => this.load(), RUN_POLL_MS);
};

RunPage.prototype.show = function (data) {
  const t0 = performance.now();
  this.render(data);
  // Force style and layout so the figure covers what the user waits for.
  void document.body.offsetHeight;
  const ms = performance.now() - t0;
  window.__spanflow = { renderMs: ms, spans: data.spans.length, total: data.span_total, rows: this.rowsLayer.childElementCount, ready: true };
};

// The spans loaded so far: the first page plus the pages "show more" fetched, by place.
RunPage.prototype.merged = function () {
  const bySeq = new Map(this.first.spans.map((s) => [s.seq, s]));
  for (const [seq, s] of this.extra) bySeq.set(seq, s);
  const spans = Array.from(bySeq.values()).sort((a, b) => a.seq - b.seq);
  return Object.assign({}, this.first, { spans });
};

// How many spans, from the first on, are loaded without a gap.
RunPage.prototype.loadedPrefix = function () {
  let n = this.first.span_first;
  while (this.extra.has(n)) n++;
  return n;
};

RunPage.prototype.showMore = async function () {
  if (this.loadingMore) return;
  this.loadingMore = true;
  this.moreButton.disabled = true;
  const offset = this.loadedPrefix();
  let page;
  try {
    page = await getJSON("/api/runs/" + encodeURIComponent(this.key) + "/spans?offset=" + offset);
  } catch (e) {
    this.moreText.textContent = "Cannot load more spans: " + e.message;
    return;
  } finally {
    this.loadingMore = false;
    this.moreButton.disabled = false;
  }
  if (this.stopped) return;
  for (const s of page.spans) this.extra.set(s.seq, s);
  this.show(this.merged());
};

RunPage.prototype.renderMore = function () {
  const d = this.data;
  const left = d.span_total - d.spans.length;
  this.more.classList.toggle("hidden", left <= 0);
  if (left <= 0) return;
  this.moreText.textContent = "… " + left.toLocaleString("en-US") + " more spans not loaded (the page shows the first " +
    this.loadedPrefix().toLocaleString("en-US") + " and the failed step) — ";
};

RunPage.prototype.render = function (data) {
  this.data = data;
  this.model = buildModel(data);
  this.pb = playback(this.model);
  this.frame = Math.min(this.frame, this.pb.frames.length - 1);
  setStore(data.db);
  const run = data.run;
  document.title = (run.workflow || shortId(run.id)) + " · " + run.status + " · spanflow";
  setCrumbs([{ text: "Runs", href: "/" }, { text: (run.workflow || "run") + " " + shortId(run.id) }]);
  if (!this.rendered) this.buildSkeleton();
  this.renderHead();
  let sel = this.selected && this.model.byId.get(this.selected);
  if (!sel || !this.userSelected) {
    sel = pickFailed(this.model) || sel || this.model.root || this.model.order[0] || null;
  }
  this.renderAxis();
  this.renderMore();
  this.selectSpan(sel ? sel.id : null, { scroll: !this.rendered, user: this.userSelected });
  this.renderPlayback();
  this.rendered = true;
};

RunPage.prototype.buildSkeleton = function () {
  const root = el("section", "run");
  this.head = el("div", "run-head");
  const body = el("div", "run-body");

  const wf = el("div", "wf");
  const tools = el("div", "wf-tools");
  const search = el("input", "wf-search");
  search.type = "search";
  search.placeholder = "Filter spans by name";
  search.setAttribute("aria-label", "Filter spans by name");
  search.addEventListener("input", () => {
    this.filter = search.value.trim().toLowerCase();
    this.refreshRows(true);
  });
  this.legend = el("div", "legend");
  for (const [cls, text] of [["ok", "ok"], ["err", "error"], ["handled", "fallback / handled"], ["cached", "cached (replay)"], ["cancelled", "cancelled"]]) {
    const item = el("span", "lg");
    item.append(el("i", "sw " + cls), text);
    this.legend.append(item);
  }
  tools.append(search, this.legend);
  const head = el("div", "wf-head");
  head.append(el("div", "wf-name-h", "Span"));
  this.axis = el("div", "wf-axis");
  head.append(this.axis);
  this.body = el("div", "wf-body");
  this.body.tabIndex = 0;
  this.body.setAttribute("role", "tree");
  this.body.setAttribute("aria-label", "Spans of this run");
  this.spacer = el("div", "wf-spacer");
  this.rowsLayer = el("div", "wf-rows");
  this.spacer.append(this.rowsLayer);
  this.body.append(this.spacer);
  let pending = false;
  this.body.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      this.renderWindow(false);
    });
  });
  this.body.addEventListener("keydown", (ev) => this.onKey(ev));
  this.rowsLayer.addEventListener("click", (ev) => this.onRowClick(ev));
  window.addEventListener("resize", () => this.renderWindow(true));
  // Huge runs come in pages: this bar says how many spans are not loaded yet.
  this.more = el("div", "wf-more hidden");
  this.moreText = el("span", "muted");
  this.moreButton = el("button", "btn more-spans", "Show more");
  this.moreButton.type = "button";
  this.moreButton.addEventListener("click", () => this.showMore());
  this.more.append(this.moreText, this.moreButton);
  wf.append(tools, head, this.body, this.more);

  const panel = el("aside", "panel");
  const tabs = el("div", "tabs");
  tabs.setAttribute("role", "tablist");
  this.tabButtons = {};
  for (const [id, text] of [["span", "Span"], ["state", "State playback"]]) {
    const b = el("button", "tab", text);
    b.type = "button";
    b.dataset.tab = id;
    b.setAttribute("role", "tab");
    b.addEventListener("click", () => this.showTab(id));
    this.tabButtons[id] = b;
    tabs.append(b);
  }
  this.detail = el("div", "tab-body detail");
  this.player = el("div", "tab-body player");
  panel.append(tabs, this.detail, this.player);
  body.append(wf, panel);
  root.append(this.head, body);
  document.getElementById("app").replaceChildren(root);
  this.showTab(this.tab);
};

RunPage.prototype.showTab = function (id) {
  this.tab = id;
  for (const [k, b] of Object.entries(this.tabButtons)) {
    b.classList.toggle("on", k === id);
    b.setAttribute("aria-selected", String(k === id));
  }
  this.detail.classList.toggle("hidden", id !== "span");
  this.player.classList.toggle("hidden", id !== "state");
};

RunPage.prototype.renderHead = function () {
  const d = this.data;
  const run = d.run;
  const h = this.head;
  h.replaceChildren();
  const top = el("div", "rh-top");
  top.append(badge(run.status), el("h1", null, run.workflow || "(unnamed run)"));
  const rid = el("code", "rid", run.id);
  rid.title = "Run id";
  top.append(rid);
  if (run.status === "running") top.append(el("span", "live", "live · refreshing every 2 s"));
  if (run.incomplete) top.append(incompleteTag());
  h.append(top);

  const meta = el("div", "rh-meta");
  const item = (label, value, cls) => {
    const span = el("span", "mi" + (cls ? " " + cls : ""));
    span.append(el("b", null, label), " ", value);
    meta.append(span);
  };
  const started = el("span", null, fmtDate(run.started_ms));
  started.title = run.started_at + " (" + ago(run.started_ms) + ")";
  item("Started", started);
  item("Duration", run.status === "running" ? "running…" : fmtMs(run.duration_ms));
  item("Spans", (d.span_total || d.spans.length).toLocaleString("en-US"));
  if (d.tokens) item("Tokens", tokenText(d.tokens), "tokens");
  if (run.error_count) item("Errors", String(run.error_count), "bad");
  if (run.entrypoint) item("Entrypoint", el("code", null, run.entrypoint));
  if (run.service) item("Service", run.service);
  if (run.host) item("Host", run.host);
  h.append(meta);

  if (run.error) {
    const err = el("div", "rh-error");
    err.append(el("b", null, "Error "), el("span", "msg", run.error));
    h.append(err);
  }

  const rel = el("div", "rh-links");
  if (d.replay_of) {
    const o = d.replay_of;
    const span = el("span", "replay-of");
    span.append("Replay of ");
    span.append(o.missing ? el("code", null, shortId(o.id)) : link(runHref(o.id), shortId(o.id) + (o.workflow ? " · " + o.workflow : ""), "mono"));
    if (!o.missing) span.append(" ", badge(o.status));
    rel.append(span);
  }
  if (d.replays.length) {
    const span = el("span", "replays");
    span.append("Replays: ");
    d.replays.forEach((r, i) => {
      if (i) span.append(", ");
      span.append(link(runHref(r.id), shortId(r.id), "mono"), " ", badge(r.status));
    });
    rel.append(span);
  }
  if (rel.childElementCount) h.append(rel);
  const compare = compareLinks(d);
  if (compare) h.append(compare);

  if (run.incomplete) {
    h.append(el("div", "rh-noreplay muted", "Incomplete: the root span of this trace has not been received (yet); its spans hang under a placeholder."));
    return;
  }
  if (!d.replay_command) {
    // Replay re-runs a workflow from its recorded entrypoint; a lone step has none.
    h.append(el("div", "rh-noreplay muted", "Not replayable: this run is not a @spanflow.workflow call, so there is no entrypoint to re-run."));
    return;
  }
  const cmd = el("div", "rh-cmd");
  const label = el("label", null, "Replay");
  const input = el("input", "mono");
  input.readOnly = true;
  input.value = d.replay_command;
  input.id = "replay-cmd";
  input.size = Math.min(120, d.replay_command.length + 2);
  label.htmlFor = "replay-cmd";
  input.addEventListener("focus", () => input.select());
  const copy = el("button", "btn copy", "Copy");
  copy.type = "button";
  copy.addEventListener("click", () => {
    const done = () => {
      copy.textContent = "Copied";
      setTimeout(() => (copy.textContent = "Copy"), 1500);
    };
    const fallback = () => {
      input.select();
      if (document.execCommand("copy")) done();
    };
    if (navigator.clipboard) navigator.clipboard.writeText(input.value).then(done, fallback);
    else fallback();
  });
  cmd.append(label, input, copy);
  h.append(cmd);
};

RunPage.prototype.renderAxis = function () {
  const total = this.model.total;
  this.axis.replaceChildren();
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const t = el("span", "tick", fmtMs(total * f));
    t.style.left = f * 100 + "%";
    if (f === 1) t.classList.add("end");
    this.axis.append(t);
  }
};

// -- waterfall ------------------------------------------------------------------------------

RunPage.prototype.computeVisible = function () {
  const order = this.model.order;
  if (this.filter) {
    const keep = new Set();
    for (const s of order) {
      if (!s.name.toLowerCase().includes(this.filter)) continue;
      keep.add(s.id);
      for (const a of ancestors(s)) {
        if (keep.has(a.id)) break;
        keep.add(a.id);
      }
    }
    return order.filter((s) => keep.has(s.id));
  }
  const out = [];
  let skip = -1;
  for (const s of order) {
    if (skip >= 0 && s.depth > skip) continue;
    skip = -1;
    out.push(s);
    if (this.collapsed.has(s.id) && s.children.length) skip = s.depth;
  }
  return out;
};

RunPage.prototype.refreshRows = function (force) {
  this.visible = this.computeVisible();
  this.indexOf = new Map(this.visible.map((s, i) => [s.id, i]));
  this.spacer.style.height = this.visible.length * ROW_H + "px";
  this.renderWindow(force);
};

RunPage.prototype.renderWindow = function (force) {
  const top = this.body.scrollTop;
  const h = this.body.clientHeight || 800;
  const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
  const last = Math.min(this.visible.length, Math.ceil((top + h) / ROW_H) + OVERSCAN);
  if (!force && first === this.win.first && last === this.win.last) return;
  this.win = { first, last };
  const frag = document.createDocumentFragment();
  for (let i = first; i < last; i++) frag.append(this.rowEl(this.visible[i]));
  this.rowsLayer.style.transform = "translateY(" + first * ROW_H + "px)";
  this.rowsLayer.replaceChildren(frag);
};

RunPage.prototype.rowEl = function (s) {
  const N = this.model.N;
  const total = this.model.total;
  const cls = spanClass(s);
  const row = el("div", "wf-row " + cls + (s.isAttempt ? " is-attempt" : "") + (s.id === this.selected ? " sel" : ""));
  row.dataset.spanId = s.id;
  row.setAttribute("role", "treeitem");
  const name = el("div", "cell-name");
  name.style.paddingLeft = 6 + s.depth * 12 + "px";
  if (s.children.length && !this.filter) {
    const t = el("span", "twisty", this.collapsed.has(s.id) ? "▸" : "▾");
    t.dataset.toggle = "1";
    name.append(t);
  } else {
    name.append(el("span", "twisty"));
  }
  name.append(el("i", "dot " + cls), el("span", "nm", s.name));
  for (const [c, text] of spanTags(s, N, true)) name.append(el("span", "tag " + c, text));
  const cell = el("div", "cell-bar");
  const left = (s.vs / total) * 100;
  const width = Math.max(((s.ve - s.vs) / total) * 100, 0.2);
  const bar = el("div", "bar " + cls);
  bar.style.left = left + "%";
  bar.style.width = width + "%";
  const dur = el("span", "dur", fmtMs(s.end - s.start));
  if (width > 14) {
    dur.classList.add("inside");
    dur.style.right = 100 - left - width + "%";
  } else if (left + width > 78) {
    dur.classList.add("before");
    dur.style.right = 100 - left + "%";
  } else {
    dur.style.left = left + width + "%";
  }
  cell.append(bar, dur);
  row.title = s.name + " · " + fmtMs(s.end - s.start) + " · starts at +" + fmtMs(s.start);
  row.append(name, cell);
  return row;
};

RunPage.prototype.onRowClick = function (ev) {
  const row = ev.target.closest(".wf-row");
  if (!row) return;
  const id = row.dataset.spanId;
  if (ev.target.dataset && ev.target.dataset.toggle) {
    if (this.collapsed.has(id)) this.collapsed.delete(id);
    else this.collapsed.add(id);
    this.refreshRows(true);
    return;
  }
  this.selectSpan(id, { scroll: false, user: true });
  if (this.tab !== "span") this.showTab("span");
};

RunPage.prototype.onKey = function (ev) {
  const i = this.indexOf.get(this.selected);
  const s = this.selected ? this.model.byId.get(this.selected) : null;
  let target = null;
  if (ev.key === "ArrowDown") target = this.visible[i === undefined ? 0 : Math.min(i + 1, this.visible.length - 1)];
  else if (ev.key === "ArrowUp") target = this.visible[i === undefined ? 0 : Math.max(i - 1, 0)];
  else if ((ev.key === "ArrowLeft" || ev.key === "ArrowRight") && s && s.children.length) {
    if (ev.key === "ArrowLeft") this.collapsed.add(s.id);
    else this.collapsed.delete(s.id);
    this.refreshRows(true);
  } else return;
  ev.preventDefault();
  if (target) this.selectSpan(target.id, { scroll: true, user: true });
};

RunPage.prototype.selectSpan = function (id, opts) {
  const s = id ? this.model.byId.get(id) : null;
  const changed = !this.shown || this.shown.id !== id || this.shown.sig !== signature(s);
  this.selected = id;
  if (opts.user) this.userSelected = true;
  // A selected span inside a collapsed subtree is revealed.
  for (const a of ancestors(s)) this.collapsed.delete(a.id);
  this.refreshRows(true);
  if (opts.scroll && s) this.scrollTo(s);
  if (changed) {
    this.shown = { id, sig: signature(s) };
    renderDetail(this.detail, s, this.model, (span, text) => this.spanLink(span, text));
  }
};

function signature(s) {
  return s ? [s.end, s.status, Object.keys(s.attrs).length, s.events.length, s.children.length].join("|") : "";
}

RunPage.prototype.scrollTo = function (s) {
  const i = this.indexOf.get(s.id);
  if (i === undefined) return;
  const y = i * ROW_H;
  const h = this.body.clientHeight || 0;
  if (y < this.body.scrollTop || y + ROW_H > this.body.scrollTop + h) {
    this.body.scrollTop = Math.max(0, y - h / 3);
    this.renderWindow(false);
  }
};

RunPage.prototype.spanLink = function (s, text) {
  const a = el("a", "span-link", text || s.name);
  a.href = "#";
  a.addEventListener("click", (ev) => {
    ev.preventDefault();
    this.selectSpan(s.id, { scroll: true, user: true });
    this.showTab("span");
  });
  return a;
};


// -- state playback -------------------------------------------------------------------------

RunPage.prototype.renderPlayback = function () {
  const box = this.player;
  const { frames, initial } = this.pb;
  this.tabButtons.state.textContent = frames.length > 1 ? "State playback · " + (frames.length - 1) + " steps" : "State playback";
  box.replaceChildren();
  if (frames.length === 1 && !initial.ok) {
    box.append(el("p", "muted", "This run recorded no State. Steps that receive a spanflow.State record how they change it, and this tab replays those changes."));
    return;
  }
  const controls = el("div", "pb-controls");
  const mk = (text, label, fn) => {
    const b = el("button", "btn", text);
    b.type = "button";
    b.setAttribute("aria-label", label);
    b.title = label;
    b.addEventListener("click", fn);
    controls.append(b);
    return b;
  };
  const last = frames.length - 1;
  this.pbFirst = mk("«", "First", () => this.setFrame(0));
  this.pbPrev = mk("◀ Prev", "Previous step", () => this.setFrame(this.frame - 1));
  this.pbRange = el("input", "pb-range");
  this.pbRange.type = "range";
  this.pbRange.min = "0";
  this.pbRange.max = String(last);
  this.pbRange.setAttribute("aria-label", "Step");
  this.pbRange.addEventListener("input", () => this.setFrame(Number(this.pbRange.value)));
  controls.append(this.pbRange);
  this.pbNext = mk("Next ▶", "Next step", () => this.setFrame(this.frame + 1));
  this.pbLast = mk("»", "Last", () => this.setFrame(last));
  this.pbLabel = el("div", "pb-label");
  this.pbNote = el("div", "pb-note");
  this.pbOps = el("div", "pb-ops");
  this.pbState = el("pre", "json pb-state");
  const changes = el("div", "pb-changes");
  changes.append(el("h3", null, "Changes in this step"), this.pbOps);
  const state = el("div", "pb-after");
  this.pbStateTitle = el("h3", null, "State");
  state.append(this.pbStateTitle, this.pbState);
  if (initial.truncated || initial.missing) {
    box.append(el("p", "notice", initial.truncated
      ? "The initial state was too large to record; each step's changes are shown without the full state."
      : "No initial state was recorded on the workflow span; each step's changes are shown without the full state."));
  }
  box.append(controls, this.pbLabel, this.pbNote, changes, state);
  this.setFrame(this.frame);
};

RunPage.prototype.setFrame = function (i) {
  const frames = this.pb.frames;
  i = Math.max(0, Math.min(frames.length - 1, i));
  this.frame = i;
  const f = frames[i];
  const last = frames.length - 1;
  this.pbRange.value = String(i);
  this.pbFirst.disabled = this.pbPrev.disabled = i === 0;
  this.pbNext.disabled = this.pbLast.disabled = i === last;
  this.pbLabel.replaceChildren();
  if (f.span) {
    this.pbLabel.append(el("span", "pb-step", "Step " + i + " of " + last), " · ", this.spanLink(f.span), " ");
    this.pbLabel.append(el("span", "muted", "+" + fmtMs(f.span.start)));
    if (f.span.error) this.pbLabel.append(" ", el("span", "tag err", "failed"));
  } else {
    this.pbLabel.append(el("span", "pb-step", "Initial state"), " ", el("span", "muted", "before the first step (" + last + " steps)"));
  }
  this.pbNote.textContent = f.error || "";
  this.pbNote.classList.toggle("hidden", !f.error);
  this.pbOps.replaceChildren(f.span ? opsList(f.ops) : el("p", "muted", "—"));
  this.pbStateTitle.textContent = f.span ? "State after this step" : "Initial state";
  this.pbState.textContent = f.state === undefined ? "(not available)" : JSON.stringify(f.state, null, 2);
  if (f.span && this.selected !== f.span.id) {
    // Follow along in the waterfall without leaving the playback tab.
    this.selectSpan(f.span.id, { scroll: true, user: true });
  }
};
