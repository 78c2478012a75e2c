"""Replay a recorded run with today's code, reusing the outputs of the steps that succeeded.

The recorded entrypoint is imported (never evaluated: it must be ``module:qualname`` of dotted
identifiers and, once imported, a spanflow workflow) and called with its recorded arguments,
rebuilt from JSON through the type hints. Each step call is matched to the recorded call at the
same position (same parent, same name, same occurrence among its siblings) with equal inputs; a
match that succeeded returns its recorded output without executing. Concurrent siblings may start
in another order than when recorded: a call whose position holds other inputs (or was taken by
such a sibling) is matched to the first recorded call of the same step under the same parent
with equal inputs that no other call was matched to. Nothing is unpickled.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import threading
import typing
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Link, SpanContext, TraceFlags
from pydantic import TypeAdapter, ValidationError

from . import attributes as attr
from . import runtime
from .errors import ReplayError
from .recording import _REPLAY_KEY, StepSpec
from .serialize import Encoded
from .state import State, adopt
from .state_diff import apply_patch

logger = logging.getLogger("spanflow")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_UNMATCHED = "~"  # ends the path of a call that matched no recorded call (recorded ones end in "]")
_LOSSY_MARKS = ("[REDACTED]", "…[+", '"__truncated__"', '"__bytes__"', '"__type__"', '"[cycle]"')


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
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Recorded calls some live call already stands for (each stands for one at most), and the
    # recorded calls by (parent path, step name, canonical inputs) in occurrence order, built
    # when a call first finds other inputs at its own position.
    _taken: set[str] = field(default_factory=set, init=False, repr=False)
    _by_inputs: dict[tuple[str, str, str], deque[RecordedCall]] | None = field(
        default=None, init=False, repr=False
    )

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
    ) -> tuple[bool, Any, str]:
        """Look up the call of step ``name`` at ``path`` (under the call at ``parent``).

        Returns ``(hit, output, stands_for)``: on a hit the recorded output, with its recorded
        state change re-applied to ``states`` (the live State arguments); ``stands_for`` is the
        path of the recorded call this one corresponds to, under which its own calls are matched.
        """
        with self.lock:
            recorded, stands_for = self._counterpart(path, parent, name, inputs)
        try:
            hit, value, why = self._match(recorded, fn, inputs)
            if hit and recorded is not None:
                why = self._apply_state(recorded, states)
                hit = not why
        except Exception as exc:  # a recorded value this code cannot read: run the call live
            hit, value, why = False, None, f"runs live: {type(exc).__name__}: {exc}"
        with self.lock:
            (self.reused if hit else self.executed).append(path)
            if why:
                self.notes.append(f"{path}: {why}")
        return hit, value, stands_for

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


def build_plan(run_id: str, spans: Sequence[Any], from_step: str | None) -> tuple[ReplayPlan, Any]:
    """Index a run's recorded step calls by call path; returns the plan and the root span."""
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if s.parent_id is None]
    if not roots:
        raise ReplayError(f"run {run_id} has no root span in the store; it cannot be replayed")
    root = roots[0]
    paths: dict[str, str] = {}
    parents: dict[str, str] = {}  # call path -> its parent call's path

    def path_of(span: Any) -> str | None:
        if span.span_id in paths:
            return paths[span.span_id]
        a = span.attributes
        if a.get(attr.STEP_TYPE) not in (attr.STEP_TYPE_STEP, attr.STEP_TYPE_WORKFLOW):
            return None
        parent = _step_ancestor(span, by_id)
        name = a.get(attr.STEP_NAME, span.name)
        if parent is None:
            path = str(name)
        else:
            parent_path = path_of(parent)
            if parent_path is None:
                return None
            path = f"{parent_path}/{name}[{int(a.get(attr.STEP_OCCURRENCE, 0))}]"
            parents[path] = parent_path
        paths[span.span_id] = path
        return path

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
    )
    return plan, root


