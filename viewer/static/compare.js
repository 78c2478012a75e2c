// spanflow viewer: two runs compared (a failed run and its replay, or any two runs): the merged
// step tree from /api/compare, each step marked same / changed / added / removed.
// Every element is built with createElement/textContent: captured data is never parsed as HTML.

import { opsList } from "./detail.js";
import { ago, badge, el, fmtDate, fmtMs, getJSON, link, pretty, runHref, setCrumbs, setStore, shortId, showError, textBlock } from "./dom.js";

const CHANGES = ["same", "changed", "added", "removed"];

export function compareHref(a, b) {
  return "/compare/" + encodeURIComponent(a) + (b ? "/" + encodeURIComponent(b) : "");
}

// The run page's links to the compare page: with its latest replay (never a check run), with
// each of its replays and checks, or with the run it replayed.
export function compareLinks(data) {
  const box = el("div", "rh-compare");
  const run = data.run;
  if (data.replays && data.replays.length) {
    if (data.latest_replay) {
      box.append(link(compareHref(run.id, data.latest_replay), "Compare with replay", "btn compare-replay"));
    }
    if (data.replays.length > 1 || !data.latest_replay) {
      const list = el("span", "compare-list muted");
      list.append(data.latest_replay ? "or with: " : "Compare with: ");
      data.replays.forEach((r, i) => {
        if (i) list.append(", ");
        list.append(link(compareHref(run.id, r.id), shortId(r.id), "mono"));
      });
      box.append(list);
    }
  }
  if (data.replay_of && !data.replay_of.missing) {
    box.append(link(compareHref(data.replay_of.id, run.id), "Compare with original", "btn compare-original"));
  }
  return box.childElementCount ? box : null;
}

export function ComparePage(a, b) {
  this.a = a;
  this.b = b;
  this.stopped = false;
  this.selected = null;
  this.rows = [];
  setCrumbs([{ text: "Runs", href: "/" }, { text: "compare " + shortId(a) + (b ? " · " + shortId(b) : "") }]);
  document.title = "Compare · spanflow";
  this.load();
}

ComparePage.prototype.stop = function () {
  this.stopped = true;
};

ComparePage.prototype.query = function () {
  const q = new URLSearchParams({ a: this.a });
  if (this.b) q.set("b", this.b);
  return q;
};

ComparePage.prototype.load = async function () {
  let data;
  try {
    data = await getJSON("/api/compare?" + this.query().toString());
  } catch (e) {
    if (!this.stopped) showError("Cannot compare these runs: " + e.message);
    return;
  }
  if (this.stopped) return;
  this.data = data;
  this.render();
  window.__spanflow = { compare: true, steps: data.steps.length, ready: true };
};

ComparePage.prototype.render = function () {
  const d = this.data;
  setStore(d.db);
  const ra = d.runs.a;
  const rb = d.runs.b;
  setCrumbs([
    { text: "Runs", href: "/" },
    { text: (ra.workflow || "run") + " " + shortId(ra.id), href: runHref(ra.id) },
    { text: "compare with " + shortId(rb.id) },
  ]);
  document.title = "Compare " + shortId(ra.id) + " · " + shortId(rb.id) + " · spanflow";
  const root = el("section", "cmp");
  const head = el("div", "cmp-head");
  const sides = el("div", "cmp-sides");
  sides.append(runCard("A", ra, rb.replay_of === ra.id ? "original" : null), runCard("B", rb, rb.replay_of === ra.id ? "replay" : null));
  head.append(sides);

  const counts = el("div", "cmp-counts");
  for (const c of CHANGES) {
    const item = el("span", "cmp-count " + c);
    item.append(el("b", null, String(d.counts[c] || 0)), " " + c);
    counts.append(item);
  }
  head.append(counts);
  if (d.truncated) {
    head.append(el("div", "notice cmp-cut", "Showing " + d.steps.length.toLocaleString("en-US") + " of " +
      d.steps_total.toLocaleString("en-US") + " steps (the differences and their parents first); the counts cover every step."));
  }
  for (const note of d.notes || []) head.append(el("div", "notice cmp-note", "Note: " + note));

  const body = el("div", "cmp-body");
  const table = el("table", "cmp-tree");
  table.setAttribute("aria-label", "Steps of both runs");
  const thead = el("thead");
  const hr = el("tr");
  for (const [text, cls] of [["", "c-mark"], ["Step", "c-name"], ["Status A", ""], ["Status B", ""], ["Duration A", "num"], ["Duration B", "num"], ["Δ", "num"]]) {
    hr.append(el("th", cls, text));
  }
  thead.append(hr);
  const tbody = el("tbody");
  this.rows = [];
  for (const step of d.steps) {
    const tr = this.stepRow(step);
    this.rows.push(tr);
    tbody.append(tr);
  }
  table.append(thead, tbody);
  const tree = el("div", "cmp-tree-wrap");
  tree.append(table);
  this.detail = el("aside", "cmp-detail panel");
  body.append(tree, this.detail);
  root.append(head, body);
  document.getElementById("app").replaceChildren(root);

  const first = d.steps.findIndex((s) => s.change !== "same");
  this.select(first >= 0 ? first : 0);
};

