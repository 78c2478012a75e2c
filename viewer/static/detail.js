// spanflow viewer: the panel describing one span (inputs, output, error, retries, state change...).
// Every element is built with createElement/textContent: captured data is never parsed as HTML.

import { compact, el, fmtMs, pretty, parseJSON, textBlock } from "./dom.js";
import { spanClass, spanTags, tokenText } from "./trace.js";

function section(title, cls) {
  const sec = el("section", "sec" + (cls ? " " + cls : ""));
  sec.append(el("h3", null, title));
  return sec;
}

function kvTable(rows) {
  const t = el("table", "kv");
  for (const [k, v] of rows) {
    const tr = el("tr");
    const td = el("td");
    if (v instanceof Node) td.append(v);
    else if (typeof v === "string" && (v.length > 200 || v.includes("\n"))) td.append(textBlock(v, "val"));
    else td.textContent = compact(v);
    tr.append(el("th", null, k), td);
    t.append(tr);
  }
  return t;
}

export function renderDetail(box, s, model, spanLink) {
  box.replaceChildren();
  if (!s) {
    box.append(el("p", "muted", "No spans recorded for this run yet."));
    return;
  }
  const N = model.N;
  const a = s.attrs;
  const title = el("div", "d-title");
  title.append(el("i", "dot " + spanClass(s)), el("h2", null, s.name));
  for (const [c, text] of spanTags(s, N)) title.append(el("span", "tag " + c, text));
  box.append(title);

  const facts = el("div", "facts");
  const fact = (label, value) => {
    const f = el("span", "fact");
    f.append(el("b", null, label), " ", value);
    facts.append(f);
  };
  fact("Status", s.error ? "error" : s.cancelled ? "cancelled" : "ok");
  fact("Duration", fmtMs(s.end - s.start));
  fact("Starts", "+" + fmtMs(s.start));
  fact("Type", s.type || "span");
  if (s.parentSpan) fact("Parent", spanLink(s.parentSpan));
  const sid = el("code", null, s.recorded_id || s.id);
  fact("Id", sid);
  // Damaged links in the store are shown as recorded, never followed.
  if (s.recorded_id) fact("Note", "another span has the same id");
  if (s.recorded_parent) fact("Recorded parent", el("code", null, s.recorded_parent + (s.parentSpan ? "" : " (missing or a cycle: drawn at the top)")));
  box.append(facts);

  // The error's one-line summary comes first, then what the step received; the traceback
  // follows the inputs so both are on screen when a failed run opens.
  const excs = s.events.filter((e) => e.name === N.exceptionEvent);
  if (s.error || excs.length) {
    const sec = section(s.error ? "Error" : "Handled failure", "error-sec");
    if (!s.error) sec.append(el("p", "muted", s.fallback ? "The fallback produced the result." : s.usedDefault ? "The default value was returned." : "The step recovered from this failure."));
    if (!excs.length && s.message) sec.append(el("div", "exc-head", s.message));
    for (const e of excs) sec.append(excHead(e, N));
    box.append(sec);
  }
  if (s.isAttempt && s.parentSpan) {
    const sec = section("Attempt");
    const p = el("p");
    p.append("Attempt " + (a[N.attemptNumber] || "?") + " of ", spanLink(s.parentSpan), ". The step's inputs and output are on its own span.");
    sec.append(p);
    if (a[N.attemptWait] !== undefined) sec.append(el("p", "muted", "Waited " + fmtMs(Number(a[N.attemptWait]) * 1000) + " before the next attempt."));
    box.append(sec);
  }

  if (s.ai) renderAi(box, s.ai);

  const lossy = String(a[N.lossy] || "").split(",").filter(Boolean);
  for (const [key, label] of [[N.input, "Inputs"], [N.output, "Output"]]) {
    if (a[key] === undefined) continue;
    const sec = section(label, key === N.input ? "inputs" : "output");
    if (lossy.includes(key)) sec.append(el("p", "muted", "Shortened or redacted when recorded."));
    sec.append(textBlock(pretty(a[key])));
    box.append(sec);
  }

  const stacks = excs.filter((e) => e.attrs[N.exceptionStacktrace]);
  if (stacks.length) {
    const sec = section(stacks.length > 1 ? "Tracebacks" : "Traceback", "trace-sec");
    for (const e of stacks) {
      if (stacks.length > 1) sec.append(excHead(e, N));
      sec.append(textBlock(String(e.attrs[N.exceptionStacktrace]), "stack"));
    }
    box.append(sec);
  }

  const attempts = s.children.filter((c) => c.isAttempt);
  if (attempts.length) {
    const sec = section("Retries · " + attempts.length + " attempts");
    const t = el("table", "grid");
    const hr = el("tr");
    for (const h of ["#", "Status", "Duration", "Waited after", "Error"]) hr.append(el("th", null, h));
    t.append(hr);
    for (const c of attempts) {
      const tr = el("tr");
      const n = el("td");
      n.append(spanLink(c, "#" + (c.attrs[N.attemptNumber] || "?")));
      const wait = c.attrs[N.attemptWait];
      tr.append(n, el("td", null, c.error ? "error" : "ok"), el("td", "num", fmtMs(c.end - c.start)),
        el("td", "num", wait === undefined ? "" : fmtMs(Number(wait) * 1000)), el("td", "err-text", c.error ? c.message || "" : ""));
      t.append(tr);
    }
    sec.append(t);
    box.append(sec);
  }

  if (a[N.stateDiff] !== undefined) {
    const sec = section("State change");
    sec.append(opsList(a[N.stateDiff]));
    box.append(sec);
  }

  if (a[N.routeBranch] !== undefined) {
    const rows = [["Branch", String(a[N.routeBranch])]];
    if (a[N.routeName]) rows.unshift(["Decision", String(a[N.routeName])]);
    if (a[N.routeReason] !== undefined) rows.push(["Reason", pretty(a[N.routeReason])]);
    const sec = section("Route decision");
    sec.append(kvTable(rows));
    box.append(sec);
  }

  const logs = s.events.filter((e) => e.name === N.logEvent);
  if (logs.length) {
    const sec = section("Logs");
    const list = el("div", "logs");
    for (const e of logs) {
      const line = el("div", "log " + String(e.attrs[N.logLevel] || "").toLowerCase());
      line.append(el("span", "t", "+" + fmtMs(e.t)), el("span", "lvl", String(e.attrs[N.logLevel] || "")),
        el("span", "lg-name", String(e.attrs[N.logLogger] || "")), el("span", "msg", String(e.attrs[N.logMessage] || "")));
      list.append(line);
    }
    sec.append(list);
    box.append(sec);
  }

  const others = s.events.filter((e) => e.name !== N.logEvent && e.name !== N.exceptionEvent);
  if (others.length) {
    const sec = section("Events");
    sec.append(kvTable(others.map((e) => ["+" + fmtMs(e.t) + " " + e.name, Object.keys(e.attrs).length ? JSON.stringify(e.attrs, null, 2) : ""])));
    box.append(sec);
  }

  const shown = new Set([N.input, N.output, N.inputMime, N.outputMime, N.stateDiff, N.stateInitial]);
  const keys = Object.keys(a).filter((k) => !shown.has(k)).sort();
  if (keys.length) {
    const sec = section("Attributes");
    sec.append(kvTable(keys.map((k) => [k, a[k]])));
    box.append(sec);
  }

  if (s.links.length) {
    const sec = section("Links");
    sec.append(kvTable(s.links.map((l) => [l.trace + " / " + l.span, Object.keys(l.attrs).length ? JSON.stringify(l.attrs) : ""])));
    box.append(sec);
  }
}

