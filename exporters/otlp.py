"""OTLP export (to Jaeger, Phoenix or any collector) next to the local store.

Endpoints have the standard meaning: a base URL such as ``http://localhost:4318`` gets
``/v1/traces`` appended for http/protobuf; ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as is.
A dead or slow endpoint must not slow the application: spans queue in a bounded batch processor
(dropped when full) and each export gives up after ``timeout`` seconds, which also bounds the time
spent at exit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
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
    """A bounded batch processor around :func:`otlp_exporter`."""
    exporter = otlp_exporter(endpoint=endpoint, protocol=protocol, headers=headers, timeout=timeout)
    return BatchSpanProcessor(
        exporter,
        max_queue_size=4096,
        schedule_delay_millis=500,
        max_export_batch_size=512,
        export_timeout_millis=int(timeout * 1000),
    )
