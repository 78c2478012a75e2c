// spanflow viewer: the span tree of one run, and how each span is classed.
// Every element is built with createElement/textContent: captured data is never parsed as HTML.

export function buildModel(data) {
  const N = data.names;
  const spans = data.spans;
  const byId = new Map();
  for (const s of spans) {
    const a = s.attrs;
    s.children = [];
    s.parentSpan = null;
    s.depth = 0;
    s.type = a[N.stepType] || "";
    s.isAttempt = s.type === N.typeAttempt;
    s.isWorkflow = s.type === N.typeWorkflow;
    s.error = s.status === "ERROR";
    s.cancelled = a[N.cancelled] === true;
    s.cached = a[N.replayCached] === true;
    s.fallback = a[N.fallbackUsed] === true;
    s.usedDefault = a[N.defaultUsed] === true;
    s.handled = !s.error && s.events.some((e) => e.name === N.exceptionEvent);
    // What the server read of it as an AI span (OpenInference, GenAI or spanflow's own):
    // kind, model, provider, tool, input_messages, output_messages, tokens.
    s.ai = s.ai || null;
    // A repeated id (a damaged store) keeps its first span; the server renames repeats.
    if (!byId.has(s.id)) byId.set(s.id, s);
  }
  // Candidate children per span as recorded; a span that is its own parent is a root.
  const kids = new Map();
  const roots = [];
  for (const s of spans) {
    const p = s.parent ? byId.get(s.parent) : null;
    if (p && p !== s) {
      if (!kids.has(p)) kids.set(p, []);
      kids.get(p).push(s);
    } else {
      roots.push(s);
    }
  }
  // Depth-first placement; spans come in the server's order, so siblings do too. Each span is
  // placed once, under the span it was reached from, so a parent cycle (a damaged or hostile
  // store) cannot loop: its first span becomes a root. children/parentSpan describe the tree
  // as placed, and every later walk follows them.
  const order = [];
  const placed = new Set();
  const walk = (start) => {
    const stack = [[start, null]];
    while (stack.length) {
      const [s, p] = stack.pop();
      if (placed.has(s)) continue;
      placed.add(s);
      s.parentSpan = p;
      if (p) p.children.push(s);
      s.depth = p ? p.depth + 1 : 0;
      // A worker's clock may run behind: never draw a child before its parent starts.
      s.vs = p ? Math.max(s.start, p.vs) : s.start;
      s.ve = Math.max(s.end, s.vs);
      order.push(s);
      const ks = kids.get(s) || [];
      for (let i = ks.length - 1; i >= 0; i--) if (!placed.has(ks[i])) stack.push([ks[i], s]);
    }
  };
  for (const r of roots) walk(r);
  for (const s of spans) {
    if (!placed.has(s)) {
      roots.push(s);
      walk(s);
    }
  }
  const treeRoots = order.filter((s) => !s.parentSpan);
  // While a run is still going its root span is not stored yet: then there is no root. A span
  // whose recorded parent is missing or damaged is drawn at the top but is not the run's root.
  const top = (s) => !s.parent && !s.recorded_parent;
  const root = spans.find((s) => top(s) && s.isWorkflow) || spans.find(top) || null;
  let total = data.span_end || 0;
  for (const s of order) total = Math.max(total, s.ve);
  return { N, spans, byId, roots: treeRoots, order, root, total: Math.max(total, 0.001) };
}

// The span to show first: follow the failure down from the root to the step that raised.
export function pickFailed(model) {
  let cur = model.roots.find((s) => s.error);
  if (!cur) return model.order.find((s) => s.error && !s.isAttempt) || null;
  const seen = new Set([cur]);
  for (;;) {
    let next = null;
    for (const c of cur.children) {
      if (!c.error) continue;
      if (!c.isAttempt) {
        next = c;
        continue;
      }
      for (const g of c.children) if (g.error && !g.isAttempt) next = g;
    }
    if (!next || seen.has(next)) return cur;
    seen.add(next);
    cur = next;
  }
}

// A span and its ancestors, nearest first; ends on any graph.
export function ancestors(s) {
  const out = [];
  const seen = new Set();
  for (let a = s && s.parentSpan; a && !seen.has(a); a = a.parentSpan) {
    seen.add(a);
    out.push(a);
  }
  return out;
}

export function spanClass(s) {
  if (s.error) return "err";
  if (s.cancelled) return "cancelled";
  if (s.cached) return "cached";
  if (s.fallback || s.usedDefault || s.handled) return "handled";
  return "ok";
}

// Little labels next to a span's name; `short` ones fit a waterfall row.
export function spanTags(s, N, short) {
  const tags = [];
  const attempts = s.attrs[N.attempts];
  if (typeof attempts === "number" && attempts > 1) tags.push(["retry", attempts + (short ? " tries" : " attempts")]);
  if (s.isAttempt && !short) tags.push(["attempt", "attempt"]);
  if (s.cached) tags.push(["cached", "cached"]);
  if (s.fallback) tags.push(["handled", "fallback"]);
  if (s.usedDefault) tags.push(["handled", "default"]);
  if (s.cancelled) tags.push(["cancelled", "cancelled"]);
  const kind = aiKind(s);
  if (kind) tags.push(["kind " + kind, kind]);
  else if (s.attrs[N.spanKind] && s.attrs[N.spanKind] !== "CHAIN" && !s.ai) tags.push(["kind", String(s.attrs[N.spanKind])]);
  return tags;
}

/**
 * What the server read of a span as an AI call (viewer/ai_spans.py), `span.ai` in the JSON.
 * @typedef {{role: string, content: string, tool_calls?: {name: string, arguments: string, id?: string}[]}} AiMessage
 * @typedef {{prompt: ?number, completion: ?number, total: ?number}} AiTokens
 * @typedef {{kind: ?string, model: ?string, provider: ?string, tool: ?string,
 *   input_messages: AiMessage[], output_messages: AiMessage[], tokens: AiTokens}} AiSpan
 */

// The kind badge of a span: llm, tool, retriever, chain...; spanflow's steps are chains unless
// their kind= says otherwise, so on them "chain" says nothing and is left out.
const KINDS = new Set(["llm", "chain", "tool", "retriever", "embedding", "agent", "reranker", "guardrail", "evaluator", "prompt"]);
export function aiKind(s) {
  const kind = s.ai && s.ai.kind;
  if (!KINDS.has(kind)) return null;
  if (kind === "chain" && s.type) return null;
  return kind;
}

// "19 (12 prompt + 7 completion)"
/** @param {AiTokens | null} t */
export function tokenText(t) {
  if (!t) return "";
  const parts = [];
  if (typeof t.prompt === "number") parts.push(t.prompt.toLocaleString("en-US") + " prompt");
  if (typeof t.completion === "number") parts.push(t.completion.toLocaleString("en-US") + " completion");
  const total = typeof t.total === "number" ? t.total.toLocaleString("en-US") : "?";
  return total + (parts.length ? " (" + parts.join(" + ") + ")" : "");
}
