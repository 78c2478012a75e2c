"""Two runs side by side: their step trees aligned the way replay matches calls.

Run B's step calls are matched to run A's recorded calls by the replay plan itself
(``ReplayPlan.counterpart``: same parent, same name, same occurrence; concurrent siblings by equal
inputs), so ``diff`` pairs exactly the calls replay would. Each step is then ``same``,
``changed`` (status, inputs or output differ; JSON Patches say how), ``added`` (only in B) or
``removed`` (only in A). It reads spans only: nothing is imported or executed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .. import attributes as attr
from ..errors import ReplayError
from ..values.serialize import Encoded
from ..values.state_diff import make_patch
from .plan import build_plan

__all__ = ["Change", "RunDiff", "Side", "StepDiff", "diff_spans"]

Change = Literal["same", "changed", "added", "removed"]
MARKS: dict[str, str] = {"same": "=", "changed": "~", "added": "+", "removed": "-"}
_STEP_TYPES = (attr.STEP_TYPE_STEP, attr.STEP_TYPE_WORKFLOW)
_RIGHT = 40  # columns of a step line after its name: status, durations, token delta


@dataclass(frozen=True)
class Side:
    """One run's call of a step."""

    span_id: str
    status: str  # "ok" or "error"
    error: str | None
    duration_ms: float
    tokens: int | None
    input_json: str | None
    output_json: str | None
    reused: bool  # a replay served its recorded output

    def to_json(self) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "status": self.status,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 3),
            "tokens": self.tokens,
            "reused": self.reused,
        }


@dataclass(frozen=True)
class StepDiff:
    """One step of the merged tree."""

    path: str
    name: str
    depth: int
    change: Change
    a: Side | None
    b: Side | None
    input_patch: list[dict[str, Any]] | None = None
    output_patch: list[dict[str, Any]] | None = None
    # Inside a call B reused: B served its caller's recorded output, so it never made this call.
    inside_reused: bool = False

    @property
    def label(self) -> str:
        """The last segment of the path (``classify[0]``), or the workflow's name."""
        return self.path.rsplit("/", 1)[-1] if self.depth else self.path

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "name": self.name, "change": self.change}
        out["depth"], out["label"] = self.depth, self.label
        out["status"] = {"a": _get(self.a, "status"), "b": _get(self.b, "status")}
        out["error"] = {"a": _get(self.a, "error"), "b": _get(self.b, "error")}
        out["duration_ms"] = _delta(_get(self.a, "duration_ms"), _get(self.b, "duration_ms"))
        out["tokens"] = _delta(_get(self.a, "tokens"), _get(self.b, "tokens"))
        out["reused"] = bool(self.b and self.b.reused) or self.inside_reused
        if self.input_patch is not None:
            out["input_patch"] = self.input_patch
        if self.output_patch is not None:
            out["output_patch"] = self.output_patch
        out["a"] = self.a.to_json() if self.a else None
        out["b"] = self.b.to_json() if self.b else None
        return out


