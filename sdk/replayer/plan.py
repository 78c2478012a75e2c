"""The replay plan: a recorded run's step calls, indexed for the live calls that replay them.

Each step call is matched to the recorded call at the same position (same parent, same name,
same occurrence among its siblings) with equal inputs; a match that succeeded returns its
recorded output without executing. Concurrent siblings may start in another order than when
recorded: a call whose position holds other inputs (or was taken by such a sibling) is matched
to the first recorded call of the same step under the same parent with equal inputs that no
other call was matched to. The hot path consults it on every call of a replay; it reads no store
and imports no code. Nothing is unpickled.

Divergence is what the replay can say for certain about calls that changed shape:

- *removed*: a recorded call that no live call stands for, under a recorded call whose live
  counterpart executed (a reused step executes nothing, so its recorded children are not
  missing). If that counterpart stopped early (it failed or was closed), only recorded calls
  that started before a sibling the replay did reach count: the rest were never got to.
- *added*: a live call at a position the recording has no call of that step for, under a call
  that has a recorded counterpart. Under a recorded call that itself stopped early (the step
  that failed, the root of a failed or killed run), a call made once each of its recorded calls
  was met lies beyond where the recording ends and is not counted.
- A call at a recorded position with other inputs is neither (it is a changed call, and the
  summary says its inputs changed); the calls it makes are not counted either: other inputs may
  legitimately lead to other calls.
- A generator step is one call, however many items it yields.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import threading
import typing
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Link, SpanContext, TraceFlags
from pydantic import TypeAdapter, ValidationError

from .. import attributes as attr
from ..errors import ReplayError, StepRefused
from ..state import State, adopt
from ..values.serialize import Encoded
from ..values.state_diff import apply_patch

__all__ = ["RecordedCall", "ReplayPlan", "build_plan"]

_STEP_TYPES = (attr.STEP_TYPE_STEP, attr.STEP_TYPE_WORKFLOW)

logger = logging.getLogger("spanflow")

_UNMATCHED = "~"  # ends the path of a call that matched no recorded call (recorded ones end in "]")


@dataclass(frozen=True)
class RecordedCall:
    """What the original run recorded for one step call."""

    path: str
    parent: str  # the recorded parent call's path; "" for the run's root
    name: str
    occurrence: int
    span_id: str
    ok: bool
    input_json: str | None
    output_json: str | None
    state_diff: str | None
    lossy: frozenset[str]
    start_ns: int


@dataclass(eq=False)
class ReplayPlan:
    """The recorded calls of a run, looked up by call path while the replay executes."""

    original_run_id: str
    original_root_span_id: str
    calls: dict[str, RecordedCall]
    live: frozenset[str] = frozenset()
    new_run_id: str | None = None
    reused: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    root_path: str = ""
    #: Whether the original run ended ok; if not, its root stopped early (see the module doc).
    complete: bool = True
    #: Attributes the replay's root span starts with (the original's workflow file, the edits,
    #: that it is a check).
    root_attributes: dict[str, str | bool] = field(default_factory=dict)
    # A check's selection, ``(recorded path the call stands for, step name, OpenInference kind)
    # -> True`` for the calls that may only be served from the recording: those are reused or
    # refused (StepRefused, never run live), and every other call runs live. None (replay):
    # reuse whatever matches.
    must_serve: Callable[[str, str, str], bool] | None = None
    refused: list[StepRefused] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Recorded calls some live call already stands for (each stands for one at most), and the
    # recorded calls by (parent path, step name, canonical inputs) in occurrence order, built
    # when a call first finds other inputs at its own position.
    _taken: set[str] = field(default_factory=set, init=False, repr=False)
    _by_inputs: dict[tuple[str, str, str], deque[RecordedCall]] | None = field(
        default=None, init=False, repr=False
    )
    # Divergence bookkeeping: recorded calls reused, positions a call with other inputs held,
    # recorded calls whose live counterpart stopped early, and live calls with no recording.
    _reused_recorded: set[str] = field(default_factory=set, init=False, repr=False)
    _changed: set[str] = field(default_factory=set, init=False, repr=False)
    _stopped: set[str] = field(default_factory=set, init=False, repr=False)
    _added: list[str] = field(default_factory=list, init=False, repr=False)
    _children: dict[str, list[RecordedCall]] | None = field(default=None, init=False, repr=False)

    def links(self) -> list[Link]:
        ctx = SpanContext(
            trace_id=int(self.original_run_id, 16),
            span_id=int(self.original_root_span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        return [Link(ctx, {"spanflow.link": "replay_of"})]

    def reuse(
        self,
        path: str,
        parent: str,
        name: str,
        fn: Any,
        inputs: Encoded,
        states: Sequence[tuple[str, State, Any]],
        *,
        streams: bool = False,
        kind: str = "",
    ) -> tuple[bool, Any, str]:
        """Look up the call of step ``name`` at ``path`` (under the call at ``parent``).

        Returns ``(hit, output, stands_for)``: on a hit the recorded output, with its recorded
        state change re-applied to ``states`` (the live State arguments); ``stands_for`` is the
        path of the recorded call this one corresponds to, under which its own calls are matched.
        A generator (``streams``) is matched, so its own calls are, but always executes.

        Raises:
            StepRefused: ``must_serve`` selects the call and it cannot be served.
        """
        shown = path.replace(_UNMATCHED + "/", "/")  # the summary prints paths without marks
        with self.lock:
            recorded, stands_for = self._counterpart(path, parent, name, inputs)
            if recorded is None and self._is_added(parent):
                self._added.append(shown)
        strict = self.must_serve is not None and self.must_serve(stands_for, name, kind)
        try:
            if streams or (self.must_serve is not None and not strict):
                # A generator always executes; a check runs everything it does not serve.
                hit, value, why = False, None, ""
            else:
                hit, value, why = self._match(recorded, fn, inputs)
            if hit and recorded is not None:
                why = self._apply_state(recorded, states)
                hit = not why
        except Exception as exc:  # a recorded value this code cannot read: run the call live
            hit, value, why = False, None, f"runs live: {type(exc).__name__}: {exc}"
        with self.lock:
            (self.reused if hit else self.executed).append(shown)
            if hit and recorded is not None:
                self._reused_recorded.add(recorded.path)
            if why:
                self.notes.append(f"{shown}: {why}")
        if strict and not hit:
            refusal = StepRefused(path, _refusal_reason(recorded, why))
            with self.lock:
                self.refused.append(refusal)
            raise refusal
        return hit, value, stands_for

    def stopped(self, stands_for: str) -> None:
        """The live call standing for ``stands_for`` ended without finishing (raised, closed)."""
        with self.lock:
            self._stopped.add(stands_for)

    def _recorded_children(self) -> dict[str, list[RecordedCall]]:
        if self._children is None:
            children: dict[str, list[RecordedCall]] = {}
            for call in sorted(self.calls.values(), key=lambda c: c.start_ns):
                if call.parent:
                    children.setdefault(call.parent, []).append(call)
            self._children = children
        return self._children

    def _stopped_early_when_recorded(self, path: str) -> bool:
        if path == self.root_path:
            return not self.complete
        call = self.calls.get(path)
        return call is not None and not call.ok

    def _is_added(self, parent: str) -> bool:
        """Whether a call with no recorded counterpart under ``parent`` is a call the recording
        should have had (see the module doc); called under the lock."""
        if parent != self.root_path and parent not in self.calls:
            return False  # under a call with other inputs, or itself added
        if self._stopped_early_when_recorded(parent):
            siblings = self._recorded_children().get(parent, [])
            return any(c.path not in self._taken for c in siblings)
        return True

    def divergence(self) -> list[dict[str, str]]:
        """Calls today's code no longer makes and calls with no recording, in recorded order
        (removed) and then in call order (added)."""
        with self.lock:
            out: list[dict[str, str]] = []
            executed_live = self._taken - self._reused_recorded
            for parent, children in self._recorded_children().items():
                if parent != self.root_path and parent not in executed_live:
                    continue
                missing = [
                    c for c in children if c.path not in self._taken and c.path not in self._changed
                ]
                if parent in self._stopped:
                    reached = [c.start_ns for c in children if c.path in self._taken]
                    last = max(reached, default=-1)
                    missing = [c for c in missing if c.start_ns < last]
                out.extend({"path": c.path, "kind": "removed"} for c in missing)
            out.extend({"path": p, "kind": "added"} for p in self._added)
            return out

    def closing_attributes(self) -> dict[str, str]:
        """What the replay's root span records as it ends (its divergence)."""
        return {attr.REPLAY_DIVERGED: json.dumps(self.divergence(), ensure_ascii=False)}

    def counterpart(
        self, path: str, parent: str, name: str, inputs: Encoded
    ) -> tuple[RecordedCall | None, str]:
        """The recorded call a call at ``path`` is matched to, as replay matches it (``diff``
        aligns two runs with it); see ``reuse``. Taking a recorded call is for good."""
        with self.lock:
            return self._counterpart(path, parent, name, inputs)

    def _counterpart(
        self, path: str, parent: str, name: str, inputs: Encoded
    ) -> tuple[RecordedCall | None, str]:
        """The recorded call the call at ``path`` is matched to, and the path it stands for.

        The recorded call at the same position when its inputs are equal; else, as concurrent
        siblings may start in another order than when recorded, the first recorded call of the
        same step under the same parent with equal inputs that no live call stands for yet. That
        call is then taken for good, reused or not (the failed step, one run live by
        ``from_step``): each recorded call has one live counterpart at most, and the calls its
        counterpart makes are matched under it. A call without one runs live, and so do the
        calls it makes (they are matched under a path no recorded call has).
        """
        exact = self.calls.get(path)
        if exact is not None and exact.path in self._taken:
            exact = None
        if exact is not None and _same_inputs(exact, inputs):
            self._taken.add(exact.path)
            return exact, path
        canonical = _canonical(inputs.json) if inputs.lossless else None
        if canonical is not None:
            same = self._recorded_by_inputs().get((parent, name, canonical))
            while same:
                call = same.popleft()
                if call.path not in self._taken:
                    self._taken.add(call.path)
                    return call, call.path
        # Other inputs at this position (the summary says so); nothing recorded stands behind it.
        if exact is not None:
            self._changed.add(exact.path)
        return exact, path + _UNMATCHED

    def _recorded_by_inputs(self) -> dict[tuple[str, str, str], deque[RecordedCall]]:
        if self._by_inputs is None:
            index: dict[tuple[str, str, str], deque[RecordedCall]] = {}
            for call in sorted(self.calls.values(), key=lambda c: c.occurrence):
                canonical = _canonical(call.input_json) if call.parent and call.input_json else None
                if canonical is not None:
                    index.setdefault((call.parent, call.name, canonical), deque()).append(call)
            self._by_inputs = index
        return self._by_inputs

    def _match(
        self, recorded: RecordedCall | None, fn: Any, inputs: Encoded
    ) -> tuple[bool, Any, str]:
        if recorded is None:
            return False, None, ""
        if recorded.path in self.live or not recorded.ok:
            return False, None, ""
        if {attr.INPUT_VALUE, attr.OUTPUT_VALUE, attr.STATE_DIFF} & recorded.lossy:
            return False, None, "runs live: its recorded value was truncated, redacted or lossy"
        if recorded.input_json is None or recorded.output_json is None:
            return False, None, "runs live: its inputs or output were not captured"
        if not (inputs.lossless and _same_inputs(recorded, inputs)):
            return False, None, "runs live: its inputs changed"
        annotation = _return_annotation(fn)
        if annotation is inspect.Signature.empty:
            return False, None, "runs live: no return annotation to rebuild its output with"
        try:
            value = TypeAdapter(annotation).validate_python(json.loads(recorded.output_json))
        except (ValidationError, TypeError, ValueError) as exc:
            return (
                False,
                None,
                f"runs live: recorded output does not fit {annotation!r} ({exc.__class__.__name__})",
            )
        return True, value, ""

    @staticmethod
    def _apply_state(recorded: RecordedCall, states: Sequence[tuple[str, State, Any]]) -> str:
        """Re-apply a reused call's recorded state change to the live State objects; returns
        why it could not be (the call then runs live), or ""."""
        if not recorded.state_diff or not states:
            return ""
        ops = json.loads(recorded.state_diff)
        updates: list[tuple[State, State]] = []
        try:
            for prefix, state, before in states:
                mine = [
                    {**op, "path": op["path"][len(prefix) :]}
                    for op in ops
                    if not prefix or op["path"] == prefix or op["path"].startswith(prefix + "/")
                ]
                if mine:
                    updates.append((state, type(state).model_validate(apply_patch(before, mine))))
        except (ValueError, ValidationError, KeyError) as exc:
            return f"runs live: its recorded state change could not be re-applied ({exc})"
        for state, updated in updates:  # all or none: a failure above leaves every State as is
            adopt(state, updated)
        return ""