function runCard(letter, run, role) {
  const card = el("div", "cmp-run");
  const top = el("div", "cmp-run-top");
  top.append(el("span", "cmp-letter", letter), badge(run.status), el("b", "cmp-wf", run.workflow || "(unnamed run)"));
  if (role) top.append(el("span", "tag replay", role));
  card.append(top);
  const meta = el("div", "cmp-run-meta");
  const id = link(runHref(run.id), run.id, "mono cmp-run-link");
  id.title = "Open run " + run.id;
  const started = el("span", null, fmtDate(run.started_ms));
  started.title = run.started_at + " (" + ago(run.started_ms) + ")";
  meta.append(id, el("span", "muted", " · started "), started, el("span", "muted", " · "), fmtMs(run.duration_ms));
  card.append(meta);
  if (run.error) card.append(el("div", "cmp-run-error", run.error));
  return card;
}

function statusCell(status, reused) {
  const td = el("td", "c-status");
  if (!status) {
    td.append(el("span", "muted", "—"));
    // Under a step B reused: B never made this call, it served the caller's recorded output.
    if (reused) td.append(el("span", "tag cached", "not called"));
    return td;
  }
  td.append(el("span", "st " + (status === "error" ? "err" : "ok"), status));
  if (reused) td.append(el("span", "tag cached", "reused"));
  return td;
}

function deltaText(dur) {
  if (dur.delta === undefined || dur.delta === null) return "";
  const sign = dur.delta > 0 ? "+" : dur.delta < 0 ? "−" : "±";
  return sign + fmtMs(Math.abs(dur.delta));
}

ComparePage.prototype.stepRow = function (step) {
  const tr = el("tr", "cmp-row " + step.change);
  tr.dataset.path = step.path;
  tr.dataset.change = step.change;
  tr.tabIndex = 0;
  tr.append(el("td", "c-mark", null));
  tr.firstChild.append(el("span", "cmark " + step.change, step.change));
  const name = el("td", "c-name");
  name.style.paddingLeft = 6 + Math.min(step.depth || 0, 40) * 14 + "px";
  name.append(el("span", "nm", step.label || step.name || step.path));
  name.title = step.path;
  tr.append(name);
  tr.append(statusCell(step.status.a, false), statusCell(step.status.b, step.reused));
  tr.append(el("td", "num", step.a ? fmtMs(step.a.duration_ms) : "—"));
  tr.append(el("td", "num", step.b ? fmtMs(step.b.duration_ms) : "—"));
  tr.append(el("td", "num c-delta", deltaText(step.duration_ms)));
  const index = this.rows.length;
  tr.addEventListener("click", () => this.select(index));
  tr.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      this.select(index);
    } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      const next = this.rows[index + (ev.key === "ArrowDown" ? 1 : -1)];
      if (next) next.focus();
    }
  });
  return tr;
};

ComparePage.prototype.select = async function (index) {
  const step = this.data.steps[index];
  if (!step) return;
  this.rows.forEach((r, i) => r.classList.toggle("sel", i === index));
  this.selected = index;
  const box = this.detail;
  box.replaceChildren();
  const title = el("div", "d-title");
  title.append(el("span", "cmark " + step.change, step.change), el("h2", null, step.name || step.path));
  box.append(title, el("code", "cmp-path", step.path));
  if (step.error.a || step.error.b) {
    const sec = section(box, "Errors");
    for (const side of ["a", "b"]) {
      if (step.error[side]) sec.append(sideLabel(side), el("div", "exc-head", step.error[side]));
    }
  }
  const patches = [["Input patch (A → B)", step.input_patch, "in-patch"], ["Output patch (A → B)", step.output_patch, "out-patch"]];
  for (const [heading, patch, cls] of patches) {
    // "" is JSON Pointer for the whole value: say so rather than show an empty path.
    if (patch) section(box, heading, cls).append(opsList(patch.map((op) => (op.path === "" ? Object.assign({}, op, { path: "(whole value)" }) : op))));
  }
  if (step.change === "same") box.append(el("p", "muted", step.reused ? "Same in both runs: B reused the recorded output." : "Same in both runs."));
  const values = section(box, "Values", "cmp-values");
  values.append(el("p", "muted", "Loading…"));
  const q = this.query();
  q.set("step", step.path);
  if (step.change === "added") q.set("change", "added");
  let got;
  try {
    got = await getJSON("/api/compare?" + q.toString());
  } catch (e) {
    if (this.selected === index) values.replaceChildren(el("p", "notice error", "Cannot load the values: " + e.message));
    return;
  }
  if (this.stopped || this.selected !== index) return;
  values.replaceChildren();
  for (const side of ["a", "b"]) {
    const v = got.step.values[side];
    const col = el("div", "cmp-side side-" + side);
    col.append(sideLabel(side));
    if (!v) {
      col.append(el("p", "muted", side === "a" ? "Not in run A." : "Not in run B."));
    } else {
      for (const [what, raw] of [["input", v.input], ["output", v.output]]) {
        col.append(el("h4", null, what));
        col.append(raw === null || raw === undefined ? el("p", "muted", "not recorded") : textBlock(pretty(raw), "json val " + what));
      }
    }
    values.append(col);
  }
};

function section(parent, heading, cls) {
  const sec = el("div", "sec" + (cls ? " " + cls : ""));
  sec.append(el("h3", null, heading));
  parent.append(sec);
  return sec;
}

function sideLabel(side) {
  return el("div", "cmp-side-label", side === "a" ? "Run A" : "Run B");
}
