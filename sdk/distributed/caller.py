"""The caller side of a remote step: send it with the trace context, take its spans back.

:class:`RemoteFunction` wraps one function and one executor. Each call injects W3C trace context
(plus the run id and call path) into a plain dict, ships the function as a reference or by value
with its arguments, waits for the :class:`~spanflow.distributed.task.Outcome`, re-creates the worker's spans
as ordinary finished spans of the caller's provider (so the store, OTLP and the application's own
processors all see one trace), and returns the value or raises :class:`RemoteStepError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import pickle
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from .. import runtime
from .._stats import count
from ..context import RunState, current_frame, current_run
from ..errors import RemoteStepError, StepTimeout
from ..state import State, adopt
from . import executors
from .task import (
    PATH_KEY,
    PROPAGATOR,
    RUN_KEY,
    Outcome,
    Task,
    WorkerConfig,
    process_identity,
    redactor_state,
    shippable,
)
from .wire import Decoder, WireSpan
from .worker import run_task

logger = logging.getLogger("spanflow")


_configs: weakref.WeakKeyDictionary[runtime.Runtime, WorkerConfig] = weakref.WeakKeyDictionary()
_configs_lock = threading.Lock()
_decoder = Decoder()


class RemoteFunction:
    """Calls ``fn`` on ``executor`` as a continuation of the caller's trace.

    Args:
        fn: the function to run remotely (a step's undecorated function, or any callable).
        executor: a ``concurrent.futures.Executor`` or :class:`spanflow.RayExecutor`.
        name: the name of the worker's span (``run/<name>``).
        resources: Ray task options (``num_gpus``, custom resources); other engines ignore them.
        timeout: seconds the synchronous call waits before raising ``StepTimeout``.
    """

    __slots__ = ("_target", "executor", "fn", "name", "resources", "timeout")

    def __init__(
        self,
        fn: Callable[..., Any],
        executor: Any,
        *,
        name: str,
        resources: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.fn = fn
        self.executor = executor
        self.name = name
        self.resources = resources
        self.timeout = timeout
        self._target: Any = None

    @property
    def target(self) -> Any:
        """What is sent for ``fn``, found at the first call (a decorator runs before its module
        attribute is bound, so at decoration time a step's function is not reachable by name)."""
        target = self._target
        if target is None:
            target = shippable(self.fn, self.executor)
            if target is not self.fn:
                self._target = target  # a reference stays valid; anything else is looked at again
        return target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sent = self._send(args, kwargs)
        if self.timeout is not None:
            done, _ = concurrent.futures.wait([sent.future], timeout=self.timeout)
            if not done:
                sent.abandon()
                raise StepTimeout(f"step {self.name!r} timed out after {self.timeout:g}s")
        try:
            outcome = sent.future.result()
        except BaseException as exc:
            _explain(exc, self.executor, sent)
            raise
        return sent.finish(outcome)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Like calling it, but awaits the result without blocking the event loop."""
        sent = self._send(args, kwargs)
        try:
            outcome = await _wait(sent.future)
        except BaseException as exc:
            if sent.future.done():
                _explain(exc, self.executor, sent)
            else:
                sent.abandon()  # cancelled or timed out from outside: the task need not finish
            raise
        return sent.finish(outcome)

    def _send(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Sent:
        rt = runtime.get_runtime()
        ctx = otel_context.get_current()
        carrier: dict[str, str] | None = None
        config: WorkerConfig | None = None
        run: RunState | None = None
        if rt.enabled and isinstance(rt.provider, TracerProvider):
            try:
                carrier, run = _carrier(ctx)
                config = worker_config(rt)
            except Exception:
                count("remote_context_errors")
                logger.exception("spanflow: could not send the trace context with %s", self.name)
                carrier = config = None
        task = Task(
            target=self.target,
            name=self.name,
            args=args,
            kwargs=kwargs,
            carrier=carrier,
            config=config,
            caller=process_identity(),
            context=ctx,
        )
        future, cancel = executors.submit(self.executor, run_task, task, self.resources)
        return _Sent(self.name, future, cancel, rt, run, args, kwargs, config, task.target)


class _Sent:
    """One submitted task, until its outcome is taken in."""

    __slots__ = ("args", "cancel", "config", "future", "kwargs", "name", "rt", "run", "target")

    def __init__(
        self,
        name: str,
        future: concurrent.futures.Future[Any],
        cancel: Callable[[], None],
        rt: runtime.Runtime,
        run: RunState | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: WorkerConfig | None,
        target: Any,
    ) -> None:
        self.target = target
        self.name = name
        self.future = future
        self.cancel = cancel
        self.rt = rt
        self.run = run
        self.args = args
        self.kwargs = kwargs
        self.config = config

    def abandon(self) -> None:
        """Stop waiting: cancel the task if it has not started, keep its spans if it still ends."""
        if not self.future.done():
            self.cancel()
        self.future.add_done_callback(self._late)

    def _late(self, future: concurrent.futures.Future[Any]) -> None:
        try:
            if future.cancelled() or future.exception() is not None:
                return
            outcome = future.result()
            if isinstance(outcome, Outcome) and outcome.spans:
                import_spans(self.rt, outcome.spans, worker_exports=self._worker_exports)
        except Exception:
            count("remote_span_errors")
            logger.debug("spanflow: spans of an abandoned task were lost", exc_info=True)

    @property
    def _worker_exports(self) -> bool:
        return bool(self.config and self.config.otlp)

    def finish(self, outcome: Any) -> Any:
        if not isinstance(outcome, Outcome):
            raise RemoteStepError(
                type(outcome).__name__,
                f"the executor returned {type(outcome).__name__}, not a task outcome",
            )
        if outcome.spans:
            import_spans(self.rt, outcome.spans, worker_exports=self._worker_exports)
        if self.run is not None and outcome.usage != (0, 0):
            self.run.add_usage(*outcome.usage)
        if outcome.states:
            _adopt_states(self.args, self.kwargs, outcome.states)
        if outcome.error is not None:
            raise remote_error(self.name, outcome)
        return outcome.value


def _carrier(ctx: otel_context.Context) -> tuple[dict[str, str], RunState | None]:
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=ctx)
    run = current_run(ctx)
    if run is not None:
        carrier[RUN_KEY] = run.run_id
        frame = current_frame(ctx)
        if frame is not None:
            carrier[PATH_KEY] = frame.path
    return carrier, run


def worker_config(rt: runtime.Runtime) -> WorkerConfig:
    """The settings a worker records with, derived once per runtime."""
    config = _configs.get(rt)
    if config is not None:
        return config
    with _configs_lock:
        config = _configs.get(rt)
        if config is None:
            config = _configs[rt] = _new_config(rt)
        return config


def _new_config(rt: runtime.Runtime) -> WorkerConfig:
    settings = rt.settings
    provider = rt.provider
    resource = dict(provider.resource.attributes) if isinstance(provider, TracerProvider) else {}
    otlp: dict[str, Any] | None = None
    if settings.worker_otlp:
        endpoint = (
            settings.otlp_endpoint
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        if endpoint:
            otlp = {
                "endpoint": endpoint,
                "protocol": settings.otlp_protocol,
                "headers": dict(settings.otlp_headers) if settings.otlp_headers else None,
                "timeout": settings.otlp_timeout,
            }
    return WorkerConfig(
        key=uuid.uuid4().hex,
        capture=settings.capture,
        max_value_bytes=settings.max_value_bytes,
        max_state_bytes=settings.max_state_bytes,
        redactor=redactor_state(settings.redactor),
        log_level=settings.log_level,
        resource=resource,
        otlp=otlp,
    )


def import_spans(
    rt: runtime.Runtime, wires: Sequence[WireSpan], *, worker_exports: bool = False
) -> None:
    """Hand a worker's finished spans to the caller's span processors, as if they ended here.

    With ``worker_exports`` the workers already sent them over OTLP, so spanflow's own OTLP
    exporter is skipped (the store and the application's processors still get them).
    """
    provider = rt.provider
    if not isinstance(provider, TracerProvider):
        return
    try:
        spans = _decoder.decode_all(wires)
        targets = _targets(rt, provider, worker_exports)
    except Exception:
        count("remote_span_errors")
        logger.exception("spanflow: could not re-create the spans of a remote step")
        return
    for span in spans:
        for processor in targets:
            try:
                processor.on_end(span)
            except Exception:
                count("remote_span_errors")
                logger.exception("spanflow: span processor %r refused a worker span", processor)


def _targets(
    rt: runtime.Runtime, provider: TracerProvider, worker_exports: bool
) -> Sequence[SpanProcessor]:
    active = provider._active_span_processor
    if not worker_exports:
        return (active,)
    forwarder = runtime.forwarder_of(provider)
    targets: list[SpanProcessor] = [p for p in active._span_processors if p is not forwarder]
    if rt.store is not None:
        to_store = runtime.Forwarder()  # the store gets them scrubbed, as through the forwarder
        to_store.use((rt.store,), rt.settings.redactor)
        targets.append(to_store)
    return targets


def remote_error(name: str, outcome: Outcome) -> RemoteStepError:
    """The caller-side exception for a failed task, with the worker's traceback as a note."""
    assert outcome.error is not None
    type_name, message, stack = outcome.error
    error = RemoteStepError(type_name, message, stack)
    host, pid = outcome.worker
    where = f" in worker pid {pid} on {host}" if pid else ""
    error.add_note(
        f"spanflow: step {name!r} raised {type_name}{where}; the worker's traceback:\n{stack}"
    )
    if outcome.cause is not None:
        error.__cause__ = outcome.cause
    return error


def _adopt_states(
    args: tuple[Any, ...], kwargs: dict[str, Any], states: Mapping[int | str, State]
) -> None:
    """Copy the worker's version of each State argument onto the caller's object."""
    for key, changed in states.items():
        original = args[key] if isinstance(key, int) and key < len(args) else kwargs.get(str(key))
        if not (isinstance(original, State) and type(original) is type(changed)):
            continue
        try:
            adopt(original, changed)
        except Exception:
            count("remote_state_errors")
            logger.warning(
                "spanflow: could not bring back the changes made to %s", key, exc_info=True
            )


def _explain(exc: BaseException, executor: Any, sent: _Sent) -> None:
    """Say what could not be pickled when the executor itself failed (not the step) over pickling.

    The note names what is actually at fault: the function, an argument, or (when everything the
    caller sends pickles) the way back, i.e. the return value.
    """
    if isinstance(exc, RemoteStepError) or "pickl" not in f"{type(exc).__name__} {exc}".lower():
        return
    with contextlib.suppress(Exception):
        exc.add_note(
            f"spanflow: step {sent.name!r} could not run on {executor!r}: {_culprit(sent)}"
        )


def _culprit(sent: _Sent) -> str:
    target = sent.target
    qualname = getattr(target, "__qualname__", "") or ""
    if "<lambda>" in qualname or "<locals>" in qualname:
        return (
            f"{qualname} is a lambda or a local function, which the standard pickler sends by "
            "name only; define it at module level (cloudpickle-based engines such as Ray and "
            "Dask take it as it is)"
        )
    if _refused(target):
        return f"its function {qualname or target!r} cannot be pickled"
    for key, value in (*enumerate(sent.args), *sent.kwargs.items()):
        if _refused(value):
            where = f"argument {key!r}" if isinstance(key, str) else f"positional argument {key}"
            return f"{where} ({type(value).__name__}) cannot be pickled; pass data that pickles"
    return (
        "what it sends pickles here, so what failed was on the worker's side or on the way "
        "back: the step's return value (and State arguments) must pickle too"
    )


def _refused(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return True
    return False


async def _wait(future: concurrent.futures.Future[Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio: wait in a worker thread, which a cancellation abandons
        return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
    return await asyncio.wrap_future(future)
