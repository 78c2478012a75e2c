// spanflow viewer: DOM building, formatting and fetching helpers.
// Every element is built with createElement/textContent: captured data is never parsed as HTML.

const BIG_TEXT = 100000;

export function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function link(href, text, cls) {
  const a = el("a", cls, text);
  a.href = href;
  return a;
}

export function runHref(id) {
  return "/runs/" + encodeURIComponent(id);
}

export function pad(n, w) {
  return String(n).padStart(w || 2, "0");
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return "—";
  if (ms < 1) return ms.toFixed(2) + " ms";
  if (ms < 10) return ms.toFixed(1) + " ms";
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + pad(Math.floor(s - m * 60)) + "s";
  return Math.floor(m / 60) + "h " + pad(m % 60) + "m";
}

export function fmtDate(epochMs) {
  const d = new Date(epochMs);
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
    pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
}

export function ago(epochMs) {
  const s = Math.max(0, (Date.now() - epochMs) / 1000);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

export function shortId(id) {
  return String(id).slice(0, 8);
}

export function pretty(raw) {
  if (typeof raw !== "string") return JSON.stringify(raw, null, 2);
  try {
    return JSON.stringify(JSON.parse(raw), null, 2);
  } catch (e) {
    return raw;
  }
}

export function parseJSON(raw) {
  if (typeof raw !== "string") return { ok: true, value: raw };
  try {
    return { ok: true, value: JSON.parse(raw) };
  } catch (e) {
    return { ok: false, value: raw };
  }
}

export function compact(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

// A <pre> of text; very long text shows its start and a button for the rest.
export function textBlock(text, cls) {
  const pre = el("pre", cls || "json");
  if (text.length <= BIG_TEXT) {
    pre.textContent = text;
    return pre;
  }
  pre.textContent = text.slice(0, BIG_TEXT);
  const wrap = el("div");
  const more = el("button", "more", "Show all " + Math.round(text.length / 1024) + " KB");
  more.type = "button";
  more.addEventListener("click", () => {
    pre.textContent = text;
    more.remove();
  });
  wrap.append(pre, more);
  return wrap;
}

export async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    body = null;
  }
  if (!res.ok) {
    const err = new Error((body && body.error) || "HTTP " + res.status);
    err.status = res.status;
    throw err;
  }
  return body;
}

export function setCrumbs(parts) {
  const crumbs = document.getElementById("crumbs");
  crumbs.replaceChildren();
  parts.forEach((p, i) => {
    if (i) crumbs.append(el("span", "sep", "/"));
    crumbs.append(p.href ? link(p.href, p.text) : el("span", "here", p.text));
  });
}

export function setStore(db) {
  const storeLabel = document.getElementById("store");
  storeLabel.textContent = db || "";
  storeLabel.title = db || "";
}

export function showError(message) {
  document.getElementById("app").replaceChildren(el("div", "notice error", message));
}

export function badge(status) {
  return el("span", "badge " + status, status);
}

/** The mark of a received trace whose root span has not arrived (yet). */
export function incompleteTag() {
  const tag = el("span", "tag incomplete", "incomplete");
  tag.title = "The root span of this trace has not been received (yet)";
  return tag;
}