@dataclass(frozen=True)
class RunDiff:
    """Run A against run B, step by step (in A's order, B's new steps under their parent)."""

    a: str
    b: str
    steps: list[StepDiff]
    notes: tuple[str, ...] = ()

    def differences(self) -> list[StepDiff]:
        return [s for s in self.steps if s.change != "same"]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(MARKS, 0)
        for s in self.steps:
            out[s.change] += 1
        return out

    def to_json(self, *, max_steps: int | None = None) -> dict[str, Any]:
        """The diff as JSON (``spanflow diff --json``, the viewer's compare page).

        ``max_steps`` caps the steps listed: the differences and their ancestors are kept
        first, then the rest in tree order; ``counts`` still covers every step, and
        ``steps_total`` / ``truncated`` say how many were left out."""
        kept = self.steps if max_steps is None else self._within(max_steps)
        out: dict[str, Any] = {
            "a": self.a,
            "b": self.b,
            "counts": self.counts(),
            "steps": [s.to_json() for s in kept],
            "notes": list(self.notes),
        }
        if max_steps is not None:
            out["steps_total"] = len(self.steps)
            out["truncated"] = len(kept) < len(self.steps)
        return out

    def _within(self, limit: int) -> list[StepDiff]:
        if len(self.steps) <= limit:
            return self.steps
        # Each step's parent in the list: the nearest earlier step one level up (depth first).
        parent: list[int] = []
        last_at: list[int] = []  # last_at[d]: index of the latest step at depth d
        for i, step in enumerate(self.steps):
            d = min(step.depth, len(last_at))
            parent.append(last_at[d - 1] if d else -1)
            del last_at[d:]
            last_at.append(i)
        keep: set[int] = set()
        for i, step in enumerate(self.steps):
            if step.change == "same":
                continue
            chain: list[int] = []
            j = i
            while j >= 0 and j not in keep:
                chain.append(j)
                j = parent[j]
            if len(keep) + len(chain) > limit:
                break
            keep.update(chain)
        for i in range(len(self.steps)):
            if len(keep) >= limit:
                break
            if parent[i] < 0 or parent[i] in keep:
                keep.add(i)
        return [self.steps[i] for i in sorted(keep)]

    def lines(self, width: int = 80, *, only_changes: bool = False) -> list[tuple[str, str]]:
        """The diff as ``(text, style)`` lines that fit ``width`` columns (style: a rich style
        name or ""). ``only_changes`` leaves out the steps that are the same."""
        counts = self.counts()
        out: list[tuple[str, str]] = [
            (_fit(f"a {self.a}", width), "bold"),
            (_fit(f"b {self.b}", width), "bold"),
            (", ".join(f"{n} {c}" for c, n in counts.items()), "bold"),
        ]
        styles = {"same": "dim", "changed": "yellow", "added": "green", "removed": "red"}
        for step in self.steps:
            if only_changes and step.change == "same":
                continue
            out.append((_step_line(step, width), styles[step.change]))
            for title, patch in (("input", step.input_patch), ("output", step.output_patch)):
                for op in patch or ():
                    out.append((_op_line(step.depth, title, op, width), ""))
            errors = (_get(step.a, "error"), _get(step.b, "error"))
            if step.change == "changed" and errors[0] != errors[1]:
                for side, error in zip("ab", errors, strict=True):
                    if error:
                        indent = "  " * (step.depth + 2)
                        out.append((_fit(f"{indent}error {side}: {error}", width), "red"))
        out.extend((_fit(f"note: {n}", width), "yellow") for n in self.notes)
        return out

    def text(self, width: int = 80, *, only_changes: bool = False) -> str:
        return "\n".join(t for t, _ in self.lines(width, only_changes=only_changes))


# -- aligning the trees -----------------------------------------------------------------------