def _refusal_reason(recorded: RecordedCall | None, why: str) -> str:
    if recorded is None:
        return "no recorded call of this step at this position to serve"
    if not recorded.ok:
        return "its recorded call failed; there is no output to serve"
    return why.removeprefix("runs live: ") or "it cannot be served from the recording"


def _same_inputs(recorded: RecordedCall, inputs: Encoded) -> bool:
    if recorded.input_json is None:
        return False
    if recorded.input_json == inputs.json:
        return True
    try:
        return inputs.lossless and json.loads(recorded.input_json) == json.loads(inputs.json)
    except ValueError:
        return False


def _canonical(input_json: str) -> str | None:
    try:
        return json.dumps(json.loads(input_json), sort_keys=True, ensure_ascii=False)
    except ValueError:  # not JSON (a store written by something else): matched by position only
        return None


def _return_annotation(fn: Any) -> Any:
    target = inspect.unwrap(fn)
    if isinstance(target, functools.partial):
        return inspect.Signature.empty
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        return inspect.Signature.empty
    return hints.get("return", inspect.Signature.empty)


# -- building the plan from the store --------------------------------------------------------


def build_plan(
    run_id: str, spans: Sequence[Any], from_step: str | None, *, complete: bool = True
) -> tuple[ReplayPlan, Any]:
    """Index a run's recorded step calls by call path; returns the plan and the root span.

    ``complete`` says whether the run ended ok (a failed, killed or running one did not)."""
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if s.parent_id is None]
    if not roots:
        raise ReplayError(f"run {run_id} has no root span in the store; it cannot be replayed")
    root = roots[0]
    paths: dict[str, str] = {}
    parents: dict[str, str] = {}  # call path -> its parent call's path

    broken: set[str] = set()  # spans whose step ancestry loops (a hostile or damaged store)

    def path_of(span: Any) -> str | None:
        # Up the step ancestry until a span with a known path, a root or a loop; iterative, so
        # neither a deep tree nor a parent cycle can stop the replay.
        chain: list[Any] = []
        seen: set[str] = set()
        current = span
        base: str | None
        while True:
            span_id = current.span_id
            if span_id in paths:
                base = paths[span_id]
                break
            if span_id in broken or span_id in seen:
                base = None
                break
            if current.attributes.get(attr.STEP_TYPE) not in _STEP_TYPES:
                base = None
                break
            seen.add(span_id)
            chain.append(current)
            parent = _step_ancestor(current, by_id)
            if parent is None:
                base = ""  # ``current`` is a root
                break
            current = parent
        if base is None:
            broken.update(c.span_id for c in chain)
            return None
        for call in reversed(chain):
            a = call.attributes
            name = a.get(attr.STEP_NAME, call.name)
            if not base:
                path = str(name)
            else:
                path = f"{base}/{name}[{int(a.get(attr.STEP_OCCURRENCE, 0))}]"
                parents[path] = base
            paths[call.span_id] = path
            base = path
        return paths.get(span.span_id)

    calls: dict[str, RecordedCall] = {}
    for span in spans:
        path = path_of(span)
        if path is None:
            continue
        a = span.attributes
        lossy = frozenset(x for x in str(a.get(attr.LOSSY, "")).split(",") if x)
        calls[path] = RecordedCall(
            path=path,
            parent=parents.get(path, ""),
            name=str(a.get(attr.STEP_NAME, span.name)),
            occurrence=int(a.get(attr.STEP_OCCURRENCE, 0)),
            span_id=span.span_id,
            # A fallback's or default's value is a stand-in for the step's own: run it again.
            ok=span.status != "ERROR"
            and not a.get(attr.FALLBACK_USED)
            and not a.get(attr.DEFAULT_USED),
            input_json=a.get(attr.INPUT_VALUE),
            output_json=a.get(attr.OUTPUT_VALUE),
            state_diff=a.get(attr.STATE_DIFF),
            lossy=lossy,
            start_ns=span.start_ns,
        )
    live: set[str] = set()
    if from_step is not None:
        starts = [
            c for c in calls.values() if c.name == from_step and c.path != paths.get(root.span_id)
        ]
        if not starts:
            names = sorted({c.name for c in calls.values()})
            raise ReplayError(
                f"--from {from_step!r}: no such step in run {run_id}; its steps are {', '.join(names)}"
            )
        first = min(c.start_ns for c in starts)
        for call in calls.values():
            if call.start_ns >= first or any(s.path.startswith(call.path + "/") for s in starts):
                live.add(call.path)
    plan = ReplayPlan(
        original_run_id=run_id,
        original_root_span_id=root.span_id,
        calls=calls,
        live=frozenset(live),
        root_path=paths.get(root.span_id, ""),
        complete=complete,
    )
    return plan, root


def _step_ancestor(span: Any, by_id: dict[str, Any]) -> Any:
    """The nearest step or workflow above ``span`` (None at a root or in a parent cycle)."""
    seen = {span.span_id}
    parent = by_id.get(span.parent_id) if span.parent_id else None
    while parent is not None and parent.attributes.get(attr.STEP_TYPE) not in _STEP_TYPES:
        if parent.span_id in seen:
            return None
        seen.add(parent.span_id)
        parent = by_id.get(parent.parent_id) if parent.parent_id else None
    return parent
