"""The worker side of a remote step: run it under the caller's trace and send its spans back.

A :class:`~spanflow.distributed.task.Task` carries the function, its arguments, a W3C trace-context
carrier (plus the run id and call path) and the caller's recording settings. :func:`run_task`
runs in the worker process (a pool process, a Ray worker, a Dask worker): it continues the
caller's trace under a ``run/<name>`` span, collects every span that ends during the call (nested
steps and libraries using the global tracer), and returns them with the result or the error
(an :class:`~spanflow.distributed.task.Outcome`).

The worker never opens the store: whatever it inherited (a forked pool process gets the caller's
span processors and SQLite connection; spawned and Ray workers inherit ``SPANFLOW_DB``), its
processors are replaced by one that collects spans for the caller. Only when the caller asks for
it does a worker also export over OTLP itself, so spans survive a worker that dies mid-task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import HOST_NAME, PROCESS_PID, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

from .. import attributes as attr
from .. import runtime
from .._stats import count
from ..config import Settings
from ..context import CallFrame, RunState, current_run, with_run
from ..recording.failures import format_user_traceback, message_of, record_failure, type_name
from ..state import State
from ..values.redact import Redactor
from .task import (
    PATH_KEY,
    PROPAGATOR,
    RUN_KEY,
    FunctionRef,
    Outcome,
    Task,
    WorkerConfig,
    process_identity,
    rebuild_redactor,
)
from .wire import WireSpan, encode

logger = logging.getLogger("spanflow")

_HOST = socket.gethostname()


# -- collecting the spans of each task -----------------------------------------------------------


class _Collected:
    """The spans of one task, in the order they ended."""

    __slots__ = ("closed", "ids", "spans")

    def __init__(self) -> None:
        self.spans: list[WireSpan] = []
        self.ids: list[int] = []
        self.closed = False


_collecting: contextvars.ContextVar[_Collected | None] = contextvars.ContextVar(
    "spanflow_collecting", default=None
)


class _Capture(SpanProcessor):
    """Assigns every span to the task it belongs to (by its parent, else by context) and keeps it.

    Several tasks may run at once in one worker (Dask threads, Ray async actors), also of the
    same trace, so spans are told apart by ancestry rather than by trace id.
    """

    def __init__(self) -> None:
        self._owner: dict[int, _Collected] = {}
        self._resources: dict[int, tuple[Resource, dict[str, Any]]] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            parent = span.parent
            task = self._owner.get(parent.span_id) if parent is not None else None
            if task is None:
                task = _collecting.get()
            if task is not None and span.context is not None:
                self._owner[span.context.span_id] = task
                task.ids.append(span.context.span_id)
        except Exception:
            count("remote_capture_errors")

    def on_end(self, span: ReadableSpan) -> None:
        try:
            ctx = span.context
            if ctx is None:
                return
            task = self._owner.get(ctx.span_id)
            resource: Mapping[str, Any] | None = None
            if task is None and span.parent is not None:
                # Spans re-created from a nested remote call end here without having started;
                # they keep the resource (pid, host) of the worker that recorded them.
                task = self._owner.get(span.parent.span_id)
                if task is not None:
                    self._owner[ctx.span_id] = task
                    task.ids.append(ctx.span_id)
                    resource = dict(span.resource.attributes)
            if task is None or task.closed:
                return
            wire = encode(span, resource if resource is not None else self._resource(span))
            if wire is not None:
                task.spans.append(wire)
        except Exception:
            count("remote_capture_errors")
            logger.debug("spanflow: collecting a worker span failed", exc_info=True)

    def _resource(self, span: ReadableSpan) -> dict[str, Any]:
        # Which process ran it: the worker's pid and host on top of the caller's service.
        resource = span.resource
        hit = self._resources.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
        merged = {**resource.attributes, PROCESS_PID: os.getpid(), HOST_NAME: _HOST}
        self._resources[id(resource)] = (resource, merged)
        return merged

    def finish(self, task: _Collected) -> list[WireSpan]:
        """Stop collecting for ``task``; its spans, parents before children (by start time)."""
        task.closed = True
        for span_id in task.ids:
            self._owner.pop(span_id, None)
        return sorted(task.spans, key=lambda w: w[7] or 0)

    def shutdown(self) -> None:
        self._owner.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# -- the worker's own recording setup -----------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    pid: int
    key: str
    rt: runtime.Runtime
    redactor: Redactor


_capture = _Capture()
_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _prepare(config: WorkerConfig) -> _Worker:
    """Set this process up to record for the caller (once per process and configuration)."""
    global _worker
    w = _worker
    if w is not None and w.pid == os.getpid() and w.key == config.key:
        return w
    with _worker_lock:
        w = _worker
        if w is not None and w.pid == os.getpid() and w.key == config.key:
            return w
        redactor = rebuild_redactor(config.redactor)
        processors: list[SpanProcessor] = [_capture]
        if config.otlp is not None:
            exporter = runtime.otlp_exporter(**config.otlp)
            if exporter is not None:
                # Spans leave this process over OTLP too: scrubbed as the caller would.
                forwarder = runtime.Forwarder()
                forwarder.use((exporter,), redactor)
                processors.append(forwarder)
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            # Inherited over fork (the caller's own processors and store) or installed by the
            # application's modules: replace them in place, so tracers already handed out by this
            # provider report to us too, and nothing writes the store from here.
            multi = provider._active_span_processor
            with multi._lock:
                multi._span_processors = tuple(processors)
            runtime.forget_forwarder(provider)
        else:
            provider = TracerProvider(resource=Resource(dict(config.resource)))
            for p in processors:
                provider.add_span_processor(p)
            trace.set_tracer_provider(provider)
        settings = Settings(
            enabled=True,
            db=None,
            capture=config.capture,
            max_value_bytes=config.max_value_bytes,
            max_state_bytes=config.max_state_bytes,
            redactor=redactor,
            log_level=config.log_level,
        )
        from .. import __version__

        rt = runtime.Runtime(
            settings=settings,
            tracer=provider.get_tracer("spanflow", __version__),
            provider=provider,
            processors=tuple(processors[1:]),
        )
        runtime.install(
            rt
        )  # the inherited runtime's processors belong to the caller: not shut down
        _worker = _Worker(pid=os.getpid(), key=config.key, rt=rt, redactor=redactor)
        return _worker


# -- running a task --------------------------------------------------------------------------------


def run_task(task: Task) -> Outcome:
    """Run ``task`` in this process and report what happened; never raises.

    This is the function executors run: ``executor.submit(run_task, task)``.
    """
    if task.caller == process_identity():
        return _run_here(task)
    try:
        fn = _resolve(task.target)
    except BaseException as exc:
        return Outcome(error=_error_data(exc), worker=_where())
    if task.carrier is None or task.config is None:
        return _run_plain(fn, task)
    try:
        worker = _prepare(task.config)
    except Exception:
        count("remote_setup_errors")
        logger.exception("spanflow: could not set up recording in this worker; running unrecorded")
        return _run_plain(fn, task)
    return _run_recorded(fn, task, worker)


def _resolve(target: Any) -> Callable[..., Any]:
    if isinstance(target, FunctionRef):
        return target.resolve()
    return target  # type: ignore[no-any-return]


def _run_plain(fn: Callable[..., Any], task: Task) -> Outcome:
    try:
        value = _invoke(fn, task.args, task.kwargs)
    except BaseException as exc:
        return Outcome(error=_error_data(exc), worker=_where())
    return Outcome(value=value, states=_states(task), worker=_where())


def _run_recorded(fn: Callable[..., Any], task: Task, worker: _Worker) -> Outcome:
    collected = _Collected()
    collecting = _collecting.set(collected)
    try:
        value, failure, run = _call_traced(fn, task, worker.rt.tracer, worker.redactor, None)
    finally:
        _collecting.reset(collecting)
    return Outcome(
        value=value,
        error=_error_data(failure) if failure is not None else None,
        spans=_capture.finish(collected),
        usage=(run.input_tokens, run.output_tokens) if run is not None else (0, 0),
        states=_states(task),
        worker=_where(),
    )


def _run_here(task: Task) -> Outcome:
    """A task that landed in the caller's own process (a thread pool): record directly."""
    try:
        fn = _resolve(task.target)
    except BaseException as exc:
        return Outcome(error=_error_data(exc), cause=exc)
    rt = runtime.get_runtime()
    if not rt.enabled or task.carrier is None:
        outcome = _run_plain(fn, task)
        outcome.states = None  # the caller's own objects: nothing to copy back
        return outcome
    value, failure, run = _call_traced(fn, task, rt.tracer, rt.settings.redactor, task.context)
    if failure is not None:
        return Outcome(error=_error_data(failure), worker=_where(), cause=failure)
    usage = (run.input_tokens, run.output_tokens) if run is not None else (0, 0)
    return Outcome(value=value, usage=usage, worker=_where())


