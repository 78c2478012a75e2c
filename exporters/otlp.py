"""OTLP export (to Jaeger, Phoenix or any collector) next to the local store.

Endpoints have the standard meaning: a base URL such as ``http://localhost:4318`` gets
``/v1/traces`` appended for http/protobuf; ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as is.
A dead or slow endpoint must not slow the application: spans queue in a bounded buffer (dropped
and counted when full), each export gives up after ``timeout`` seconds, and ``shutdown`` and
``force_flush`` take about ``timeout`` seconds in all, however much is queued: what is left when
the time is up is dropped and counted, not exported batch after batch, each with its own timeout.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from spanflow.errors import ConfigurationError

logger = logging.getLogger("spanflow")

TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """The http/protobuf URL for a base endpoint (``/v1/traces`` appended once)."""
    base = endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def otlp_exporter(
    *,
    endpoint: str | None,
    protocol: str = "http/protobuf",
    headers: Mapping[str, str] | None = None,
    timeout: float = 3.0,
) -> SpanExporter:
    """An OTLP span exporter; ``endpoint=None`` leaves it to the ``OTEL_EXPORTER_OTLP_*`` vars."""
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise ConfigurationError(
                "otlp_protocol='grpc' needs the gRPC exporter: pip install 'spanflow[grpc]'"
            ) from exc
        return GrpcExporter(
            endpoint=endpoint, headers=dict(headers) if headers else None, timeout=timeout
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(
        endpoint=traces_url(endpoint) if endpoint else None,
        headers=dict(headers) if headers else None,
        timeout=timeout,
    )


def otlp_processor(
    *,
    endpoint: str | None,
    protocol: str = "http/protobuf",
    headers: Mapping[str, str] | None = None,
    timeout: float = 3.0,
) -> SpanProcessor:
    """A :class:`OTLPSpanProcessor` around :func:`otlp_exporter`."""
    exporter = otlp_exporter(endpoint=endpoint, protocol=protocol, headers=headers, timeout=timeout)
    return OTLPSpanProcessor(exporter, timeout=timeout)


_SLACK_S: Final = 0.25  # shutdown's join waits this much past the deadline for a last export


class OTLPSpanProcessor(SpanProcessor):
    """Batches finished spans to an exporter from a background thread, bounded in memory and time.

    Args:
        exporter: the span exporter (its own per-request timeout should be ``timeout`` or less).
        timeout: seconds ``shutdown`` may take in all, and ``force_flush`` at most.
        max_queue: spans held at most; beyond it new spans are dropped and counted.
        batch_size: spans per export call.
        delay: seconds between exports while spans trickle in.
    """

    #: Its ``on_start`` does nothing, so spanflow may set a step's attributes after start.
    quiet_at_start: Final = True

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        timeout: float = 3.0,
        max_queue: int = 4096,
        batch_size: int = 512,
        delay: float = 0.5,
    ) -> None:
        if not timeout > 0:
            raise ConfigurationError(f"otlp_timeout must be positive seconds; got {timeout!r}")
        self._exporter = exporter
        self._timeout = timeout
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._delay = delay
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flushes: list[threading.Event] = []
        self._stats = dict.fromkeys(
            ("spans_exported", "spans_dropped", "spans_failed", "export_errors"), 0
        )
        self._stopping = False
        self._deadline = float("inf")
        self._dropping = False
        self._thread: threading.Thread | None = None

    def stats(self) -> dict[str, int]:
        """Counters of this processor.

        ``spans_exported`` (accepted by the endpoint); ``export_errors`` (export calls that
        failed or timed out) and ``spans_failed`` (the spans in them); ``spans_dropped`` (queue
        full, or still queued when ``shutdown`` ran out of time); ``queue_size``.
        """
        with self._lock:
            return {**self._stats, "queue_size": len(self._queue)}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span for export; drop (and count) it if the queue is full."""
        try:
            if self._stopping or not span.context.trace_flags.sampled:
                return
            q = self._queue
            if len(q) >= self._max_queue:
                self._drop(1)
                return
            q.append(span)
            if self._thread is None:
                self._start()
            elif len(q) >= self._batch_size and not self._wake.is_set():
                self._wake.set()
        except Exception:
            logger.exception("spanflow OTLP: cannot queue a span")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued; waits ``timeout_millis`` or ``timeout`` seconds, the shorter.

        Returns:
            False if the queue was not exported in time (it stays queued).
        """
        if self._thread is None or self._stopping:
            return not self._queue
        done = threading.Event()
        with self._lock:
            self._flushes.append(done)
        self._wake.set()
        return done.wait(min(timeout_millis / 1000, self._timeout))

    def shutdown(self) -> None:
        """Export what is queued within ``timeout`` seconds, drop (and count) the rest, stop."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._deadline = time.monotonic() + self._timeout
            thread = self._thread
        if thread is not None:
            self._wake.set()
            # An export against a silent endpoint may still be running: it is abandoned (the
            # thread is a daemon), not waited for.
            thread.join(max(0.0, self._deadline - time.monotonic()) + _SLACK_S)
        self._drop_rest()
        try:
            self._exporter.shutdown()
        except Exception:
            logger.exception("spanflow OTLP: exporter shutdown failed")

    # -- internals -----------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._run, name="spanflow-otlp", daemon=True)
            self._thread.start()

    def _drop(self, n: int) -> None:
        with self._lock:
            self._stats["spans_dropped"] += n
            first, self._dropping = not self._dropping, True
        if first:
            logger.warning("spanflow OTLP: queue full (%d spans); dropping spans", self._max_queue)

    def _drop_rest(self) -> None:
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
            self._stats["spans_dropped"] += left
        if left:
            logger.warning(
                "spanflow OTLP: %d spans not exported within otlp_timeout (%.1f s) at shutdown",
                left,
                self._timeout,
            )

    def _take(self) -> list[ReadableSpan]:
        with self._lock:
            q = self._queue
            return [q.popleft() for _ in range(min(len(q), self._batch_size))]

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            with self._lock:
                flushes, self._flushes = self._flushes, []
            while self._queue and time.monotonic() < self._deadline:
                self._export(self._take())
                if len(self._queue) < self._batch_size and not (flushes or self._stopping):
                    break  # a trickle waits for the next round
            if not self._queue:
                self._dropping = False
                for done in flushes:
                    done.set()
            else:
                with self._lock:
                    self._flushes[:0] = flushes
            if self._stopping:
                self._drop_rest()
                return

    def _export(self, batch: list[ReadableSpan]) -> None:
        if not batch:
            return
        try:
            result = self._exporter.export(batch)
        except Exception:
            logger.exception("spanflow OTLP: export failed")
            result = SpanExportResult.FAILURE
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self._stats["spans_exported"] += len(batch)
            else:
                self._stats["export_errors"] += 1
                self._stats["spans_failed"] += len(batch)
