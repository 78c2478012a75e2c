"""Redaction of whole spans, ours or not, before they reach the store or spanflow's OTLP exporter.

spanflow redacts the values it records as it encodes them. Spans that other instrumentation makes
inside a run (OpenInference, HTTP clients, the application's own tracer) carry whatever their
authors put in them: prompts with keys pasted in, ``Authorization`` headers. Every finished span
passes through :func:`scrub_span` on its way to spanflow's processors; a span with nothing to
hide is passed on as it is (the common case costs a walk over its attribute names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import Attributes

from .. import attributes as attr
from ..values.redact import Redactor

__all__ = ["scrub_span"]

SCOPE: Final = "spanflow"
# Values spanflow encodes itself (redacted then), and names and ids it writes: not scanned again.
_OURS: Final = frozenset(
    value
    for name, value in vars(attr).items()
    if name.isupper() and isinstance(value, str) and "." in value
)
# The attributes of the links spanflow adds (to the caller's span, to a replayed run).
_OUR_LINK_KEYS: Final = frozenset({"spanflow.link"})
# Events spanflow writes already redacted (exceptions, log records).
_OUR_EVENTS: Final = frozenset({attr.EXCEPTION_EVENT, attr.LOG_EVENT, "route", "cancelled"})


def scrub_span(span: ReadableSpan, redactor: Redactor) -> ReadableSpan:
    """``span``, or a copy of it with every secret in its attributes, events, links and status
    replaced. Never echoes what it matched."""
    # The SDK's own fields where it has them: its properties copy events and links each time.
    scope = getattr(span, "_instrumentation_scope", None) or span.instrumentation_scope
    ours = scope is not None and (scope is _our_scope[0] or _is_ours(scope))
    original = getattr(span, "_attributes", None)
    if original is None:  # a test of its truth would run the SDK's BoundedAttributes.__len__
        original = span.attributes or {}
    # The plain dict inside the SDK's BoundedAttributes: iterating the wrapper runs Python code.
    names = getattr(original, "_dict", original)
    if ours and _OURS.issuperset(names) and _only_ours(span):
        return span  # every step span: nothing but what spanflow wrote, already redacted
    attributes = redactor.scrub_attributes(original, _OURS if ours else frozenset())
    events = _events(span.events, redactor, ours)
    links = _links(span.links, redactor)
    status = span.status
    # Another library's span name may hold one (an HTTP client naming its span after the URL).
    name = span.name if ours else redactor.redact_text(span.name)[0]
    if status.description and not ours:
        description = redactor.redact_text(status.description)[0]
        if description != status.description:
            status = Status(status.status_code, description)
    unchanged = attributes is None and events is None and links is None
    if unchanged and status is span.status and name == span.name:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes if attributes is not None else span.attributes,  # type: ignore[arg-type]
        events=events if events is not None else span.events,
        links=links if links is not None else span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=scope,
    )


# The last instrumentation scope found to be spanflow's: every step span has that same object.
_our_scope: list[InstrumentationScope | None] = [None]


def _is_ours(scope: InstrumentationScope) -> bool:
    if scope.name != SCOPE:
        return False
    _our_scope[0] = scope
    return True


def _only_ours(span: ReadableSpan) -> bool:
    # The deque inside the SDK's BoundedList where there is one: its len() runs Python code.
    events = getattr(span, "_events", None)
    if events is None:
        events = span.events
    events = getattr(events, "_dq", events)
    if events and not all(e.name in _OUR_EVENTS for e in events):
        return False
    links = getattr(span, "_links", None)
    if links is None:
        links = span.links
    links = getattr(links, "_dq", links)
    return not links or all(_OUR_LINK_KEYS.issuperset(link.attributes or {}) for link in links)


def _events(events: Sequence[Event], redactor: Redactor, ours: bool) -> list[Event] | None:
    out: list[Event] | None = None
    for i, event in enumerate(events):
        if ours and event.name in _OUR_EVENTS:
            continue
        clean = redactor.scrub_attributes(event.attributes or {})
        name = redactor.redact_text(event.name)[0]
        if clean is None and name == event.name:
            continue
        if out is None:
            out = list(events)
        out[i] = Event(name, _attrs(clean, event.attributes), event.timestamp)
    return out


def _links(links: Sequence[Link], redactor: Redactor) -> list[Link] | None:
    out: list[Link] | None = None
    for i, link in enumerate(links):
        clean = redactor.scrub_attributes(link.attributes or {})
        if clean is None:
            continue
        if out is None:
            out = list(links)
        out[i] = Link(link.context, _attrs(clean, link.attributes))
    return out


def _attrs(clean: dict[str, object] | None, original: Attributes) -> Attributes:
    return clean if clean is not None else original  # type: ignore[return-value]
