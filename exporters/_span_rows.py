"""Finished OpenTelemetry spans turned into the rows the store's writer inserts.

This runs on the application's thread for every span it records, so :class:`RowMaker` reads the
SDK's own span classes through their fields instead of their properties (each property call
costs about what the rest of a field's handling does; the field names are checked once, on a
probe span) and remembers the texts that repeat from one span to the next: the trace id, the
parent id, the resource. Rows are tuples of strings, ints and None, which the garbage collector
stops tracking the first time it sees them, so a long queue of rows costs the application's
collections nothing.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from spanflow.attributes import (
    ATTRIBUTES_VERSION,
    REPLAY_OF,
    RUN_ID,
    STEP_NAME,
    WORKFLOW_ENTRYPOINT,
    WORKFLOW_FILE,
)

from . import schema as s
from ._batch import resource_json
from .records import error_text, host_name, process_start

_INTERNAL: Final = SpanKind.INTERNAL
_UNSET: Final = StatusCode.UNSET
_ERROR: Final = StatusCode.ERROR
_RESOURCE_TEXTS: Final = 64  # distinct resource objects whose text is kept
_SPAN_FIELDS: Final = (
    "context",
    "parent",
    "status",
    "kind",
    "name",
    "start_time",
    "end_time",
    "resource",
)
_PROCESS_START: dict[int, int | None] = {}
_BOUNDED_LIST: Final[Any] = BoundedList  # its typing stub leaves out the deque inside


def _sdk_span_types() -> frozenset[type[Any]]:
    """The SDK span classes whose private fields may be read instead of their properties.

    Checked on a probe span, so an SDK that moves those fields only costs the faster path;
    subclasses that override one of the properties are left out.
    """
    ctx = SpanContext(1, 2, False)
    remote = SpanContext(1, 5, True)
    try:
        probe = ReadableSpan(
            "n",
            context=ctx,
            parent=remote,
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.ERROR, "d"),
            start_time=3,
            end_time=4,
        )
        found = (
            probe._context,
            probe._parent,
            probe._status._status_code,
            probe._status._description,
            probe._kind,
            probe._name,
            probe._start_time,
            probe._end_time,
            ctx[0],
            ctx[1],
            remote[2],
            probe._resource is probe.resource,
        )
    except Exception:
        return frozenset()
    expected = (ctx, remote, StatusCode.ERROR, "d", SpanKind.CLIENT, "n", 3, 4, 1, 2, True, True)
    if found != expected:
        return frozenset()
    candidates = {ReadableSpan, Span, *Span.__subclasses__()}
    return frozenset(
        t
        for t in candidates
        if all(getattr(t, f, None) is getattr(ReadableSpan, f) for f in _SPAN_FIELDS)
    )


SDK_SPANS: Final = _sdk_span_types()


def attributes(obj: Any) -> Mapping[str, Any]:
    """The attribute dict of a span, event or link, without a copy when the SDK allows it."""
    raw: Any = getattr(obj, "_attributes", None)
    if type(raw) is BoundedAttributes:
        raw = raw._dict
    if type(raw) is dict:
        return raw
    return dict(obj.attributes or {})


def events(span: ReadableSpan) -> Any:
    """The span's events, as a sequence whose truth and length cost no Python call."""
    # ReadableSpan.events copies the list on each access, and the SDK's BoundedList answers
    # len() in Python: use the deque inside when there is one.
    raw: Any = getattr(span, "_events", None)
    if type(raw) is _BOUNDED_LIST:
        return raw._dq
    return span.events if raw is None else raw


def links(span: ReadableSpan) -> Any:
    """The span's links, as :func:`events` gives its events."""
    raw: Any = getattr(span, "_links", None)
    if type(raw) is _BOUNDED_LIST:
        return raw._dq
    return span.links if raw is None else raw


