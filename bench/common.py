"""Shared benchmark plumbing: interleaved repeats, medians, a discarding exporter."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class Discard(SpanExporter):
    """Accepts every batch and keeps nothing: the cost of a span without any backend."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def batch_provider() -> TracerProvider:
    """A provider as an application would have it: batch processor, discarding exporter."""
    provider = TracerProvider()
    # A queue deep enough that no span is dropped: dropping would make the baseline cheaper.
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=200_000))
    return provider


def interleaved(cases: dict[str, Callable[[], float]], repeats: int = 7) -> dict[str, float]:
    """Run each case once per round, round after round; the median per case.

    Interleaving spreads the machine's noise over every case instead of letting one case take a
    quiet minute and another a busy one. Each case returns its own per-operation figure.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, case in cases.items():
            gc.collect()
            samples[name].append(case())
    return {name: statistics.median(values) for name, values in samples.items()}


def per_call_us(
    fn: Callable[[], Any], n: int, *, then: Callable[[], Any] | None = None
) -> Callable[[], float]:
    """A case that calls ``fn`` n times (then ``then``, timed too) and returns µs per call."""

    def case() -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if then is not None:
            then()
        return (time.perf_counter() - start) / n * 1e6

    return case