// A model call's model and tokens, then its conversation as chat bubbles by role.
function renderAi(box, ai) {
  const rows = [];
  if (ai.model) rows.push(["Model", ai.model]);
  if (ai.provider) rows.push(["Provider", ai.provider]);
  if (ai.tool) rows.push(["Tool", ai.tool]);
  const t = ai.tokens || {};
  if (typeof t.total === "number" || typeof t.prompt === "number" || typeof t.completion === "number") rows.push(["Tokens", tokenText(t)]);
  if (rows.length) {
    const sec = section(ai.kind === "llm" ? "Model call" : "AI span", "ai-sec");
    sec.append(kvTable(rows));
    box.append(sec);
  }
  const said = [...(ai.input_messages || []).map((m) => [m, "in"]), ...(ai.output_messages || []).map((m) => [m, "out"])];
  if (!said.length) return;
  const sec = section("Conversation", "conversation");
  const chat = el("div", "chat");
  for (const [m, side] of said) chat.append(bubble(m, side));
  sec.append(chat);
  box.append(sec);
}

const ROLES = new Set(["system", "user", "assistant", "tool"]);

function bubble(m, side) {
  const role = String(m.role || "?");
  const b = el("div", "bubble " + side + " role-" + (ROLES.has(role) ? role : "other"));
  b.append(el("div", "who", role + (side === "out" ? " · output" : "")));
  if (m.content) b.append(el("div", "said", m.content));
  for (const c of m.tool_calls || []) {
    const call = el("div", "tool-call");
    call.append(el("b", null, "calls " + String(c.name)), el("code", null, String(c.arguments || "")));
    b.append(call);
  }
  return b;
}

function excHead(e, N) {
  const head = el("div", "exc-head");
  head.append(el("b", null, String(e.attrs[N.exceptionType] || "Exception")), ": ", String(e.attrs[N.exceptionMessage] || ""));
  return head;
}

export function opsList(raw) {
  const parsed = typeof raw === "string" ? parseJSON(raw) : { ok: true, value: raw };
  if (!parsed.ok || !Array.isArray(parsed.value)) return textBlock(String(raw), "val");
  const list = el("div", "ops");
  if (!parsed.value.length) list.append(el("p", "muted", "No change."));
  for (const op of parsed.value) {
    const row = el("div", "op " + String(op.op));
    row.append(el("span", "op-name", String(op.op)), el("code", "op-path", String(op.path)));
    if (op.from !== undefined) row.append(el("span", "muted", " from "), el("code", "op-path", String(op.from)));
    if (op.value !== undefined) row.append(el("code", "op-value", JSON.stringify(op.value)));
    list.append(row);
  }
  return list;
}