def _own_process_start(pid: int) -> int | None:
    if pid not in _PROCESS_START:
        _PROCESS_START[pid] = process_start(pid)
    return _PROCESS_START[pid]


@functools.cache
def _own_host() -> str:
    # A system call per run row otherwise; a host renamed while a process runs keeps the old name.
    return host_name()


def run_row(span: ReadableSpan, attrs: Mapping[str, Any], *, ended: bool) -> tuple[Any, ...]:
    """The run row of a run's root span, running or ended: ``schema.RUN_ROW_COLUMNS``, in order."""
    start = span.start_time or time.time_ns()
    end = span.end_time if ended else None
    status, error = s.STATUS_RUNNING, None
    if ended:
        status = s.STATUS_OK
        if span.status.status_code is StatusCode.ERROR:
            status = s.STATUS_FAILED
            pairs = ((e.name, attributes(e)) for e in events(span))
            error = error_text(span.status.description, attrs, pairs)
    pid = os.getpid()
    return (
        s.hex_trace_id(span.context.trace_id),
        attrs.get(STEP_NAME) or span.name,
        attrs.get(WORKFLOW_ENTRYPOINT),
        attrs.get(WORKFLOW_FILE),
        status,
        error,
        start,
        end,
        (end - start) / 1e6 if end is not None else None,
        attrs.get(REPLAY_OF),
        span.resource.attributes.get(SERVICE_NAME) if span.resource else None,
        _own_host(),
        pid,
        _own_process_start(pid),
        ATTRIBUTES_VERSION,
    )


@functools.lru_cache(maxsize=_RESOURCE_TEXTS)
def _service_of(resource_text: str | None) -> str | None:
    if resource_text is None:
        return None
    service = json.loads(resource_text).get(SERVICE_NAME)
    return service if isinstance(service, str) else None


def ended_run_rows(ended: Sequence[Sequence[Any]], service: str | None) -> list[tuple[Any, ...]]:
    """What :func:`run_row` gives for root spans that ended without error, from the writer's
    queue items: each a span row (:meth:`RowMaker.row`, the resource as text) and the
    attributes ``spanflow.step.name``, ``spanflow.workflow.entrypoint``,
    ``spanflow.workflow.file`` and ``spanflow.replay.of``.

    ``service`` stands in for a resource without ``service.name``. A missing text is the int 0
    (see ``_batch.RUN_NULL_AS_ZERO``); what is the same for every run of the process is looked
    up once per batch.
    """
    pid = os.getpid()
    host, process, version = _own_host(), _own_process_start(pid), ATTRIBUTES_VERSION
    services: dict[str | None, str | int] = {}
    out: list[tuple[Any, ...]] = []
    append = out.append
    for row, name, entrypoint, workflow_file, replay_of in ended:
        start, end, resource = row[7], row[8], row[10]
        svc = services.get(resource)
        if svc is None:
            own = _service_of(resource)
            svc = own if own is not None else (service if service is not None else 0)
            services[resource] = svc
        append(
            (
                row[0],
                name or row[3],
                0 if entrypoint is None else entrypoint,
                0 if workflow_file is None else workflow_file,
                s.STATUS_OK,
                0,
                start,
                end,
                (end - start) / 1e6,
                0 if replay_of is None else replay_of,
                svc,
                host,
                pid,
                process,
                version,
            )
        )
    return out


def start_row(span: ReadableSpan, attrs: Mapping[str, Any]) -> tuple[str, str, str, int, str]:
    """A run's root span as it started (``schema.RUN_STARTS``, keyed by the run's id): kept so a
    run whose process dies before the root ends can still be shown and replayed."""
    ctx = span.context
    return (
        s.hex_trace_id(ctx.trace_id),
        s.hex_span_id(ctx.span_id),
        span.name,
        span.start_time or time.time_ns(),
        s.dumps(attrs),
    )


