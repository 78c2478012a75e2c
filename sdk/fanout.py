"""Run steps concurrently: ``await spanflow.parallel(...)``/``spanflow.map`` with anyio in async
code, ``spanflow.parallel_sync``/``spanflow.map_sync`` with threads in sync code.

None creates a span: the items' own step spans are children of the caller's span, so a fan-out
reads in the trace as the siblings it is.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import anyio

from .context import current_frame
from .decorators import on_executor
from .errors import ConfigurationError
from .recording.call import is_cancellation, running_async_library

T = TypeVar("T")
_UNSET: Any = object()


def parallel(
    *items: Awaitable[Any] | Callable[[], Any], limit: int | None = None, executor: Any = None
) -> Coroutine[Any, Any, list[Any]]:
    """Run ``items`` concurrently and return their results in argument order (await it).

    Args:
        *items: awaitables (e.g. ``fetch(url)`` for an async step) or zero-argument callables;
            sync callables run in worker threads with the caller's context.
        limit: at most this many items run at once (default: all). Items start in argument
            order: the next one as soon as a running one finishes, none after a failure.
        executor: run each item on this executor (``spanflow.RayExecutor()``, a
            ``ProcessPoolExecutor``, Dask's ``client.get_executor()``). Items must then be
            zero-argument callables that can be shipped, such as ``functools.partial(step, x)``;
            a step's span stays here and the worker's spans join the trace.

    Raises:
        The first failure, unchanged: when an item fails, the others are cancelled (their spans
        are marked ``spanflow.cancelled``) and the item's own exception is raised. If several
        items fail at the same moment, an ``ExceptionGroup`` of their exceptions is raised.
        ``ConfigurationError`` (at once, not when awaited) when called inside a run with no
        event loop running in this thread (a sync step or workflow), where nothing would await
        it: use :func:`parallel_sync` there.
    """
    _refuse_without_loop(items, "parallel", "parallel_sync")
    _check_limit("parallel", limit, items)
    for item in items:
        if not (inspect.isawaitable(item) or callable(item)):
            _close_unstarted(items)
            raise ConfigurationError(
                f"parallel() takes awaitables or zero-argument callables, not {type(item).__name__}"
            )
    if executor is not None:
        items = _shipped(items, executor)
    return _parallel(items, limit)


async def _parallel(
    items: tuple[Awaitable[Any] | Callable[[], Any], ...], limit: int | None
) -> list[Any]:
    results: list[Any] = [_UNSET] * len(items)
    # Items are started in argument order by this task: the next one when a slot is free. (A
    # task per item waiting on a limiter would not do: trio schedules new tasks in random order,
    # so a later item could take a slot first and an earlier one wait for it.)
    slots = anyio.Semaphore(limit) if limit is not None else None

    # Each item's own exception object, as it left the item: task groups wrap (and on trio may
    # re-wrap) what they collect, so the group is not the place to get it back from.
    failures: list[BaseException] = []
    cancellations: list[BaseException] = []

    async def run_one(index: int, item: Awaitable[Any] | Callable[[], Any]) -> None:
        try:
            results[index] = await _invoke(item)
        except BaseException as exc:
            (cancellations if is_cancellation(exc) else failures).append(exc)
            raise
        finally:
            if slots is not None:
                slots.release()
            _close_unstarted((item,))

    try:
        async with anyio.create_task_group() as tg:
            for index, item in enumerate(items):
                if slots is not None:
                    await slots.acquire()
                    if failures:  # the slot was freed by a failure: start nothing more
                        break
                tg.start_soon(run_one, index, item)
    except BaseExceptionGroup:
        if len(failures) != 1:
            raise
    finally:
        _close_unstarted(items)
    if failures:
        raise failures[0]  # outside the group's except block: no group in its context
    if cancellations:  # an item raised a cancellation of its own: it has no result to give
        raise cancellations[0]
    return results


def map(
    fn: Callable[[T], Any], items: Iterable[T], *, limit: int | None = None, executor: Any = None
) -> Coroutine[Any, Any, list[Any]]:
    """``await spanflow.map(step, items, limit=10)``: call ``fn`` on each item concurrently.

    A sync ``fn`` runs in worker threads (its retry waits too), so the event loop stays free.
    With ``executor=`` each call runs there (see :func:`parallel`). Sync code uses
    :func:`map_sync`.
    """
    _refuse_without_loop((), "map", "map_sync")
    _check_limit("map", limit, ())
    if executor is not None:
        fn = on_executor(fn, executor)
    return _parallel(tuple(functools.partial(fn, item) for item in items), limit)


def parallel_sync(*items: Callable[[], Any], limit: int | None = None) -> list[Any]:
    """Run zero-argument callables in threads and return their results in argument order.

    The sync counterpart of :func:`parallel`: each item runs in a worker thread with the caller's
    context, so its step span is a child of the caller's span.

    Args:
        *items: zero-argument callables such as ``functools.partial(step, x)``.
        limit: at most this many items run at once (default: all). Items start in argument
            order: the next one as soon as a running one finishes, none after a failure.

    Raises:
        The first failure, unchanged: items not yet started are not started, the running ones
        are waited for (a thread cannot be stopped), and the failed item's own exception is
        raised. ``ConfigurationError`` for awaitables and coroutine functions (``await
        spanflow.parallel`` runs those).
    """
    _check_limit("parallel_sync", limit, items)
    for item in items:
        if inspect.isawaitable(item) or inspect.iscoroutinefunction(item):
            _close_unstarted(items)
            raise ConfigurationError(
                "parallel_sync() runs sync callables in threads; an awaitable or a coroutine "
                "function needs an event loop: await spanflow.parallel(...) in async code"
            )
        if not callable(item):
            raise ConfigurationError(
                f"parallel_sync() takes zero-argument callables, not {type(item).__name__}"
            )
    return _Threads(items, limit).run()


def map_sync(fn: Callable[[T], Any], items: Iterable[T], *, limit: int | None = None) -> list[Any]:
    """``spanflow.map_sync(step, items, limit=10)``: call ``fn`` on each item in threads.

    The sync counterpart of :func:`map`, with the semantics of :func:`parallel_sync`.
    """
    return parallel_sync(*(functools.partial(fn, item) for item in items), limit=limit)


class _Threads:
    """At most ``limit`` threads take the items in order until one fails."""

    def __init__(self, items: tuple[Callable[[], Any], ...], limit: int | None) -> None:
        self.items = items
        # One copy per item: a Context can be entered by one thread at a time.
        self.contexts = [contextvars.copy_context() for _ in items]
        self.results: list[Any] = [_UNSET] * len(items)
        self.failures: list[BaseException] = []
        self.lock = threading.Lock()
        self.next = 0
        self.stopped = False
        self.workers = min(limit or len(items), len(items))

    def run(self) -> list[Any]:
        threads = [
            threading.Thread(target=self._work, name=f"spanflow-parallel-{n}", daemon=True)
            for n in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:  # Ctrl-C while waiting: start nothing more
            with self.lock:
                self.stopped = True
            raise
        if self.failures:
            raise self.failures[0]
        return self.results

    def _work(self) -> None:
        while True:
            with self.lock:
                if self.failures or self.stopped or self.next >= len(self.items):
                    return
                index = self.next
                self.next += 1
            try:
                result = self.contexts[index].run(self.items[index])
                if inspect.isawaitable(result):  # a plain callable that returned a coroutine
                    _close_unstarted((result,))
                    raise ConfigurationError(
                        f"parallel_sync() item {index} returned an awaitable; async steps "
                        "need await spanflow.parallel(...)"
                    )
                self.results[index] = result
            except BaseException as exc:
                with self.lock:
                    self.failures.append(exc)


def _check_limit(where: str, limit: int | None, items: Iterable[object]) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        _close_unstarted(items)
        raise ConfigurationError(f"{where}(limit={limit!r}): limit must be an int >= 1 or None")


def _refuse_without_loop(items: Iterable[object], name: str, sync_name: str) -> None:
    """Refuse a call no one can await: inside a run, with no event loop in this thread."""
    if running_async_library() is not None or current_frame() is None:
        return  # outside a run, asyncio.run(spanflow.parallel(...)) is fine
    _close_unstarted(items)
    raise ConfigurationError(
        f"spanflow.{name}() was called in sync code (no event loop is running in this "
        f"thread), where it would return a coroutine and run nothing: use "
        f"spanflow.{sync_name}(...) here, or await spanflow.{name}(...) in an async step"
    )


def _shipped(
    items: tuple[Awaitable[Any] | Callable[[], Any], ...], executor: Any
) -> tuple[Callable[[], Any], ...]:
    shipped: list[Callable[[], Any]] = []
    for item in items:
        if inspect.isawaitable(item):
            _close_unstarted(items)
            raise ConfigurationError(
                "parallel(executor=...) sends zero-argument callables to the executor; a "
                "coroutine cannot leave this process: pass functools.partial(step, arg) instead"
            )
        if isinstance(item, functools.partial):
            remote = on_executor(item.func, executor)
            shipped.append(functools.partial(remote, *item.args, **item.keywords))
        else:
            shipped.append(on_executor(item, executor))
    return tuple(shipped)


async def _invoke(item: Awaitable[Any] | Callable[[], Any]) -> Any:
    if inspect.isawaitable(item):
        return await item
    if inspect.iscoroutinefunction(item):
        return await item()
    result = await anyio.to_thread.run_sync(item)
    if inspect.isawaitable(result):  # a plain callable that returned a coroutine
        return await result
    return result


def _close_unstarted(items: Iterable[object]) -> None:
    # A coroutine cancelled before it started would warn "never awaited": close it instead.
    for item in items:
        if inspect.iscoroutine(item) and inspect.getcoroutinestate(item) == inspect.CORO_CREATED:
            item.close()
