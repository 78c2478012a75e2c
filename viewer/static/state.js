// spanflow viewer: State playback: a small RFC 6902 JSON Patch and the State after each step.
// Every element is built with createElement/textContent: captured data is never parsed as HTML.

import { parseJSON } from "./dom.js";

function pointer(path) {
  if (path === "") return [];
  if (path[0] !== "/") throw new Error("bad JSON pointer " + JSON.stringify(path));
  return path.slice(1).split("/").map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function getAt(doc, parts) {
  let cur = doc;
  for (const p of parts) {
    if (cur === null || typeof cur !== "object" || !Object.prototype.hasOwnProperty.call(cur, p)) {
      throw new Error("no value at /" + parts.join("/"));
    }
    cur = cur[p];
  }
  return cur;
}

function arrayIndex(arr, key, forAdd) {
  if (forAdd && key === "-") return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(key)) throw new Error("bad array index " + key);
  const i = Number(key);
  if (i > arr.length || (!forAdd && i === arr.length)) throw new Error("index " + key + " out of range");
  return i;
}

function deepEqual(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// Applies ops to a copy of doc and returns it; throws on an op that does not apply.
export function applyPatch(doc, ops) {
  let out = structuredClone(doc);
  const put = (parts, value, mode) => {
    if (!parts.length) {
      out = value;
      return;
    }
    const parent = getAt(out, parts.slice(0, -1));
    const key = parts[parts.length - 1];
    if (Array.isArray(parent)) {
      const i = arrayIndex(parent, key, mode === "add");
      if (mode === "add") parent.splice(i, 0, value);
      else parent[i] = value;
    } else if (parent !== null && typeof parent === "object") {
      if (mode === "replace" && !Object.prototype.hasOwnProperty.call(parent, key)) throw new Error("no value at " + key);
      parent[key] = value;
    } else {
      throw new Error("cannot write into a " + typeof parent);
    }
  };
  const take = (parts) => {
    if (!parts.length) throw new Error("cannot remove the whole document");
    const parent = getAt(out, parts.slice(0, -1));
    const key = parts[parts.length - 1];
    if (Array.isArray(parent)) return parent.splice(arrayIndex(parent, key, false), 1)[0];
    if (parent === null || typeof parent !== "object" || !Object.prototype.hasOwnProperty.call(parent, key)) {
      throw new Error("no value at " + key);
    }
    const v = parent[key];
    delete parent[key];
    return v;
  };
  for (const op of ops) {
    const parts = pointer(op.path);
    switch (op.op) {
      case "add": put(parts, structuredClone(op.value), "add"); break;
      case "replace": put(parts, structuredClone(op.value), "replace"); break;
      case "remove": take(parts); break;
      case "move": { const v = take(pointer(op.from)); put(parts, v, "add"); break; }
      case "copy": put(parts, structuredClone(getAt(out, pointer(op.from))), "add"); break;
      case "test":
        if (!deepEqual(getAt(out, parts), op.value)) throw new Error("test failed at " + op.path);
        break;
      default: throw new Error("unknown op " + op.op);
    }
  }
  return out;
}

// The State after each top-level step: apply the diffs of spans with no diff-carrying ancestor
// (a parent's diff already contains its children's changes), in start order.
export function playback(model) {
  const N = model.N;
  const root = model.root;
  const has = (s) => Object.prototype.hasOwnProperty.call(s.attrs, N.stateDiff);
  const steps = [];
  for (const s of model.spans) {
    if (s === root || !has(s)) continue;
    let a = s.parentSpan;
    let covered = false;
    const seen = new Set(); // ends on any graph, even a damaged one
    while (a && a !== root && !seen.has(a)) {
      if (has(a)) {
        covered = true;
        break;
      }
      seen.add(a);
      a = a.parentSpan;
    }
    if (!covered) steps.push(s);
  }
  if (!steps.length && root && has(root)) steps.push(root);
  let initial = root ? parseJSON(root.attrs[N.stateInitial]) : { ok: false };
  if (!root || root.attrs[N.stateInitial] === undefined) initial = { ok: false, missing: true };
  if (initial.ok && initial.value && typeof initial.value === "object" && initial.value.__truncated__) {
    initial = { ok: false, truncated: true };
  }
  const frames = [{ state: initial.ok ? initial.value : undefined, ops: [], error: null, span: null }];
  let state = frames[0].state;
  let lost = null; // once a diff cannot be applied, later states cannot be known either
  for (const s of steps) {
    const parsed = parseJSON(s.attrs[N.stateDiff]);
    const ops = parsed.ok && Array.isArray(parsed.value) ? parsed.value : [];
    let error = parsed.ok ? null : "The recorded change of this step is not JSON.";
    if (ops.length === 1 && ops[0].op === "test" && ops[0].value && ops[0].value.__truncated__) {
      error = "This step's change was too large to record.";
    }
    if (!error && lost) error = lost;
    if (!error && state !== undefined) {
      try {
        state = applyPatch(state, ops);
      } catch (e) {
        error = "This step's change does not apply to the state before it (" + e.message + ").";
      }
    }
    if (error && state !== undefined) {
      state = undefined;
      lost = "The state cannot be rebuilt after an earlier step: " + error;
    }
    frames.push({ state, ops, error, span: s });
  }
  return { frames, initial };
}