def span_row(
    span: ReadableSpan, ctx: SpanContext, attrs: Mapping[str, Any], resource: str | None
) -> s.SpanRow:
    """A finished span as the ``schema.SpanRow`` the writer inserts, through public properties
    only; ``resource`` is the span's resource as ``_batch.resource_json`` text."""
    parent = span.parent
    status = span.status
    kind = span.kind
    code = status.status_code
    start = span.start_time or 0
    # Identity tests, not enum lookups: hashing an Enum member runs Python code.
    return (
        s.hex_trace_id(ctx.trace_id),
        s.hex_span_id(ctx.span_id),
        None if parent is None else s.hex_span_id(parent.span_id),
        span.name,
        "INTERNAL" if kind is _INTERNAL else kind.name,
        "UNSET" if code is _UNSET else ("ERROR" if code is _ERROR else "OK"),
        status.description,
        start,
        span.end_time or start,
        s.dumps(attrs),
        resource,
    )


def span_extra(
    span: ReadableSpan, attrs: Mapping[str, Any], row: s.SpanRow, evts: Any, lnks: Any
) -> s.SpanExtra:
    """The events, links and, for a run's root, the run row of a span."""
    return (
        row[0],
        row[1],
        tuple((e.name, e.timestamp, s.dumps(attributes(e))) for e in evts) or None,
        tuple(
            (
                s.hex_trace_id(ln.context.trace_id),
                s.hex_span_id(ln.context.span_id),
                s.dumps(attributes(ln)),
            )
            for ln in lnks
        )
        or None,
        run_row(span, attrs, ended=True) if span.parent is None and RUN_ID in attrs else None,
    )


class RowMaker:
    """Makes :func:`span_row`'s rows faster, remembering the texts that repeat between spans.

    Safe to share between threads: each remembered text is one tuple, replaced whole.
    """

    def __init__(self) -> None:
        self._trace: tuple[int, str] = (-1, "")
        self._parent: tuple[int, str] = (-1, "")
        self._resource: tuple[object, str | None] = (object(), None)
        self._resources: dict[int, tuple[object, str | None]] = {}

    def resource_text(self, resource: object) -> str | None:
        """The ``_batch.resource_json`` text of a resource, made once per resource object."""
        last = self._resource
        if last[0] is resource:
            return last[1]
        texts = self._resources
        cached = texts.get(id(resource))
        if cached is None or cached[0] is not resource:
            if len(texts) >= _RESOURCE_TEXTS:
                texts.clear()
            cached = texts[id(resource)] = (resource, resource_json(resource))
        self._resource = cached
        return cached[1]

    def row(self, span: ReadableSpan, ctx: SpanContext, attrs: Mapping[str, Any]) -> s.SpanRow:
        """What :func:`span_row` gives for ``span``, except that a missing parent id or status
        message is the int 0, which ``_batch`` binds faster than None and stores as NULL."""
        if type(span) not in SDK_SPANS:
            return span_row(span, ctx, attrs, self.resource_text(span.resource))
        trace_id = ctx[0]
        trace = self._trace
        if trace[0] != trace_id:
            trace = self._trace = (trace_id, s.hex_trace_id(trace_id))
        parent = span._parent
        if parent is None:
            parent_hex: str | int = 0  # None, as _batch binds it cheaply
        else:
            last = self._parent
            if last[0] != parent[1]:
                last = self._parent = (parent[1], s.hex_span_id(parent[1]))
            parent_hex = last[1]
        status = span._status
        kind = span._kind
        code = status._status_code
        start = span._start_time or 0
        return (
            trace[1],
            s.hex_span_id(ctx[1]),
            parent_hex,
            span._name,
            "INTERNAL" if kind is _INTERNAL else kind.name,
            "UNSET" if code is _UNSET else ("ERROR" if code is _ERROR else "OK"),
            0 if status._description is None else status._description,
            start,
            span._end_time or start,
            s.dumps(attrs),
            self.resource_text(span._resource),
        )
