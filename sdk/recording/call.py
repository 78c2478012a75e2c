"""One step call's span: start it in the right place, record what happened, end it.

``StepCall`` is one invocation of a decorated callable (its ``StepSpec`` is fixed at decoration).
The decorators drive it; everything here swallows its own failures, because recording must
never change what the user's function does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Link, Span, Status, StatusCode

from .. import attributes as attr
from .._stats import count
from ..config import DEFAULT_DB
from ..context import CallFrame, RunState, with_replay, with_run
from ..errors import StepRefused
from ..state import State
from ..values.redact import REDACTED
from ..values.serialize import Encoded, encode, to_jsonable
from ..values.state_diff import JsonValue, make_patch
from .failures import record_exception, record_failure
from .span_values import AttributeValue, set_values
from .spec import StepSpec

if TYPE_CHECKING:
    from ..replayer.plan import ReplayPlan
    from ..runtime import Runtime

__all__ = ["StepCall", "end_span", "is_cancellation", "running_async_library"]

logger = logging.getLogger("spanflow")

_NOTE_MARK = "__spanflow_run_note__"

# The keys a step's context reads and sets, each found through the public API as the one key of
# an empty context given it: the current span's (OpenTelemetry's), the current call's and the
# replay plan's (spanflow's). A Context is a dict: a step looks them up as one, without the
# function calls of ``get_current_span`` and ``get_value``.
(_SPAN_KEY,) = trace.set_span_in_context(INVALID_SPAN, otel_context.Context())
(_CALL_KEY,) = with_run(
    otel_context.Context(), RunState("", INVALID_SPAN), CallFrame("", INVALID_SPAN)
)
(_REPLAY_KEY,) = with_replay(otel_context.Context(), None)  # type: ignore[arg-type]


def _in_call(
    ctx: otel_context.Context, span: Span, run: RunState, frame: CallFrame
) -> otel_context.Context:
    """``with_run(trace.set_span_in_context(span, ctx), run, frame)``, with one copy of ``ctx``
    instead of two."""
    frame.run = run
    values = dict(ctx)
    values[_SPAN_KEY] = span
    values[_CALL_KEY] = frame
    return otel_context.Context(values)


def _state_json(state: State, rt: Runtime) -> JsonValue:
    """A State as plain JSON: pydantic's own (fast) dump, or the never-failing walk."""
    try:
        return cast("JsonValue", state.model_dump(mode="json"))
    except Exception:  # a field pydantic cannot serialise
        value, _ = to_jsonable(state, redactor=rt.settings.redactor)
        return cast("JsonValue", value)


def end_span(span: Span) -> None:
    """End a span; a failing span processor must not replace the user's result or exception."""
    try:
        span.end()
    except Exception:
        count("processor_errors")
        logger.exception("spanflow: ending span %r failed in a span processor", span)