def diff_spans(a_id: str, a_spans: Sequence[Any], b_id: str, b_spans: Sequence[Any]) -> RunDiff:
    """Align run B's step calls with run A's and compare each pair.

    Raises:
        ReplayError: a run without a root step span.
    """
    notes: list[str] = []
    a_clean = _acyclic(a_spans, a_id, notes)
    b_clean = _acyclic(b_spans, b_id, notes)
    plan, a_root = build_plan(a_id, a_clean, None)
    a_by_id = {s.span_id: s for s in a_clean}
    a_kids: dict[str, list[Any]] = {}
    for call in sorted(plan.calls.values(), key=lambda c: c.start_ns):
        if call.parent:
            a_kids.setdefault(call.parent, []).append(call)
    a_root_path = next(
        (c.path for c in plan.calls.values() if c.span_id == a_root.span_id), str(a_root.name)
    )

    b_steps = [s for s in b_clean if s.attributes.get(attr.STEP_TYPE) in _STEP_TYPES]
    b_by_id = {s.span_id: s for s in b_clean}
    b_kids: dict[str, list[Any]] = {}
    b_roots: list[Any] = []
    for span in sorted(b_steps, key=lambda s: s.start_ns):
        parent = _step_ancestor(span, b_by_id)
        if parent is None:
            b_roots.append(span)
        else:
            b_kids.setdefault(parent.span_id, []).append(span)
    if not b_roots:
        raise ReplayError(f"run {b_id} has no root step span in the store; nothing to compare")
    b_root = next((s for s in b_roots if s.parent_id is None), b_roots[0])

    # Walk B breadth-first from its root; each call is matched under its parent's counterpart.
    paired: dict[str, Any] = {a_root_path: b_root}  # A path -> B span
    mapped: dict[str, str] = {b_root.span_id: a_root_path}  # B span id -> A path it stands for
    own: dict[str, str] = {b_root.span_id: a_root_path}  # B span id -> its path in B
    added_under: dict[str, list[Any]] = {}  # B parent span id -> its unmatched children
    queue, seen = [b_root], {b_root.span_id}
    while queue:
        parent = queue.pop(0)
        for child in b_kids.get(parent.span_id, ()):
            if child.span_id in seen:
                continue
            seen.add(child.span_id)
            queue.append(child)
            name = str(child.attributes.get(attr.STEP_NAME, child.name))
            slot = f"{name}[{int(child.attributes.get(attr.STEP_OCCURRENCE, 0))}]"
            own[child.span_id] = f"{own[parent.span_id]}/{slot}"
            under = mapped[parent.span_id]
            recorded, _ = plan.counterpart(f"{under}/{slot}", under, name, _encoded(child))
            if recorded is not None and recorded.path not in paired:
                # Other inputs at the same position: replay runs it live; diff pairs it
                # ("changed") and keeps aligning its own calls under it.
                paired[recorded.path] = child
                mapped[child.span_id] = recorded.path
            else:
                mapped[child.span_id] = f"{under}/{slot}~"  # nothing recorded stands behind it
                added_under.setdefault(parent.span_id, []).append(child)

    steps: list[StepDiff] = []
    visited: set[str] = set()

    def emit_added(span: Any, depth: int) -> None:
        if span.span_id in visited:
            return
        visited.add(span.span_id)
        steps.append(_pair(own[span.span_id], _name(span), depth, None, span))
        for kid in b_kids.get(span.span_id, ()):
            emit_added(kid, depth + 1)

    # Depth-first over A's tree; B's unmatched calls come after their parent's recorded ones.
    stack: list[tuple[bool, str, int]] = [(False, a_root_path, 0)]
    served: set[str] = set()  # A paths under a call B reused
    while stack:
        is_added, key, depth = stack.pop()
        if is_added:
            for kid in added_under.get(key, ()):
                emit_added(kid, depth)
            continue
        if key in visited:
            continue
        visited.add(key)
        recorded = plan.calls.get(key)
        a_span = a_by_id.get(recorded.span_id) if recorded is not None else a_root
        b_span = paired.get(key)
        if b_span is None and recorded is not None and recorded.parent in served:
            served.add(key)
            side = _side(a_span)
            steps.append(StepDiff(key, _name(a_span), depth, "same", side, None, None, None, True))
        else:
            steps.append(_pair(key, _name(a_span), depth, a_span, b_span))
        if b_span is not None:
            if b_span.attributes.get(attr.REPLAY_CACHED):
                served.add(key)
            stack.append((True, b_span.span_id, depth + 1))
        stack.extend((False, c.path, depth + 1) for c in reversed(a_kids.get(key, ())))
    return RunDiff(a=a_id, b=b_id, steps=steps, notes=tuple(notes))


def _pair(path: str, name: str, depth: int, a: Any, b: Any) -> StepDiff:
    sa, sb = _side(a), _side(b)
    if sa is None or sb is None:
        return StepDiff(path, name, depth, "removed" if sb is None else "added", sa, sb)
    input_patch = _patch(sa.input_json, sb.input_json)
    # A call that failed has no output: its error says what changed, not a patch to null.
    failed_without = sb.status == "error" and sb.output_json is None
    output_patch = None if failed_without else _patch(sa.output_json, sb.output_json)
    same = (
        sa.status == sb.status
        and sa.error == sb.error
        and input_patch is None
        and (sa.output_json == sb.output_json or _patch(sa.output_json, sb.output_json) is None)
    )
    change: Change = "same" if same else "changed"
    return StepDiff(path, name, depth, change, sa, sb, input_patch, output_patch)


def _side(span: Any) -> Side | None:
    if span is None:
        return None
    a = span.attributes
    failed = span.status == "ERROR"
    error = None
    if failed:
        kind = str(a.get("error.type") or "")
        short = kind.rsplit(".", 1)[-1]
        message = span.status_message or ""
        error = message if not kind or message.startswith((kind, short)) else f"{short}: {message}"
    tokens = [a.get(k) for k in (attr.GEN_AI_INPUT_TOKENS, attr.GEN_AI_OUTPUT_TOKENS)]
    counted = [int(t) for t in tokens if isinstance(t, int | float)]
    return Side(
        span_id=span.span_id,
        status="error" if failed else "ok",
        error=error or None,
        duration_ms=(span.end_ns - span.start_ns) / 1e6,
        tokens=sum(counted) if counted else None,
        input_json=a.get(attr.INPUT_VALUE),
        output_json=a.get(attr.OUTPUT_VALUE),
        reused=bool(a.get(attr.REPLAY_CACHED)),
    )


