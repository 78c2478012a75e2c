// spanflow viewer: the run list (status and workflow filters, newest first, paged).
// Every element is built with createElement/textContent: captured data is never parsed as HTML.

import { ago, badge, el, fmtDate, fmtMs, getJSON, incompleteTag, link, runHref, setCrumbs, setStore, shortId, showError } from "./dom.js";

const LIST_POLL_MS = 4000;
const STATUSES = [["", "All"], ["failed", "Failed"], ["running", "Running"], ["ok", "OK"], ["crashed", "Crashed"]];

export function ListPage(go) {
  this.go = go;
  const q = new URLSearchParams(location.search);
  this.st = {
    status: q.get("status") || "",
    workflow: q.get("workflow") || "",
    offset: Math.max(0, parseInt(q.get("offset") || "0", 10) || 0),
    limit: Math.min(500, Math.max(1, parseInt(q.get("limit") || "50", 10) || 50)),
  };
  this.timer = null;
  this.stopped = false;
  this.lastBody = "";
  setCrumbs([{ text: "Runs" }]);
  document.title = "Runs · spanflow";
  this.build();
  this.load();
}

ListPage.prototype.stop = function () {
  this.stopped = true;
  clearTimeout(this.timer);
};

ListPage.prototype.href = function (change) {
  const st = Object.assign({}, this.st, change);
  const q = new URLSearchParams();
  if (st.status) q.set("status", st.status);
  if (st.workflow) q.set("workflow", st.workflow);
  if (st.offset) q.set("offset", String(st.offset));
  if (st.limit !== 50) q.set("limit", String(st.limit));
  const s = q.toString();
  return "/" + (s ? "?" + s : "");
};

ListPage.prototype.navLink = function (text, change, cls) {
  const a = link(this.href(change), text, cls);
  a.addEventListener("click", (ev) => {
    if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
    ev.preventDefault();
    this.go(a.getAttribute("href"));
  });
  return a;
};

ListPage.prototype.build = function () {
  const st = this.st;
  const root = el("section", "list");
  const bar = el("div", "toolbar");
  const seg = el("div", "seg");
  seg.setAttribute("role", "group");
  seg.setAttribute("aria-label", "Filter by status");
  for (const [value, label] of STATUSES) {
    const a = this.navLink(label, { status: value, offset: 0 }, "seg-btn" + (st.status === value ? " on" : ""));
    a.dataset.status = value || "all";
    seg.append(a);
  }
  const form = el("form", "wf-filter");
  const input = el("input");
  input.type = "search";
  input.name = "workflow";
  input.placeholder = "Workflow name";
  input.value = st.workflow;
  input.setAttribute("list", "workflow-names");
  input.setAttribute("aria-label", "Filter by workflow");
  this.names = el("datalist");
  this.names.id = "workflow-names";
  // The CSP forbids form submission; Enter or leaving the field applies the filter.
  form.addEventListener("submit", (ev) => ev.preventDefault());
  const apply = () => {
    if (input.value.trim() !== st.workflow) this.go(this.href({ workflow: input.value.trim(), offset: 0 }));
  };
  input.addEventListener("change", apply);
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      apply();
    }
  });
  form.append(input, this.names);
  this.pager = el("div", "pager");
  bar.append(seg, form, el("span", "grow"), this.pager);
  this.table = el("table", "runs");
  const head = el("thead");
  const hr = el("tr");
  for (const h of ["Status", "Workflow", "Run", "Started", "Duration", "Spans", "Error"]) hr.append(el("th", null, h));
  head.append(hr);
  this.tbody = el("tbody");
  this.table.append(head, this.tbody);
  this.empty = el("div", "notice hidden");
  root.append(bar, this.table, this.empty);
  document.getElementById("app").replaceChildren(root);
};

ListPage.prototype.load = async function () {
  const st = this.st;
  const q = new URLSearchParams({ limit: String(st.limit), offset: String(st.offset) });
  if (st.status) q.set("status", st.status);
  if (st.workflow) q.set("workflow", st.workflow);
  let data;
  try {
    data = await getJSON("/api/runs?" + q.toString());
  } catch (e) {
    if (!this.stopped) showError("Cannot list runs: " + e.message);
    return;
  }
  if (this.stopped) return;
  const body = JSON.stringify(data);
  if (body !== this.lastBody) {
    this.lastBody = body;
    this.render(data);
  }
  const live = data.runs.some((r) => r.status === "running") || st.offset === 0;
  if (live) this.timer = setTimeout(() => this.load(), LIST_POLL_MS);
};

ListPage.prototype.render = function (data) {
  const st = this.st;
  setStore(data.db);
  const rows = document.createDocumentFragment();
  const names = new Set();
  for (const r of data.runs) {
    if (r.workflow) names.add(r.workflow);
    rows.append(this.row(r));
  }
  this.tbody.replaceChildren(rows);
  this.names.replaceChildren(...Array.from(names).sort().map((n) => {
    const o = el("option");
    o.value = n;
    return o;
  }));
  const from = data.total ? data.offset + 1 : 0;
  const to = data.offset + data.runs.length;
  const count = el("span", "count", from + "–" + to + " of " + data.total.toLocaleString("en-US"));
  const prev = data.offset > 0 ? this.navLink("‹ Newer", { offset: Math.max(0, data.offset - data.limit) }, "btn")
    : el("span", "btn disabled", "‹ Newer");
  const next = to < data.total ? this.navLink("Older ›", { offset: data.offset + data.limit }, "btn")
    : el("span", "btn disabled", "Older ›");
  prev.classList.add("prev");
  next.classList.add("next");
  this.pager.replaceChildren(count, prev, next);
  this.empty.classList.toggle("hidden", data.runs.length > 0);
  this.table.classList.toggle("hidden", data.runs.length === 0);
  if (!data.runs.length) {
    this.empty.textContent = st.status || st.workflow
      ? "No runs match these filters."
      : "No runs yet. Call a function decorated with @spanflow.workflow and it appears here.";
  }
};

ListPage.prototype.row = function (r) {
  const tr = el("tr", "run-row " + r.status);
  tr.dataset.runId = r.id;
  const status = el("td", "c-status");
  status.append(badge(r.status));
  const wf = el("td", "c-workflow");
  wf.append(link(runHref(r.id), r.workflow || "(unnamed)", "wf-name"));
  if (r.replay_of) wf.append(el("span", "tag replay", "replay"));
  if (r.incomplete) wf.append(incompleteTag());
  const only = this.navLink("⏷", { workflow: r.workflow || "", offset: 0 }, "only");
  only.title = "Only runs of " + (r.workflow || "this workflow");
  if (r.workflow && r.workflow !== this.st.workflow) wf.append(only);
  const id = el("td", "c-id mono", shortId(r.id));
  id.title = r.id;
  const started = el("td", "c-started", fmtDate(r.started_ms));
  started.title = r.started_at + " (" + ago(r.started_ms) + ")";
  const dur = el("td", "c-dur num", r.status === "running" ? "running…" : fmtMs(r.duration_ms));
  const spans = el("td", "c-spans num", String(r.span_count));
  if (r.error_count) spans.append(el("span", "errs", " · " + r.error_count + " err"));
  const err = el("td", "c-error", r.error || "");
  err.title = r.error || "";
  tr.append(status, wf, id, started, dur, spans, err);
  tr.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) return;
    location.href = runHref(r.id);
  });
  return tr;
};