def _step_ancestor(span: Any, by_id: dict[str, Any]) -> Any:
    parent = by_id.get(span.parent_id) if span.parent_id else None
    while parent is not None and parent.attributes.get(attr.STEP_TYPE) not in (
        attr.STEP_TYPE_STEP,
        attr.STEP_TYPE_WORKFLOW,
    ):
        parent = by_id.get(parent.parent_id) if parent.parent_id else None
    return parent


# -- resolving the entrypoint ----------------------------------------------------------------


def check_entrypoint(entrypoint: str) -> tuple[str, str]:
    """Split ``module:qualname``; refuse anything that is not dotted identifiers."""
    module, sep, qualname = entrypoint.partition(":")
    if not sep or not _IDENT.match(module) or not _IDENT.match(qualname):
        raise ReplayError(
            f"entrypoint {entrypoint!r} is not module:qualname of dotted identifiers; refusing to import it"
        )
    if "<locals>" in qualname:
        raise ReplayError(
            f"entrypoint {entrypoint!r} is defined inside a function and cannot be imported"
        )
    return module, qualname


@contextmanager
def _import_paths(workflow_file: str | None) -> Iterator[None]:
    extra = [os.getcwd()]
    if workflow_file:
        extra.insert(0, str(Path(workflow_file).parent))
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def load_workflow(entrypoint: str, workflow_file: str | None) -> Any:
    """Import the recorded entrypoint and make sure it is a spanflow workflow."""
    module_name, qualname = check_entrypoint(entrypoint)
    with _import_paths(workflow_file):
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:
            raise ReplayError(
                f"cannot import {module_name!r} for {entrypoint}: {type(exc).__name__}: {exc}"
            ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ReplayError(
                f"{entrypoint}: {module_name} has no attribute path {qualname!r} today"
            ) from None
    spec = getattr(obj, "__spanflow_spec__", None)
    if not isinstance(spec, StepSpec) or not spec.is_workflow:
        raise ReplayError(f"{entrypoint} is not a @spanflow.workflow; refusing to call it")
    return obj


def rebuild_arguments(
    fn: Any, input_json: str | None, lossy: frozenset[str]
) -> tuple[list[Any], dict[str, Any]]:
    """The workflow's arguments from its recorded ``input.value``, validated by its type hints."""
    if input_json is None:
        raise ReplayError(
            "the run's inputs were not captured (capture= excluded them); it cannot be replayed"
        )
    recorded = json.loads(input_json)
    if not isinstance(recorded, dict):
        raise ReplayError("the run's recorded inputs are not an object of parameters")
    if attr.INPUT_VALUE in lossy:
        spoiled = [
            k
            for k, v in recorded.items()
            if any(m in json.dumps(v, ensure_ascii=False) for m in _LOSSY_MARKS)
        ]
        raise ReplayError(
            "the run's argument(s) "
            + ", ".join(repr(k) for k in spoiled or recorded)
            + " were truncated or redacted when recorded; replay cannot rebuild them"
        )
    target = inspect.unwrap(fn)
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if name not in recorded:
            continue
        value = recorded[name]
        hint = hints.get(name)
        if hint is not None:
            try:
                if param.kind is param.VAR_POSITIONAL:
                    value = [TypeAdapter(hint).validate_python(v) for v in value]
                elif param.kind is param.VAR_KEYWORD:
                    value = {k: TypeAdapter(hint).validate_python(v) for k, v in value.items()}
                else:
                    value = TypeAdapter(hint).validate_python(value)
            except ValidationError as exc:
                raise ReplayError(
                    f"recorded argument {name!r} no longer fits {hint!r}: {exc.errors()[0]['msg']}"
                ) from None
        if param.kind is param.POSITIONAL_ONLY:
            args.append(value)
        elif param.kind is param.VAR_POSITIONAL:
            args.extend(value)
        elif param.kind is param.VAR_KEYWORD:
            kwargs.update(value)
        else:
            kwargs[name] = value
    return args, kwargs


# -- the public entry point ------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayJob:
    """A recorded run, read from the store and ready to be replayed (nothing imported yet)."""

    run_id: str
    entrypoint: str
    workflow_file: str | None
    db: Path
    plan: ReplayPlan
    input_json: str | None
    lossy: frozenset[str]
    async_library: str = "asyncio"  # an async workflow runs on the event loop it was recorded on


@dataclass
class ReplayResult:
    """What a replay did, for the CLI's summary."""

    plan: ReplayPlan
    run_id: str | None = None
    value: Any = None
    error: BaseException | None = None


def load(
    run_id: str, db: str | os.PathLike[str] | None = None, from_step: str | None = None
) -> ReplayJob:
    """Read the run and its recorded calls from the store; imports nothing."""
    from spanflow.exporters.store import Store

    path = Path(db) if db is not None else _default_db()
    with Store.open(path) as store:
        run_record = store.get_run(run_id)
        spans = store.spans(run_record.id)
    plan, root = build_plan(run_record.id, spans, from_step)
    if root.attributes.get(attr.STEP_TYPE) != attr.STEP_TYPE_WORKFLOW:
        raise ReplayError(
            f"run {run_record.id} is a lone step call, not a workflow run; "
            "only workflows can be replayed"
        )
    entrypoint = root.attributes.get(attr.WORKFLOW_ENTRYPOINT)
    if not entrypoint:
        raise ReplayError(f"run {run_record.id} recorded no entrypoint")
    check_entrypoint(str(entrypoint))
    return ReplayJob(
        run_id=run_record.id,
        entrypoint=str(entrypoint),
        workflow_file=root.attributes.get(attr.WORKFLOW_FILE),
        db=path,
        plan=plan,
        input_json=root.attributes.get(attr.INPUT_VALUE),
        lossy=frozenset(x for x in str(root.attributes.get(attr.LOSSY, "")).split(",") if x),
        async_library=str(root.attributes.get(attr.WORKFLOW_ASYNC_LIBRARY) or "asyncio"),
    )


def _default_db() -> Path:
    rt = runtime._runtime
    if rt is not None and rt.settings.db is not None:
        return rt.settings.db
    env = os.environ.get("SPANFLOW_DB")
    return Path(env) if env else runtime.DEFAULT_DB


def run(job: ReplayJob) -> ReplayResult:
    """Import the workflow, rebuild its arguments and call it as a new run linked to the original.

    Raises ReplayError before anything is called when the entrypoint or the arguments cannot be
    rebuilt; the workflow's own exception is returned in the result, not raised.
    """
    fn = load_workflow(job.entrypoint, job.workflow_file)
    args, kwargs = rebuild_arguments(fn, job.input_json, job.lossy)
    is_async = inspect.iscoroutinefunction(fn)
    if is_async and (
        job.async_library not in ("asyncio", "trio")
        or importlib.util.find_spec(job.async_library) is None
    ):
        raise ReplayError(
            f"run {job.run_id} ran on the {job.async_library} event loop, which is not available here"
        )
    runtime.use_store(job.db)
    plan = job.plan
    result = ReplayResult(plan=plan)
    token = otel_context.attach(otel_context.set_value(_REPLAY_KEY, plan))
    try:
        call = functools.partial(fn, *args, **kwargs)
        if is_async:
            import anyio

            result.value = anyio.run(_await, call, backend=job.async_library)
        else:
            result.value = call()
    except Exception as exc:
        result.error = exc
    finally:
        otel_context.detach(token)
        runtime.flush()
    result.run_id = plan.new_run_id
    return result


async def _await(call: Any) -> Any:
    return await call()


def replay(
    run_id: str, db: str | os.PathLike[str] | None = None, from_step: str | None = None
) -> Any:
    """Re-run a recorded run with today's code, reusing the outputs of steps that succeeded.

    Args:
        run_id: the run to replay (a unique prefix of at least 4 hex characters is enough).
        db: the store to read it from and record the replay in (default: the configured store).
        from_step: run this step and everything after it live, even where it succeeded.

    Returns:
        What the workflow returns. Raises what it raises (with a note naming the new run).

    Raises:
        ReplayError: the run cannot be replayed (entrypoint, arguments); StoreError /
            UnknownRunError: the store or the run cannot be read.
    """
    outcome = run(load(run_id, db, from_step))
    if outcome.error is not None:
        raise outcome.error
    return outcome.value
