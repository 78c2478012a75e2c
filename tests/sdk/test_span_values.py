"""Attributes written straight into SDK spans: same result as the public API, limits honoured."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import spanflow
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes
from spanflow import attributes as attr
from spanflow import runtime
from spanflow.recording import span_values
from spanflow.recording.span_values import attribute_blind, set_values


class SeesAttributes(Sampler):
    """Samples a span only when it says it is an LLM step, as an attribute-based policy would."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        self.seen.append(dict(attributes or {}))
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "SeesAttributes"


def _provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def reset() -> Iterator[None]:
    yield
    runtime.reset_for_tests()


def test_direct_write_equals_set_attributes() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("t")
    values: dict[str, str | int | float | bool] = {"a": "x", "b": 2, "c": True, "d": 1.5}
    fast, slow = tracer.start_span("fast"), tracer.start_span("slow")
    set_values(fast, values)
    slow.set_attributes(values)
    fast.end()
    slow.end()
    got = {s.name: dict(s.attributes or {}) for s in exporter.get_finished_spans()}
    assert got["fast"] == got["slow"] == values


def test_limits_are_honoured_through_the_public_api() -> None:
    provider, exporter = _provider(
        span_limits=SpanLimits(max_span_attribute_length=4, max_span_attributes=2)
    )
    span = provider.get_tracer("t").start_span("s", attributes={"first": "1"})
    set_values(span, {"long": "abcdefgh", "n": 3})
    span.end()
    (done,) = exporter.get_finished_spans()
    # What the SDK does itself: values cut to the length limit, the oldest dropped for room.
    assert dict(done.attributes or {}) == {"long": "abcd", "n": 3}


def test_ended_and_non_recording_spans_take_the_public_path() -> None:
    provider, exporter = _provider()
    span = provider.get_tracer("t").start_span("s")
    span.end()
    set_values(span, {"late": "x"})  # the SDK ignores writes to an ended span, with a warning
    assert dict(exporter.get_finished_spans()[0].attributes or {}) == {}
    set_values(trace.INVALID_SPAN, {"a": "b"})  # no-op, no error


def test_sdk_samplers_are_attribute_blind_custom_ones_are_not() -> None:
    assert attribute_blind(TracerProvider().sampler)
    assert attribute_blind(ALWAYS_ON)
    assert attribute_blind(TraceIdRatioBased(0.5))
    assert attribute_blind(ParentBasedTraceIdRatio(0.5))
    assert not attribute_blind(SeesAttributes())
    assert not attribute_blind(ParentBased(SeesAttributes()))
    assert not attribute_blind(ParentBased(ALWAYS_ON, local_parent_sampled=SeesAttributes()))


def test_a_sampler_that_reads_attributes_sees_each_steps_identity(reset: None) -> None:
    sampler = SeesAttributes()
    provider, exporter = _provider(sampler=sampler)
    spanflow.configure(tracer_provider=provider, db=False)

    @spanflow.step(kind="LLM")
    def ask(q: str) -> str:
        return q.upper()

    @spanflow.workflow
    def flow() -> str:
        return ask("hi")

    assert flow() == "HI"
    step_seen = [s for s in sampler.seen if s.get(attr.STEP_NAME) == "ask"]
    assert len(step_seen) == 1
    assert step_seen[0][attr.SPAN_KIND] == "LLM"
    assert step_seen[0][attr.STEP_TYPE] == attr.STEP_TYPE_STEP
    assert step_seen[0][attr.RUN_ID]
    # The captured values arrive all the same.
    (ask_span,) = [s for s in exporter.get_finished_spans() if s.name == "ask"]
    assert ask_span.attributes is not None
    assert ask_span.attributes[attr.INPUT_VALUE] == '{"q":"hi"}'
    assert ask_span.attributes[attr.OUTPUT_VALUE] == '"HI"'


def test_default_sampler_spans_carry_the_full_contract(reset: None) -> None:
    provider, exporter = _provider()
    spanflow.configure(tracer_provider=provider, db=False)

    @spanflow.step
    def double(x: int) -> int:
        return x * 2

    @spanflow.workflow
    def flow() -> int:
        return double(2) + double(3)

    assert flow() == 10
    spans = {
        (s.name, (s.attributes or {}).get(attr.STEP_OCCURRENCE)): s
        for s in exporter.get_finished_spans()
    }
    root = spans[("flow", None)]
    run_id = format(root.context.trace_id, "032x") if root.context else ""
    second = dict(spans[("double", 1)].attributes or {})
    assert second == {
        attr.STEP_NAME: "double",
        attr.STEP_TYPE: attr.STEP_TYPE_STEP,
        attr.SPAN_KIND: "CHAIN",
        attr.RUN_ID: run_id,
        attr.STEP_OCCURRENCE: 1,
        attr.INPUT_VALUE: '{"x":3}',
        attr.INPUT_MIME_TYPE: attr.JSON_MIME,
        attr.OUTPUT_VALUE: "6",
        attr.OUTPUT_MIME_TYPE: attr.JSON_MIME,
    }
    assert (root.attributes or {})[attr.RUN_ID] == run_id


def test_the_installed_sdk_takes_the_direct_path() -> None:
    # Not needed for correctness (the public API is the fallback), but a changed SDK layout
    # would quietly cost every step again: say so here.
    provider, _ = _provider()
    span = provider.get_tracer("t").start_span("s")
    assert type(span) in span_values._DIRECT
    span.end()


class SeesStart(SpanProcessor):
    """A processor that reads the attributes a span starts with."""

    def __init__(self) -> None:
        self.at_start: list[dict[str, Any]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.at_start.append(dict(span.attributes or {}))


def test_a_processor_reading_attributes_at_start_sees_them(reset: None) -> None:
    provider, exporter = _provider()
    spanflow.configure(tracer_provider=provider, db=False)

    @spanflow.step
    def ask(q: str) -> str:
        return q.upper()

    @spanflow.workflow
    def flow() -> str:
        return ask("hi")

    assert runtime.get_runtime().attributes_at_start() is False  # the SDK's processors only
    flow()
    # Added after configuration: noticed on the next call.
    seer = SeesStart()
    provider.add_span_processor(seer)
    assert runtime.get_runtime().attributes_at_start() is True
    flow()
    step_start = next(a for a in seer.at_start if a.get(attr.STEP_NAME) == "ask")
    assert step_start[attr.STEP_TYPE] == attr.STEP_TYPE_STEP
    assert step_start[attr.RUN_ID]
    assert step_start[attr.INPUT_VALUE] == '{"q":"hi"}'
    asks = [s for s in exporter.get_finished_spans() if s.name == "ask"]
    assert [dict(s.attributes or {})[attr.OUTPUT_VALUE] for s in asks] == ['"HI"', '"HI"']