def _patch(a: str | None, b: str | None) -> list[dict[str, Any]] | None:
    """The JSON Patch from ``a`` to ``b``, or None when they are equal."""
    if a == b:
        return None
    try:
        before = json.loads(a) if a is not None else None
        after = json.loads(b) if b is not None else None
    except ValueError:  # not JSON (written by something else): the whole text changed
        return [{"op": "replace", "path": "", "value": b}]
    ops = make_patch(before, after)
    # Serialise now: make_patch's values are the objects inside ``after``.
    return json.loads(json.dumps(ops)) if ops else None


def _encoded(span: Any) -> Encoded:
    text = span.attributes.get(attr.INPUT_VALUE)
    lossy = attr.INPUT_VALUE in str(span.attributes.get(attr.LOSSY, "")).split(",")
    if text is None:  # not captured: matched by position only, never equal to a recording
        return Encoded(json="\x00", truncated=False, redacted=False, lossless=False)
    return Encoded(json=str(text), truncated=lossy, redacted=False, lossless=not lossy)


def _name(span: Any) -> str:
    return str(span.attributes.get(attr.STEP_NAME, span.name)) if span is not None else ""


def _step_ancestor(span: Any, by_id: dict[str, Any]) -> Any:
    parent = by_id.get(span.parent_id) if span.parent_id else None
    seen: set[str] = set()
    while parent is not None and parent.attributes.get(attr.STEP_TYPE) not in _STEP_TYPES:
        if parent.span_id in seen:
            return None
        seen.add(parent.span_id)
        parent = by_id.get(parent.parent_id) if parent.parent_id else None
    return parent


def _acyclic(spans: Iterable[Any], run_id: str, notes: list[str]) -> list[Any]:
    """The spans whose parent chain ends (at a root or a missing parent); a store written by
    something else may hold a cycle, and every walk here must terminate."""
    by_id = {s.span_id: s for s in spans}
    good: set[str] = set()
    bad: set[str] = set()
    for span in by_id.values():
        chain: list[str] = []
        on_chain: set[str] = set()
        node = span
        verdict = True
        while node is not None:
            if node.span_id in good:
                break
            if node.span_id in bad or node.span_id in on_chain:
                verdict = False
                break
            chain.append(node.span_id)
            on_chain.add(node.span_id)
            node = by_id.get(node.parent_id) if node.parent_id else None
        (good if verdict else bad).update(chain)
    if bad:
        notes.append(f"run {run_id}: {len(bad)} span(s) in a parent cycle left out")
    return [s for s in by_id.values() if s.span_id in good]


# -- text -------------------------------------------------------------------------------------


def _get(side: Side | None, key: str) -> Any:
    return getattr(side, key) if side is not None else None


def _delta(a: float | None, b: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"a": a, "b": b}
    if isinstance(a, int | float) and isinstance(b, int | float):
        out["delta"] = round(b - a, 3)
        if isinstance(a, float):
            out["a"], out["b"] = round(a, 3), round(b, 3)
    return out


def _fit(text: str, width: int) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def _ms(value: float) -> str:
    return f"{value / 1000:.1f}s" if value >= 10_000 else f"{value:.0f}ms"


def _step_line(step: StepDiff, width: int) -> str:
    a, b = step.a, step.b
    if a and b:
        status = a.status if a.status == b.status else f"{a.status}→{b.status}"
        dms = b.duration_ms - a.duration_ms
        timing = (
            f"{_ms(a.duration_ms)}→{_ms(b.duration_ms)} ({'+' if dms >= 0 else '-'}{_ms(abs(dms))})"
        )
        if a.tokens is not None or b.tokens is not None:
            dt = (b.tokens or 0) - (a.tokens or 0)
            timing += f" tok {dt:+d}" if dt else f" tok {b.tokens}"
        if b.reused:
            status += " reused"
    else:
        side = a or b
        assert side is not None
        status, timing = side.status, _ms(side.duration_ms)
        if step.inside_reused:
            status += " reused"
    # The name takes what the status and timing columns leave; deep trees cut names, not numbers.
    right = _fit(f" {status:<15}{timing}", _RIGHT)
    left = f"{MARKS[step.change]} {'  ' * step.depth}{step.label}"
    room = max(width - _RIGHT, 12)
    return _fit(f"{_fit(left, room):<{room}}{right}", width)


def _op_line(depth: int, title: str, op: dict[str, Any], width: int) -> str:
    indent = "  " * (depth + 2)
    value = (
        "" if op.get("op") == "remove" else " " + json.dumps(op.get("value"), ensure_ascii=False)
    )
    return _fit(f"{indent}{title} {op.get('op')} {op.get('path') or '/'}{value}", width)
