"""Conditional routing that leaves the decision in the trace: which branch, and why."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, TypeVar

from opentelemetry import trace

from . import attributes as attr
from .context import current_step_span
from .runtime import get_runtime
from .values.serialize import encode

R = TypeVar("R")
_REASON_BYTES = 1024


def decision(branch: str, *, reason: Any = None, name: str | None = None) -> str:
    """Record the branch plain ``if`` code takes on the current step's span; returns ``branch``.

    One line in existing code::

        if spanflow.decision("escalate" if urgent else "auto", reason=label) == "escalate":
    """
    span = current_step_span() or trace.get_current_span()
    if span.is_recording():
        redactor = get_runtime().settings.redactor
        encoded = encode(reason, max_bytes=_REASON_BYTES, redactor=redactor)
        attributes: dict[str, str] = {
            attr.ROUTE_BRANCH: redactor.redact_text(str(branch))[0],
            attr.ROUTE_REASON: encoded.json,
        }
        if name:
            attributes[attr.ROUTE_NAME] = name
        span.set_attributes(attributes)
        span.add_event("route", attributes)
    return branch


def route(
    key: Hashable,
    routes: Mapping[Any, Callable[..., R]],
    /,
    *args: Any,
    default: Callable[..., R] | None = None,
    reason: Any = None,
    name: str | None = None,
    **kwargs: Any,
) -> R:
    """Call ``routes[key](*args, **kwargs)`` and record the choice (``key`` is the reason).

    Returns what the chosen callable returns (await it when the routes are async steps).

    Raises:
        LookupError: ``key`` has no route and no ``default`` was given.
    """
    target = routes.get(key, default)
    if target is None:
        raise LookupError(f"no route for {key!r}; routes are {sorted(map(str, routes))}")
    branch = str(key) if key in routes else "default"
    decision(branch, reason=key if reason is None else reason, name=name)
    return target(*args, **kwargs)


async def aroute(
    key: Hashable,
    routes: Mapping[Any, Callable[..., Awaitable[R] | R]],
    /,
    *args: Any,
    default: Callable[..., Awaitable[R] | R] | None = None,
    reason: Any = None,
    name: str | None = None,
    **kwargs: Any,
) -> R:
    """:func:`route` for async code whose branches mix sync and async steps: always ``await`` it.

    The chosen branch is called and, when it returns an awaitable (an async step), awaited;
    a sync branch's value is returned as it is. The choice is recorded as with :func:`route`.

    Raises:
        LookupError: ``key`` has no route and no ``default`` was given.
    """
    result = route(key, routes, *args, default=default, reason=reason, name=name, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result
