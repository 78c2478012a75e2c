"""spanflow's own attribute values written into an SDK span without the SDK's per-value checks.

opentelemetry-sdk checks and copies every attribute value it is handed, whether at
``start_span`` or by ``set_attributes``: about a microsecond a value on the machines we measure,
so the nine attributes of a recorded step cost more than anything else spanflow adds to it. The
values spanflow records are valid by construction (strings, ints and bools it made itself), so
for the SDK's own span class, with limits that neither cut values nor run out of room, they go
straight into the span's attribute dict: where the SDK puts them after its checks. Any other
span (a custom SDK, a non-recording span), a length limit, a full dict or an ended span: the
public API, with its checks.

Attributes known when a span starts go to ``start_span`` as usual whenever something at the
start could read them: a sampler other than the SDK's own (which decide by trace id and parent
alone) or a span processor other than those whose ``on_start`` does nothing (the SDK's batch and
simple processors, spanflow's own). Otherwise they too are written just after the span starts,
before any code of the step runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Span, SpanContext

logger = logging.getLogger("spanflow")

AttributeValue = str | int | float | bool


def _probe(cls: type[Any]) -> bool:
    """Whether spans of ``cls`` keep their attributes where :func:`set_values` writes them."""
    try:
        # An empty resource: the default one would run resource detection at import.
        span = cls("probe", context=SpanContext(1, 2, False), resource=Resource.get_empty())
        span.start()
        target = _dict_of(span, 1)
        if target is None:
            return False
        target["probe.value"] = "x"
        span.end()
        expected = {"probe.value": "x"}
        return (
            dict(span.attributes or {}) == expected
            and dict(span._readable_span().attributes or {}) == expected
        )
    except Exception:
        logger.debug("spanflow: %r not recognised; using set_attributes", cls, exc_info=True)
        return False


def _dict_of(span: Any, adding: int) -> dict[str, Any] | None:
    attrs = span._attributes
    if (
        type(attrs) is not BoundedAttributes
        or attrs.max_value_len is not None
        or attrs._immutable
        or span._end_time is not None
    ):
        return None
    target: dict[str, Any] = attrs._dict
    if attrs.maxlen is not None and len(target) + adding > attrs.maxlen:
        return None
    return target


# The class the SDK's tracer makes (its public base refuses to be made directly); not its
# subclasses, which may override set_attributes.
_SDK_SPAN: Final[type[Any] | None] = getattr(sdk_trace, "_Span", None)
_DIRECT: Final = frozenset(
    {_SDK_SPAN} if _SDK_SPAN is not None and _probe(_SDK_SPAN) else set[type[Any]]()
)


_BLIND_SAMPLERS: Final = frozenset(
    {
        sampling.StaticSampler,
        sampling.TraceIdRatioBased,
        *(getattr(sampling, n, sampling.StaticSampler) for n in ("_AlwaysOn", "_AlwaysOff")),
    }
)
_PARENT_BASED: Final = frozenset(
    {
        sampling.ParentBased,
        sampling.ParentBasedTraceIdRatio,
        *(
            getattr(sampling, n, sampling.ParentBased)
            for n in ("_ParentBasedAlwaysOn", "_ParentBasedAlwaysOff")
        ),
    }
)
_DELEGATES: Final = (
    "_root",
    "_remote_parent_sampled",
    "_remote_parent_not_sampled",
    "_local_parent_sampled",
    "_local_parent_not_sampled",
)


def attribute_blind(sampler: object) -> bool:
    """Whether ``sampler`` is one of the SDK's samplers, which never read span attributes.

    Exact classes only: a subclass may override ``should_sample``.
    """
    if type(sampler) in _BLIND_SAMPLERS:
        return True
    if type(sampler) in _PARENT_BASED:
        return all(attribute_blind(getattr(sampler, d, None)) for d in _DELEGATES)
    return False


# Processors whose on_start does nothing; others may read the attributes a span starts with.
_QUIET_AT_START: Final = frozenset({BatchSpanProcessor, SimpleSpanProcessor})


def quiet_at_start(processors: object) -> bool:
    """Whether none of ``processors`` (a provider's list) can read attributes in ``on_start``.

    Exact classes, or processors that say so with a true ``quiet_at_start`` attribute.
    """
    if not isinstance(processors, tuple | list):
        return False
    return all(
        type(p) in _QUIET_AT_START or getattr(p, "quiet_at_start", False) is True
        for p in processors
    )


def set_values(span: Span, values: Mapping[str, AttributeValue]) -> None:
    """Set attributes spanflow made on a recording span: as ``span.set_attributes``, faster."""
    target = _dict_of(span, len(values)) if type(span) in _DIRECT else None
    if target is None:
        span.set_attributes(values)
    else:
        target.update(values)
