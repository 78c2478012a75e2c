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
    byId.set(s.id, s);
  }
  const roots = [];
  for (const s of spans) {
    const p = s.parent ? byId.get(s.parent) : null;
    if (p && p !== s) {
      p.children.push(s);
      s.parentSpan = p;
    } else {
      roots.push(s);
    }
  }
  // Depth-first order; spans come sorted by start, so siblings are too. A parent cycle (only
  // possible in a damaged import) cannot loop: each span is placed once.
  const order = [];
  const placed = new Set();
  const walk = (start) => {
    const stack = [start];
    while (stack.length) {
      const s = stack.pop();
      if (placed.has(s.id)) continue;
      placed.add(s.id);
      const p = s.parentSpan && placed.has(s.parentSpan.id) ? s.parentSpan : null;
      s.depth = p ? p.depth + 1 : 0;
      // A worker's clock may run behind: never draw a child before its parent starts.
      s.vs = p ? Math.max(s.start, p.vs) : s.start;
      s.ve = Math.max(s.end, s.vs);
      order.push(s);
      for (let i = s.children.length - 1; i >= 0; i--) stack.push(s.children[i]);
    }
  };
  for (const r of roots) walk(r);
  for (const s of spans) {
    if (!placed.has(s.id)) {
      s.parentSpan = null;
      roots.push(s);
      walk(s);
    }
  }
  // While a run is still going its root span is not stored yet: then there is no root.
  const root = spans.find((s) => !s.parent && s.isWorkflow) || spans.find((s) => !s.parent) || null;
  let total = data.span_end || 0;
  for (const s of order) total = Math.max(total, s.ve);
  return { N, spans, byId, roots, order, root, total: Math.max(total, 0.001) };
}

// The span to show first: follow the failure down from the root to the step that raised.
export function pickFailed(model) {
  let cur = model.roots.find((s) => s.error);
  if (!cur) return model.order.find((s) => s.error && !s.isAttempt) || null;
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
    if (!next) return cur;
    cur = next;
  }
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
  const kind = s.attrs[N.spanKind];
  if (kind && kind !== "CHAIN") tags.push(["kind", kind]);
  return tags;
}
