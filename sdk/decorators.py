"""``@step`` and ``@workflow``: wrap a callable so every call is a recorded span.

The wrapped callable keeps its name, docstring, signature and kind (plain, coroutine, generator,
async generator); it returns what the original returns and raises what it raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import logging
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from concurrent.futures import Executor
from typing import Any, Literal, ParamSpec, TypeVar, overload

import anyio

from . import attributes as attr
from . import runtime
from ._stats import count
from .distributed.caller import RemoteFunction
from .errors import ConfigurationError, StepTimeout
from .recording.call import StepCall, end_span
from .recording.retry import RetryArg
from .recording.spec import MISSING, StepSpec, build_spec, check_executor, default_name, spec_of

logger = logging.getLogger("spanflow")

P = ParamSpec("P")
R = TypeVar("R")
Kind = Literal[
    "chain", "llm", "tool", "retriever", "embedding", "agent", "reranker", "guardrail", "evaluator"
]
_MAX_GENERATOR_ITEMS = 200


@overload
def step(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def step(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    kind: Kind | str | None = None,
    retries: int | None = None,
    retry: RetryArg = None,
    timeout: float | None = None,
    fallback: Callable[..., Any] | None = None,
    default: Any = MISSING,
    capture: str | bool | None = None,
    executor: Executor | None = None,
    resources: Mapping[str, Any] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def step(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    kind: Kind | str | None = None,
    retries: int | None = None,
    retry: RetryArg = None,
    timeout: float | None = None,
    fallback: Callable[..., Any] | None = None,
    default: Any = MISSING,
    capture: str | bool | None = None,
    executor: Executor | None = None,
    resources: Mapping[str, Any] | None = None,
) -> Any:
    """Record every call of the decorated function as a span (a *step* of a run).

    Use it bare (``@spanflow.step``) or with options. Works on functions, coroutine functions,
    generators, async generators, methods, classmethods and staticmethods, and on existing
    callables (``spanflow.step(textwrap.wrap)``).

    Args:
        name: span and step name (default: the function's ``__name__``).
        kind: OpenInference span kind: ``"llm"``, ``"tool"``, ``"retriever"``, ... (default chain).
        retries: retries after the first attempt (N+1 attempts in all), exponential backoff.
        retry: tenacity strategies (stop, wait, retry condition, a tuple of them, or a
            ``tenacity.Retrying``); every attempt becomes a child span.
        timeout: seconds per attempt; raises ``spanflow.StepTimeout``. Async steps are
            cancelled; sync steps run in a worker thread that is abandoned (not killed) on timeout.
        fallback: called with the step's arguments once the attempts are spent.
        default: returned when the attempts (and the fallback) fail.
        capture: ``"all"`` (default), ``"inputs"``, ``"outputs"`` or ``"none"``.
        executor: run the function's body elsewhere: a ``concurrent.futures.Executor``
            (``ProcessPoolExecutor``, Dask's ``client.get_executor()``) or
            ``spanflow.RayExecutor()``. The step span stays with the caller and the worker's
            spans join its trace; a failure is raised as ``spanflow.RemoteStepError``.
        resources: Ray task options for the remote body (``{"num_gpus": 1}``, custom
            resources); other executors ignore them.
    """
    options = dict(
        name=name,
        kind=kind,
        retries=retries,
        retry=retry,
        timeout=timeout,
        fallback=fallback,
        default=default,
        capture=capture,
        executor=executor,
        resources=resources,
    )
    if fn is not None:
        return _decorate(fn, attr.STEP_TYPE_STEP, options)
    return lambda f: _decorate(f, attr.STEP_TYPE_STEP, options)


@overload
def workflow(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def workflow(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    kind: Kind | str | None = None,
    retries: int | None = None,
    retry: RetryArg = None,
    timeout: float | None = None,
    fallback: Callable[..., Any] | None = None,
    default: Any = MISSING,
    capture: str | bool | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def workflow(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    kind: Kind | str | None = None,
    retries: int | None = None,
    retry: RetryArg = None,
    timeout: float | None = None,
    fallback: Callable[..., Any] | None = None,
    default: Any = MISSING,
    capture: str | bool | None = None,
) -> Any:
    """Like :func:`step`, but a call is a *run*: the root span of a new trace, with a run id.

    A workflow called inside another run is recorded as a nested workflow span of that run. An
    exception leaving a run gets a note naming the run id and the commands that show and replay it.
    Takes the same options as :func:`step`.
    """
    options = dict(
        name=name,
        kind=kind,
        retries=retries,
        retry=retry,
        timeout=timeout,
        fallback=fallback,
        default=default,
        capture=capture,
    )
    if fn is not None:
        return _decorate(fn, attr.STEP_TYPE_WORKFLOW, options)
    return lambda f: _decorate(f, attr.STEP_TYPE_WORKFLOW, options)


def _decorate(fn: Any, step_type: str, options: dict[str, Any]) -> Any:
    if isinstance(fn, (classmethod, staticmethod)):
        return type(fn)(_decorate(fn.__func__, step_type, options))
    if not callable(fn):
        raise ConfigurationError(
            f"@spanflow.{step_type} decorates callables, not {type(fn).__name__}"
        )
    spec = build_spec(fn, step_type, options)
    target: Any = fn
    if spec.executor is not None:
        target = _remote_body(spec, spec.executor, asynchronous=inspect.iscoroutinefunction(fn))
    call_attr = getattr(fn, "__call__", None)  # noqa: B004 - we need the bound __call__ itself
    if inspect.isasyncgenfunction(fn) or (
        not inspect.isfunction(fn) and inspect.isasyncgenfunction(call_attr)
    ):
        wrapper: Any = _async_gen_wrapper(target, spec)
    elif inspect.isgeneratorfunction(fn) or (
        not inspect.isfunction(fn) and inspect.isgeneratorfunction(call_attr)
    ):
        wrapper = _gen_wrapper(target, spec)
    elif inspect.iscoroutinefunction(fn) or (
        not inspect.isfunction(fn) and inspect.iscoroutinefunction(call_attr)
    ):
        wrapper = _async_wrapper(target, spec)
    else:
        if spec.fallback is not None and inspect.iscoroutinefunction(spec.fallback):
            raise ConfigurationError(
                f"step {spec.name!r} is synchronous but its fallback is a coroutine function; "
                "make the fallback synchronous or the step async"
            )
        wrapper = _sync_wrapper(target, spec)
    try:
        functools.update_wrapper(wrapper, fn)
    except (AttributeError, TypeError):
        wrapper.__wrapped__ = fn
    if not getattr(wrapper, "__name__", None) or isinstance(fn, functools.partial):
        wrapper.__name__ = spec.name
        wrapper.__qualname__ = spec.name
    wrapper.__spanflow_spec__ = spec
    return wrapper


def _remote_body(spec: StepSpec, executor: Any, *, asynchronous: bool) -> Any:
    remote = RemoteFunction(
        spec.fn,
        executor,
        name=spec.name,
        resources=spec.resources,
        timeout=None if asynchronous else spec.timeout,
    )
    return remote.acall if asynchronous else remote


def on_executor(fn: Callable[..., Any], executor: Any) -> Callable[..., Awaitable[Any]]:
    """``fn`` as a coroutine function whose body runs on ``executor`` (``parallel``/``map``).

    A step keeps its span on the caller's side, as with ``@step(executor=...)``; any other
    callable gets only the worker's ``run/<name>`` span.
    """
    check_executor(executor, where="spanflow.parallel/map")
    bound_self = getattr(fn, "__self__", None) if inspect.ismethod(fn) else None
    spec = spec_of(fn)
    if spec is None:
        return _remote_body_of_callable(fn, executor)
    if inspect.isgeneratorfunction(spec.fn) or inspect.isasyncgenfunction(spec.fn):
        raise ConfigurationError(f"step {spec.name!r} is a generator; it cannot run on an executor")
    spec = dataclasses.replace(spec, executor=executor)
    wrapper = _async_wrapper(_remote_body(spec, executor, asynchronous=True), spec)
    if bound_self is not None:
        return functools.partial(wrapper, bound_self)
    return wrapper


def _remote_body_of_callable(
    fn: Callable[..., Any], executor: Any
) -> Callable[..., Awaitable[Any]]:
    return RemoteFunction(fn, executor, name=default_name(fn)).acall


def _begin(spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepCall | None:
    """Start the call's span, or None when recording is off or cannot start."""
    try:
        rt = runtime.get_runtime()
        if not rt.settings.enabled:
            return None
        return StepCall(spec, rt, args, kwargs)
    except Exception:
        count("span_start_errors")
        logger.exception(
            "spanflow: could not start the span of %s; calling it unrecorded", spec.name
        )
        return None


# -- plain functions -------------------------------------------------------------------------


def _sync_wrapper(fn: Callable[..., Any], spec: StepSpec) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = _begin(spec, args, kwargs)
        if call is None:
            return fn(*args, **kwargs)
        if call.cached:
            call.succeed(call.cached_value)
            return call.cached_value
        try:
            result = _run_sync(call, fn, args, kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        call.succeed(result)
        return result

    return wrapper


def _run_sync(
    call: StepCall, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    spec = call.spec

    def once() -> Any:
        if spec.timeout is None or spec.executor is not None:  # a remote body times out itself
            return fn(*args, **kwargs)
        return _call_in_thread(fn, args, kwargs, spec)

    try:
        return once() if spec.policy is None else _attempts_sync(call, once)
    except Exception as exc:
        if not spec.handles_failure:
            raise
        call.handled(exc)
        if spec.fallback is not None:
            try:
                result = spec.fallback(*args, **kwargs)
            except Exception as fallback_exc:
                if spec.default is MISSING:
                    raise
                call.handled(fallback_exc)
            else:
                call.mark(attr.FALLBACK_USED)
                return result
        call.mark(attr.DEFAULT_USED)
        return spec.default


def _call_in_thread(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], spec: StepSpec
) -> Any:
    """Run a sync attempt in a worker thread and stop waiting for it at the timeout.

    Python cannot interrupt a running thread; on timeout the thread is abandoned (it runs to
    completion in the background and its result is discarded) and StepTimeout is raised.
    """
    ctx = contextvars.copy_context()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = ctx.run(fn, *args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"spanflow-timeout:{spec.name}", daemon=True).start()
    if not done.wait(spec.timeout):
        raise StepTimeout(f"step {spec.name!r} timed out after {spec.timeout:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _attempts_sync(call: StepCall, once: Callable[[], Any]) -> Any:
    assert call.spec.policy is not None
    tracker = _AttemptTracker(call)
    controller = call.spec.policy.controller(asynchronous=False, before_sleep=tracker.before_sleep)
    try:
        for attempt in controller:
            escape = None
            with attempt:
                escape = tracker.run_sync(once)
            if escape is not None:
                raise escape
        return tracker.result
    except Exception as exc:
        tracker.note(exc)
        raise
    finally:
        tracker.close()


class _AttemptTracker:
    """Opens one child span per attempt and closes it once tenacity has decided what follows."""

    def __init__(self, call: StepCall) -> None:
        self.call = call
        self.number = 0
        self.pending: Any = None
        self.result: Any = None

    def _start(self) -> object:
        self.number += 1
        span, token = self.call.start_attempt(self.number)
        self.pending = span
        return token

    def run_sync(self, once: Callable[[], Any]) -> BaseException | None:
        token = self._start()
        try:
            self.result = once()
        except Exception as exc:
            self.call.end_attempt(self.pending, token, exc)
            raise  # tenacity judges it
        except BaseException as exc:  # cancellation / interrupts are not tenacity's to retry
            self.call.end_attempt(self.pending, token, exc)
            return exc
        self.call.end_attempt(self.pending, token, None)
        return None

    async def run_async(self, once: Callable[[], Awaitable[Any]]) -> BaseException | None:
        token = self._start()
        try:
            self.result = await once()
        except Exception as exc:
            self.call.end_attempt(self.pending, token, exc)
            raise
        except BaseException as exc:
            self.call.end_attempt(self.pending, token, exc)
            return exc
        self.call.end_attempt(self.pending, token, None)
        return None

    def before_sleep(self, state: Any) -> None:
        span, self.pending = self.pending, None
        if span is not None:
            if span.is_recording():
                span.set_attribute(attr.ATTEMPT_WAIT, float(state.upcoming_sleep))
            end_span(span)

    def note(self, exc: BaseException) -> None:
        plural = "s" if self.number != 1 else ""
        with contextlib.suppress(AttributeError, TypeError):  # exceptions that refuse notes
            exc.add_note(
                f"spanflow: step {self.call.spec.name!r} gave up after {self.number} attempt{plural}"
            )

    def close(self) -> None:
        span, self.pending = self.pending, None
        if span is not None:
            end_span(span)
        if self.call.span.is_recording():
            self.call.span.set_attribute(attr.STEP_ATTEMPTS, self.number)


# -- coroutine functions ---------------------------------------------------------------------


def _async_wrapper(
    fn: Callable[..., Awaitable[Any]], spec: StepSpec
) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = _begin(spec, args, kwargs)
        if call is None:
            return await fn(*args, **kwargs)
        if call.cached:
            call.succeed(call.cached_value)
            return call.cached_value
        try:
            result = await _run_async(call, fn, args, kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        call.succeed(result)
        return result

    return wrapper


async def _run_async(
    call: StepCall, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    spec = call.spec

    async def once() -> Any:
        if spec.timeout is None:
            return await fn(*args, **kwargs)
        started = time.monotonic()
        with anyio.move_on_after(spec.timeout):
            result = await fn(*args, **kwargs)
            _check_deadline(call, spec.timeout, time.monotonic() - started)
            return result
        raise StepTimeout(f"step {spec.name!r} timed out after {spec.timeout:g}s")

    try:
        return await (once() if spec.policy is None else _attempts_async(call, once))
    except Exception as exc:
        if not spec.handles_failure:
            raise
        call.handled(exc)
        if spec.fallback is not None:
            try:
                result = spec.fallback(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as fallback_exc:
                if spec.default is MISSING:
                    raise
                call.handled(fallback_exc)
            else:
                call.mark(attr.FALLBACK_USED)
                return result
        call.mark(attr.DEFAULT_USED)
        return spec.default


def _check_deadline(call: StepCall, timeout: float, elapsed: float) -> None:
    """Note an attempt that ended past its deadline uncancelled: its code blocked the event loop.

    Cancellation can only land at an ``await``; code that never yields (``time.sleep``, a
    blocking client) runs to the end, and the timeout has no way to act.
    """
    overrun = elapsed - timeout
    if overrun <= 0:
        return
    count("timeouts_missed")
    try:
        if call.span.is_recording():
            call.span.set_attributes(
                {attr.TIMEOUT_MISSED: True, attr.TIMEOUT_OVERRUN: round(overrun, 6)}
            )
    except Exception:
        logger.debug("spanflow: could not mark the missed timeout", exc_info=True)
    logger.warning(
        "spanflow: step %r ran %.2fs, past its timeout of %gs, and was not cancelled: its code "
        "blocked the event loop (a blocking call such as time.sleep or a sync client in an async "
        "step); await an async API or move the blocking call to a thread",
        call.spec.name,
        elapsed,
        timeout,
    )


async def _attempts_async(call: StepCall, once: Callable[[], Awaitable[Any]]) -> Any:
    assert call.spec.policy is not None
    tracker = _AttemptTracker(call)
    controller = call.spec.policy.controller(asynchronous=True, before_sleep=tracker.before_sleep)
    try:
        async for attempt in controller:  # type: ignore[attr-defined]
            escape = None
            with attempt:
                escape = await tracker.run_async(once)
            if escape is not None:
                raise escape
        return tracker.result
    except Exception as exc:
        tracker.note(exc)
        raise
    finally:
        tracker.close()


# -- generators ------------------------------------------------------------------------------


def _gen_wrapper(
    fn: Callable[..., Generator[Any, Any, Any]], spec: StepSpec
) -> Callable[..., Generator[Any, Any, Any]]:
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        call = _begin(spec, args, kwargs)
        if call is None:
            return (yield from fn(*args, **kwargs))
        items: list[Any] = []
        keep = call.records_output  # hold items only when they will be recorded
        try:
            gen = fn(*args, **kwargs)
            to_send: Any = None
            thrown: BaseException | None = None
            while True:
                call.resume()
                try:
                    item = gen.send(to_send) if thrown is None else gen.throw(thrown)
                except StopIteration as stop:
                    value = stop.value
                    break
                finally:
                    thrown = None
                    call.suspend()
                if keep and len(items) < _MAX_GENERATOR_ITEMS:
                    items.append(item)
                try:
                    to_send = yield item
                except GeneratorExit:
                    call.resume()
                    try:
                        gen.close()
                    finally:
                        call.suspend()
                    raise
                except BaseException as exc:
                    thrown = exc
        except BaseException as exc:
            call.fail(exc)
            raise
        call.succeed(items if value is None else {"items": items, "return": value})
        return value

    return wrapper


def _async_gen_wrapper(
    fn: Callable[..., AsyncGenerator[Any, Any]], spec: StepSpec
) -> Callable[..., AsyncGenerator[Any, Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        call = _begin(spec, args, kwargs)
        items: list[Any] = []
        keep = call is not None and call.records_output
        try:
            agen = fn(*args, **kwargs)  # inside the try: bad arguments must still end the span
            to_send: Any = None
            thrown: BaseException | None = None
            while True:
                if call is not None:
                    call.resume()
                try:
                    item = await (agen.asend(to_send) if thrown is None else agen.athrow(thrown))
                except StopAsyncIteration:
                    break
                finally:
                    thrown = None
                    if call is not None:
                        call.suspend()
                if keep and len(items) < _MAX_GENERATOR_ITEMS:
                    items.append(item)
                try:
                    to_send = yield item
                except GeneratorExit:
                    if call is not None:
                        call.resume()
                    try:
                        await agen.aclose()
                    finally:
                        if call is not None:
                            call.suspend()
                    raise
                except BaseException as exc:
                    thrown = exc
        except BaseException as exc:
            if call is not None:
                call.fail(exc)
            raise
        if call is not None:
            call.succeed(items)

    return wrapper
