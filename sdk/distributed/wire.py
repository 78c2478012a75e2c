"""Finished spans as plain data, and back: how a worker's spans travel to the caller.

A worker turns each finished span into a tuple of builtins (ids, times, attributes, events, links,
status, resource, scope) that any executor can pickle; the caller turns the tuples back into SDK
``ReadableSpan`` objects with the worker's ids and times and hands them to its own processors,
exactly as if the spans had ended in the caller's process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

#: One span on the wire; see :func:`encode` for the field order.
WireSpan = tuple[Any, ...]

_KINDS = {k.value: k for k in SpanKind}
_CODES = {c.value: c for c in StatusCode}
_CACHE_LIMIT = 256


def encode(span: ReadableSpan, resource: Mapping[str, Any]) -> WireSpan | None:
    """``span`` as a tuple of builtins, with ``resource`` as its resource attributes.

    Returns None for a span without a context (the SDK never produces one).
    """
    ctx = span.context
    if ctx is None:
        return None
    parent = span.parent
    scope = span.instrumentation_scope
    return (
        span.name,
        ctx.trace_id,
        ctx.span_id,
        int(ctx.trace_flags),
        tuple(ctx.trace_state.items()) if ctx.trace_state else (),
        None if parent is None else (parent.trace_id, parent.span_id, parent.is_remote),
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes or {}),
        tuple((e.name, e.timestamp, dict(e.attributes or {})) for e in span.events),
        tuple(
            (
                ln.context.trace_id,
                ln.context.span_id,
                int(ln.context.trace_flags),
                dict(ln.attributes or {}),
            )
            for ln in span.links
        ),
        (span.status.status_code.value, span.status.description),
        resource,
        None if scope is None else (scope.name, scope.version, scope.schema_url),
    )


class Decoder:
    """Turns wire spans back into ``ReadableSpan`` objects, sharing equal resources and scopes."""

    def __init__(self) -> None:
        self._resources: dict[Any, Resource] = {}
        self._scopes: dict[Any, InstrumentationScope] = {}
        self._lock = threading.Lock()

    def decode(self, wire: Sequence[Any]) -> ReadableSpan:
        """One wire span as a finished SDK span with the worker's ids, times and parent."""
        (
            name, trace_id, span_id, flags, state, parent, kind, start, end,
            attributes, events, links, status, resource, scope,
        ) = wire  # fmt: skip
        context = SpanContext(
            trace_id,
            span_id,
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=TraceState(list(state)) if state else None,
        )
        parent_ctx = None
        if parent is not None:
            parent_ctx = SpanContext(
                parent[0], parent[1], is_remote=parent[2], trace_flags=TraceFlags(flags)
            )
        return ReadableSpan(
            name=name,
            context=context,
            parent=parent_ctx,
            resource=self._resource(resource),
            attributes=attributes,
            events=tuple(Event(n, a, t) for n, t, a in events),
            links=tuple(
                Link(SpanContext(t, s, is_remote=True, trace_flags=TraceFlags(f)), a)
                for t, s, f, a in links
            ),
            kind=_KINDS.get(kind, SpanKind.INTERNAL),
            status=Status(_CODES.get(status[0], StatusCode.UNSET), status[1]),
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope(scope),
        )

    def decode_all(self, wires: Iterable[Sequence[Any]]) -> list[ReadableSpan]:
        """Decode many wire spans, in order."""
        return [self.decode(w) for w in wires]

    def _resource(self, attributes: Mapping[str, Any]) -> Resource:
        # Resource() runs no detectors (Resource.create would, for every span).
        key = _key(attributes)
        if key is None:
            return Resource(dict(attributes))
        found = self._resources.get(key)
        if found is None:
            found = Resource(dict(attributes))
            with self._lock:
                if len(self._resources) >= _CACHE_LIMIT:
                    self._resources.clear()
                self._resources[key] = found
        return found

    def _scope(self, scope: Sequence[Any] | None) -> InstrumentationScope | None:
        if scope is None:
            return None
        key = tuple(scope)
        found = self._scopes.get(key)
        if found is None:
            found = InstrumentationScope(scope[0], scope[1], scope[2])
            with self._lock:
                if len(self._scopes) >= _CACHE_LIMIT:
                    self._scopes.clear()
                self._scopes[key] = found
        return found


def _key(attributes: Mapping[str, Any]) -> Any:
    try:
        key = tuple(sorted(attributes.items()))
        hash(key)
    except TypeError:  # an unhashable value (a list): not worth caching
        return None
    return key