def _call_traced(
    fn: Callable[..., Any],
    task: Task,
    tracer: trace.Tracer,
    redactor: Redactor,
    local: Context | None,
) -> tuple[Any, BaseException | None, RunState | None]:
    """Call ``fn`` under a ``run/<name>`` span continuing the caller's trace.

    ``local`` is the caller's own context when the task runs in the caller's process: the run
    and call frame are then the caller's objects. Otherwise they are rebuilt from the carrier,
    and the new RunState (whose token totals go back to the caller) is returned.
    """
    carrier = task.carrier or {}
    span: Any = None
    token: object | None = None
    run: RunState | None = None
    try:
        if local is not None:
            parent_ctx, run_id = local, None
            caller_run = current_run(local)
            attributes = {attr.RUN_ID: caller_run.run_id} if caller_run is not None else None
        else:
            parent_ctx = PROPAGATOR.extract(carrier, context=Context())
            run_id = carrier.get(RUN_KEY)
            attributes = {attr.RUN_ID: run_id} if run_id else None
        span = tracer.start_span(
            f"run/{task.name}", context=parent_ctx, kind=SpanKind.CONSUMER, attributes=attributes
        )
        ctx = trace.set_span_in_context(span, parent_ctx)
        if run_id:
            # The run and call path continue the caller's: nested steps belong to its run and are
            # numbered under the caller's step, as they would be in one process.
            run = RunState(run_id=run_id, root_span=span)
            ctx = with_run(ctx, run, CallFrame(path=carrier.get(PATH_KEY, task.name), span=span))
        token = otel_context.attach(ctx)
    except Exception:
        count("remote_capture_errors")
        logger.exception("spanflow: could not start the worker span of %s", task.name)
    try:
        return _invoke(fn, task.args, task.kwargs), None, run
    except BaseException as exc:
        if span is not None:
            _record_failure(span, exc, redactor)
        return None, exc, run
    finally:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        if span is not None:
            span.end()


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = fn(*args, **kwargs)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        return _run_coroutine(result)
    return result


def _run_coroutine(awaitable: Any) -> Any:
    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    # An event loop already runs in this thread (an async actor): give the step its own.
    ctx = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spanflow-async") as pool:
        return pool.submit(ctx.run, asyncio.run, wait()).result()


def _states(task: Task) -> dict[int | str, State] | None:
    # State changes made in the worker go back to the caller's objects (pickling made copies).
    found: dict[int | str, State] = {}
    for index, value in enumerate(task.args):
        if isinstance(value, State):
            found[index] = value
    for name, value in task.kwargs.items():
        if isinstance(value, State):
            found[name] = value
    return found or None


def _error_data(exc: BaseException) -> tuple[str, str, str]:
    return (type_name(exc), message_of(exc), format_user_traceback(exc))


def _record_failure(span: Any, exc: BaseException, redactor: Redactor) -> None:
    try:
        record_failure(span, exc, redactor)
    except Exception:
        count("remote_capture_errors")


def _where() -> tuple[str, int]:
    return (_HOST, os.getpid())