def _has_state(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    for value in args:
        if isinstance(value, State):
            return True
    if kwargs:
        for value in kwargs.values():
            if isinstance(value, State):
                return True
    return False


def running_async_library() -> str | None:
    """``"trio"`` or ``"asyncio"`` when this thread runs that event loop, else None."""
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
            return "trio"
        except RuntimeError:
            pass
    # asyncio's own non-raising check: a sync run pays no exception to learn it has no loop.
    return None if asyncio._get_running_loop() is None else "asyncio"


def is_cancellation(exc: BaseException) -> bool:
    """asyncio/anyio/trio cancellation: the call was stopped from outside, it did not fail."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    cls = type(exc)
    return cls.__name__ == "Cancelled" and cls.__module__.startswith("trio")


class StepCall:
    """One call of a decorated function, from span start to span end."""

    __slots__ = (
        "_encoded_inputs",
        "_lossy",
        "_states",
        "cached",
        "cached_value",
        "ctx",
        "frame",
        "is_root",
        "rt",
        "run",
        "span",
        "spec",
        "token",
    )

    def __init__(
        self, spec: StepSpec, rt: Runtime, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.spec = spec
        self.rt = rt
        self.cached = False
        self.cached_value: Any = None
        self._lossy: list[str] = []
        self._states: list[tuple[str, State, Any]] = []
        self._encoded_inputs: Encoded | None = None
        ctx = otel_context.get_current()
        parent_frame = ctx.get(_CALL_KEY)
        if not isinstance(parent_frame, CallFrame):
            parent_frame = None
        run = parent_frame.run if parent_frame is not None else None
        current = ctx.get(_SPAN_KEY)
        if not isinstance(current, Span):
            current = INVALID_SPAN
        links: list[Link] | None = None
        attributes: dict[str, AttributeValue] = dict(spec.static_attributes)
        if parent_frame is None or run is None:
            self.is_root = True
            outer = current.get_span_context()
            if outer.is_valid:
                links = [Link(outer, {"spanflow.link": "caller"})]
                parent_ctx = trace.set_span_in_context(INVALID_SPAN, ctx)
            else:  # no span to hide from the sampler: the run starts a trace from ctx as it is
                parent_ctx = ctx
            plan: ReplayPlan | None = ctx.get(_REPLAY_KEY)  # type: ignore[assignment]
            if plan is not None:
                attributes[attr.REPLAY_OF] = plan.original_run_id
                attributes.update(plan.root_attributes)
                links = [*(links or []), *plan.links()]
            recording = True
            path, parent_path = spec.name, ""
            if spec.is_workflow:
                library = running_async_library()
                if library is not None:
                    attributes[attr.WORKFLOW_ASYNC_LIBRARY] = library
        else:
            self.is_root = False
            parent_ctx = ctx
            attributes[attr.RUN_ID] = run.run_id
            plan = run.replay
            # A sampled-out parent means a non-recording child: skip the capture work.
            recording = current.is_recording()
            path, occurrence = parent_frame.next_child(spec.name)
            parent_path = parent_frame.path
            if occurrence:
                attributes[attr.STEP_OCCURRENCE] = occurrence
        # Attributes are written just after the span starts, before the step's own code runs,
        # unless a sampler or span processor might read them at the start (see span_values).
        if recording:
            self._capture_inputs(args, kwargs, attributes, replaying=plan is not None)
            if self.is_root and self._lossy:  # known at the start: a killed run cannot say later
                attributes[attr.LOSSY] = ",".join(self._lossy)
        values: dict[str, AttributeValue]
        if rt.attributes_at_start():
            span = rt.tracer.start_span(
                spec.name, context=parent_ctx, attributes=attributes, links=links
            )
            values = {}
        else:
            span = rt.tracer.start_span(spec.name, context=parent_ctx, links=links)
            values = attributes
        self.span = span
        self.frame = CallFrame(path, span)
        if run is None:
            run_id = format(span.get_span_context().trace_id, "032x")
            values[attr.RUN_ID] = run_id
            run = RunState(run_id=run_id, root_span=span, replay=plan)
            if plan is not None:
                plan.new_run_id = run_id
        self.run = run
        if values and span.is_recording():
            set_values(span, values)
        self.ctx = _in_call(ctx, span, run, self.frame)
        self.token: object | None = otel_context.attach(self.ctx)
        if (
            plan is not None
            and not self.is_root
            and self._encoded_inputs is not None
            and span.is_recording()
        ):
            try:
                hit, value, stands_for = plan.reuse(
                    path,
                    parent_path,
                    spec.name,
                    spec.fn,
                    self._encoded_inputs,
                    self._states,
                    streams=spec.streams,
                    kind=spec.span_kind,
                )
                self.frame.path = stands_for  # its own calls are matched under that call
                if hit:
                    self.cached = True
                    self.cached_value = value
                    span.set_attribute(attr.REPLAY_CACHED, True)
            except StepRefused as exc:  # a check: the call must not run live; end its span
                self.fail(exc)
                raise
            except Exception:  # a broken lookup means "run it live", never a half-open span
                count("replay_errors")
                logger.warning(
                    "spanflow: replay lookup of %s failed; running it live", path, exc_info=True
                )

    # -- inputs -------------------------------------------------------------------------------

    def _capture_inputs(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        out: dict[str, AttributeValue],
        *,
        replaying: bool,
    ) -> None:
        spec = self.spec
        want_inputs = "inputs" in spec.capture and "inputs" in self.rt.settings.capture
        has_state = _has_state(args, kwargs)
        if not (want_inputs or has_state or replaying):
            return
        try:
            bound = spec.binder.bind(args, kwargs)
            if has_state:
                self._snapshot_states(bound, out)
            if want_inputs or replaying:
                enc = self._encode(attr.INPUT_VALUE, bound)
                self._encoded_inputs = enc
                if want_inputs:
                    out[attr.INPUT_VALUE] = enc.json
                    out[attr.INPUT_MIME_TYPE] = attr.JSON_MIME
        except Exception:
            count("capture_errors")
            logger.debug("spanflow: capturing inputs of %s failed", spec.name, exc_info=True)

    def _encode(self, key: str, value: Any) -> Encoded:
        settings = self.rt.settings
        enc = encode(value, max_bytes=settings.max_value_bytes, redactor=settings.redactor)
        if not enc.lossless:
            self._lossy.append(key)
        if enc.truncated:
            count("values_truncated")
        return enc

    def _snapshot_states(self, bound: dict[str, Any], out: dict[str, AttributeValue]) -> None:
        states = [(name, v) for name, v in bound.items() if isinstance(v, State)]
        for name, state in states:
            prefix = f"/{name}" if len(states) > 1 else ""
            self._states.append((prefix, state, _state_json(state, self.rt)))
        if self.is_root:
            initial: Any = (
                self._states[0][2]
                if len(states) == 1
                else {prefix[1:]: snap for prefix, _, snap in self._states}
            )
            redacted, _ = to_jsonable(initial, redactor=self.rt.settings.redactor)
            text = json.dumps(redacted)
            if len(text) > self.rt.settings.max_state_bytes:
                text = json.dumps({"__truncated__": True, "size": len(text)})
            out[attr.STATE_INITIAL] = text

    def _record_state_diff(self, result: Any) -> None:
        if not self._states:
            return
        try:
            ops: list[dict[str, Any]] = []
            for prefix, state, before in self._states:
                # A step may change the state in place, or return a new State of the same class.
                returned_new = (
                    len(self._states) == 1 and type(result) is type(state) and result is not state
                )
                after = _state_json(result if returned_new else state, self.rt)
                ops.extend(make_patch(before, after, prefix=prefix))
            # Snapshots are raw (cheap, exact for replay); only what is recorded is redacted.
            if self._redact_ops(ops):
                self._lossy.append(attr.STATE_DIFF)
            text = json.dumps(ops)  # ASCII escapes: lone surrogates stay valid UTF-8
            if len(text) > self.rt.settings.max_state_bytes:
                text = json.dumps(
                    [
                        {
                            "op": "test",
                            "path": "",
                            "value": {"__truncated__": True, "size": len(text)},
                        }
                    ]
                )
                self._lossy.append(attr.STATE_DIFF)
            set_values(self.span, {attr.STATE_DIFF: text})
        except Exception:
            count("capture_errors")
            logger.debug("spanflow: state diff of %s failed", self.spec.name, exc_info=True)

    def _redact_ops(self, ops: list[dict[str, Any]]) -> bool:
        """Redact the values of patch operations in place; True when anything was replaced."""
        redactor = self.rt.settings.redactor
        changed = False
        for op in ops:
            tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
            # A secret can be a key too (a cache keyed by API key): redact path tokens by shape.
            clean = [redactor.redact_text(t)[0] for t in tokens]
            if clean != tokens:
                op["path"] = "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in clean)
                changed = True
            if "value" not in op:
                continue
            if any(redactor.is_secret_key(t) for t in tokens):
                op["value"] = REDACTED
                changed = True
                continue
            value, flags = to_jsonable(op["value"], redactor=redactor)
            op["value"] = value
            changed = changed or flags.redacted
        return changed

    # -- outcome ------------------------------------------------------------------------------

    @property
    def records_output(self) -> bool:
        """Whether :meth:`succeed` will record the output (callers may skip collecting it)."""
        return self.span.is_recording() and self._captures_outputs()

    def _captures_outputs(self) -> bool:
        return "outputs" in self.spec.capture and "outputs" in self.rt.settings.capture

    def succeed(self, result: Any) -> None:
        """The call returned ``result``: record it and end the span."""
        span = self.span
        recording = span.is_recording()
        try:
            if recording:
                if self._captures_outputs():
                    enc = self._encode(attr.OUTPUT_VALUE, result)
                    set_values(
                        span, {attr.OUTPUT_VALUE: enc.json, attr.OUTPUT_MIME_TYPE: attr.JSON_MIME}
                    )
                if self._states:
                    self._record_state_diff(result)
        except Exception:
            count("capture_errors")
            logger.debug("spanflow: capturing output of %s failed", self.spec.name, exc_info=True)
        self._end(recording)

    def fail(self, exc: BaseException, *, received: list[Any] | None = None) -> None:
        """The call raised ``exc`` (which the caller re-raises unchanged): record it, end the span.

        ``received``: the items a generator's consumer took before it closed the generator."""
        span = self.span
        try:
            if self.run.replay is not None:
                self.run.replay.stopped(self.frame.path)
            if span.is_recording():
                self._record_state_diff(None)
                if is_cancellation(exc):
                    span.set_attribute(attr.CANCELLED, True)
                    span.add_event("cancelled")
                    if self.is_root:
                        span.set_status(Status(StatusCode.ERROR, "cancelled"))
                elif isinstance(exc, GeneratorExit):
                    span.set_attribute(attr.GENERATOR_CLOSED, True)
                    if received is not None and self.records_output:
                        enc = self._encode(attr.OUTPUT_VALUE, received)
                        set_values(
                            span,
                            {attr.OUTPUT_VALUE: enc.json, attr.OUTPUT_MIME_TYPE: attr.JSON_MIME},
                        )
                else:
                    record_failure(span, exc, self.rt.settings.redactor)
            if self.is_root and self.spec.is_workflow and not is_cancellation(exc):
                self._add_run_note(exc)
        except Exception:
            count("capture_errors")
            logger.debug(
                "spanflow: recording the failure of %s failed", self.spec.name, exc_info=True
            )
        self._end()

    def _add_run_note(self, exc: BaseException) -> None:
        if getattr(exc, _NOTE_MARK, None):
            return
        run_id = self.run.run_id
        db = self.rt.settings.db
        db_arg = ""
        if db is not None and str(db) != str(DEFAULT_DB):
            db_arg = f" --db {db}"
        try:
            setattr(exc, _NOTE_MARK, run_id)
            exc.add_note(
                f"spanflow: run {run_id} failed; inspect it with `spanflow show {run_id}{db_arg}`, "
                f"replay it with `spanflow replay {run_id}{db_arg}`"
            )
        except (AttributeError, TypeError):  # exceptions with __slots__ or frozen ones
            pass

    def _end(self, recording: bool | None = None) -> None:
        """Record what the call's end knows and end its span (``recording``: the span's
        ``is_recording()``, when the caller has just asked)."""
        span = self.span
        try:
            if recording is None:
                recording = span.is_recording()
            if self._lossy and recording:
                span.set_attribute(attr.LOSSY, ",".join(self._lossy))
            if self.is_root and recording:
                run = self.run
                if run.input_tokens or run.output_tokens:
                    span.set_attribute(attr.GEN_AI_INPUT_TOKENS, run.input_tokens)
                    span.set_attribute(attr.GEN_AI_OUTPUT_TOKENS, run.output_tokens)
                if run.replay is not None:
                    set_values(span, run.replay.closing_attributes())
        except Exception:
            count("capture_errors")
        self.suspend()
        end_span(span)

    def suspend(self) -> None:
        """Make the caller's context current again (generators do this at every ``yield``)."""
        token, self.token = self.token, None
        if token is not None:
            try:
                otel_context.detach(token)  # type: ignore[arg-type]
            except Exception:  # detaching in another context (e.g. a generator closed elsewhere)
                count("context_errors")

    def resume(self) -> None:
        """Make this call's span and run current again (a generator is being resumed)."""
        if self.token is None:
            self.token = otel_context.attach(self.ctx)

    # -- attempts -----------------------------------------------------------------------------

    def start_attempt(self, number: int) -> tuple[Span, object]:
        """Open the span of attempt ``number`` as the current span (steps inside nest under it)."""
        attributes: dict[str, str | int] = {
            attr.RUN_ID: self.run.run_id,
            attr.STEP_NAME: self.spec.name,
            attr.STEP_TYPE: attr.STEP_TYPE_ATTEMPT,
            attr.ATTEMPT_NUMBER: number,
        }
        span = self.rt.tracer.start_span(f"{self.spec.name} #{number}", attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    def end_attempt(self, span: Span, token: object, exc: BaseException | None) -> None:
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
        except Exception:
            count("context_errors")
        if exc is not None:
            try:
                record_failure(span, exc, self.rt.settings.redactor)
            except Exception:
                count("capture_errors")

    def handled(self, exc: BaseException) -> None:
        """A failure the fallback or default may absorb: an ``exception`` event, not ERROR."""
        try:
            record_exception(self.span, exc, self.rt.settings.redactor, escaped=False)
        except Exception:
            count("capture_errors")

    def mark(self, key: str) -> None:
        """Set a boolean flag such as ``spanflow.fallback.used`` on this call's span."""
        if self.span.is_recording():
            self.span.set_attribute(key, True)
