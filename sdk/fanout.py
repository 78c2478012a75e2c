"""Run steps concurrently with anyio: ``await spanflow.parallel(...)`` and ``spanflow.map``.

Neither creates a span: the items' own step spans are children of the caller's span, so a
fan-out reads in the trace as the siblings it is.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import anyio

from .decorators import on_executor
from .errors import ConfigurationError
from .recording.call import is_cancellation

T = TypeVar("T")
_UNSET: Any = object()


async def parallel(
    *items: Awaitable[Any] | Callable[[], Any], limit: int | None = None, executor: Any = None
) -> list[Any]:
    """Run ``items`` concurrently and return their results in argument order.

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
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        _close_unstarted(items)
        raise ConfigurationError(f"parallel(limit={limit!r}): limit must be an int >= 1 or None")
    for item in items:
        if not (inspect.isawaitable(item) or callable(item)):
            _close_unstarted(items)
            raise ConfigurationError(
                f"parallel() takes awaitables or zero-argument callables, not {type(item).__name__}"
            )
    if executor is not None:
        items = _shipped(items, executor)
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


async def map(
    fn: Callable[[T], Any], items: Iterable[T], *, limit: int | None = None, executor: Any = None
) -> list[Any]:
    """``await spanflow.map(step, items, limit=10)``: call ``fn`` on each item concurrently.

    With ``executor=`` each call runs there (see :func:`parallel`).
    """
    if executor is not None:
        fn = on_executor(fn, executor)
    return await parallel(*(functools.partial(fn, item) for item in items), limit=limit)


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
