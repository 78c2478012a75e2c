"""OTLP/HTTP trace requests as store records: decoding, size limits, redaction, run marking.

Pure functions, no sockets (``spanflow.viewer.serve`` runs the HTTP server). A request body is
protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``), optionally gzip
compressed. Protobuf is parsed with the official ``opentelemetry-proto`` messages and read field
by field (going through ``json_format.MessageToDict`` cost more than everything else a request
does); OTLP/JSON is read by :func:`spanflow.exporters.file_formats.otlp_json_span_data`, the
reader ``spanflow import`` uses. Both fill the same ``OtlpSpanParts``, and
:func:`spanflow.exporters.file_formats.check_otlp_span` decides what a span means for either, so
the two encodings cannot drift apart. Records are the plain ``SpanData``: the receiver never
loads pydantic. OTLP/JSON is not parsed with ``json_format``: OTLP writes trace and span ids as
hex, which protobuf's generic JSON mapping would take for base64 and silently turn into wrong ids.

Redaction and run marking happen while the records are built (a hook the converters call), so
every span is built once and never copied.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from spanflow.attributes import RUN_ID
from spanflow.values.redact import Redactor

from .file_formats import OtlpSpanParts, otlp_json_span_data, otlp_span_data
from .records import SpanData

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span


__all__ = [
    "JSON",
    "MAX_BODY_BYTES",
    "MAX_SPANS",
    "PROTOBUF",
    "BodyTooLarge",
    "Decoded",
    "UnsupportedMediaType",
    "decode_request",
    "encode_response",
]

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
#: The largest request body accepted, after decompression.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
#: The most spans one request may hold. Exporters send a few hundred to a few thousand; a
#: small body can hold millions of empty ones, each costing time to read and reject.
MAX_SPANS: Final = 100_000
_CHUNK: Final = 64 * 1024


class BodyTooLarge(ValueError):
    """The body (compressed or not) is over the size limit, or holds more than ``MAX_SPANS``
    spans: HTTP 413."""


class UnsupportedMediaType(ValueError):
    """Neither protobuf nor JSON, or a content encoding other than gzip: HTTP 415."""


@dataclass
class Decoded:
    """The spans of one request, and how many could not be read (with the first reason)."""

    spans: list[SpanData] = field(default_factory=list)
    rejected: int = 0
    error: str = ""


def media_type(content_type: str | None) -> str:
    """``application/x-protobuf`` or ``application/json`` from a Content-Type header.

    Raises:
        UnsupportedMediaType: any other type.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported; send {PROTOBUF} or {JSON}"
        )
    return kind


def decompress(body: bytes, encoding: str | None, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body without its ``Content-Encoding`` (none or gzip), at most ``limit`` bytes.

    Decompression stops as soon as the output passes ``limit``: a small gzip bomb never
    expands in memory.

    Raises:
        BodyTooLarge: the decompressed body is over ``limit``.
        UnsupportedMediaType: an encoding other than identity or gzip.
        ValueError: the body is not valid gzip.
    """
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        if len(body) > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes")
        return body
    if name not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = bytearray()
    data = body
    try:
        while data:
            out += inflater.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise BodyTooLarge(f"the body is over {limit} bytes once decompressed")
            data = inflater.unconsumed_tail
        out += inflater.flush()
    except zlib.error as exc:
        raise ValueError(f"the body is not valid gzip ({exc})") from None
    if len(out) > limit:
        raise BodyTooLarge(f"the body is over {limit} bytes once decompressed")
    if not inflater.eof:
        raise ValueError("the gzip body is truncated")
    return bytes(out)


def decode_request(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None = None,
    *,
    redactor: Redactor,
    limit: int = MAX_BODY_BYTES,
) -> Decoded:
    """The spans of an ``ExportTraceServiceRequest`` body, as the store keeps them.

    Span, event, link and resource attributes go through ``redactor``, and so does the status
    message. A root span (no parent) is given ``spanflow.run.id`` = its trace id unless it has
    one, so the store files the trace as a run named after the root, with the resource's
    service; spans that arrive before their root join the same run. A span that cannot be
    stored (an all-zero or short id, a missing time) is counted in ``rejected`` rather than
    failing the whole request.

    Raises:
        UnsupportedMediaType: the content type or encoding is not supported.
        BodyTooLarge: over ``limit`` bytes, before or after decompression.
        ValueError: the body cannot be decoded as that type.
    """
    kind = media_type(content_type)
    raw = decompress(body, content_encoding, limit)
    prepare = _Prepare(redactor)
    if kind == PROTOBUF:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(raw)
        except DecodeError as exc:
            raise ValueError(f"not an ExportTraceServiceRequest ({exc})") from None
        _check_count(sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans))
        return _from_protobuf(request, prepare)
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    except RecursionError:
        raise ValueError("not OTLP/JSON: nested deeper than Python can read") from None
    if not isinstance(document, dict):
        raise ValueError("an OTLP/JSON request is a JSON object")
    document.setdefault("resourceSpans", [])
    _check_count(_json_span_count(document))
    try:
        return Decoded(otlp_json_span_data(document, prepare))
    except ValueError:
        pass  # some span is bad: read them one by one to keep the good ones
    return _span_by_span(document, prepare)


def _check_count(spans: int) -> None:
    if spans > MAX_SPANS:
        raise BodyTooLarge(f"the request holds {spans} spans; at most {MAX_SPANS} are read at once")


def _json_span_count(document: Mapping[str, Any]) -> int:
    # Counted before anything is read; a malformed level counts nothing (the readers refuse it).
    count = 0
    resource_spans = document.get("resourceSpans")
    for rs in resource_spans if isinstance(resource_spans, list) else ():
        scopes = (
            rs.get("scopeSpans", rs.get("instrumentationLibrarySpans"))
            if isinstance(rs, dict)
            else None
        )
        for ss in scopes if isinstance(scopes, list) else ():
            spans = ss.get("spans") if isinstance(ss, dict) else None
            count += len(spans) if isinstance(spans, list) else 0
    return count


class _Prepare:
    """The hook that makes a received span what the store keeps: redacted, its root a run."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        # Resources are shared by the spans of a request: each is redacted once.
        self._resources: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def __call__(self, parts: OtlpSpanParts) -> None:
        redactor = self._redactor
        attributes = _scrub(redactor, parts.attributes)
        if parts.parent_id is None:
            attributes.setdefault(RUN_ID, parts.trace_id)
        parts.attributes = attributes
        # Names too: an instrumented HTTP client may name its span after the URL, query and all.
        parts.name = redactor.redact_text(parts.name)[0]
        if parts.status_message:
            parts.status_message = redactor.redact_text(parts.status_message)[0]
        if parts.events:
            parts.events = [
                (redactor.redact_text(n)[0], ns, _scrub(redactor, a)) for n, ns, a in parts.events
            ]
        if parts.links:
            parts.links = [(tr, sp, _scrub(redactor, a)) for tr, sp, a in parts.links]
        resource = parts.resource
        hit = self._resources.get(id(resource))
        if hit is None or hit[0] is not resource:
            hit = (resource, _scrub(redactor, resource))
            self._resources[id(resource)] = hit
        parts.resource = hit[1]


def _scrub(redactor: Redactor, attributes: dict[str, Any]) -> dict[str, Any]:
    clean = redactor.scrub_attributes(attributes)
    return attributes if clean is None else clean


def _from_protobuf(request: Any, prepare: _Prepare) -> Decoded:
    out = Decoded()
    for r, rs in enumerate(request.resource_spans):
        resource = _pb_attributes(rs.resource.attributes)
        for s, ss in enumerate(rs.scope_spans):
            for i, span in enumerate(ss.spans):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                try:
                    out.spans.append(otlp_span_data(_pb_parts(span, resource, where), prepare))
                except ValueError as exc:
                    out.rejected += 1
                    out.error = out.error or str(exc)
    return out


def _pb_parts(span: Span, resource: dict[str, Any], where: str) -> OtlpSpanParts:
    status = span.status
    return OtlpSpanParts(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        name=span.name,
        kind=span.kind,
        status_code=status.code,
        status_message=status.message,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes=_pb_attributes(span.attributes),
        events=[(e.name, e.time_unix_nano, _pb_attributes(e.attributes)) for e in span.events],
        links=[
            (ln.trace_id.hex(), ln.span_id.hex(), _pb_attributes(ln.attributes))
            for ln in span.links
        ],
        resource=resource,
        where=where,
    )


def _pb_attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs:
        value = kv.value
        which = value.WhichOneof("value")
        # Most values are strings: read those here, without another call.
        out[kv.key] = value.string_value if which == "string_value" else _pb_value(value)
    return out


def _pb_value(value: AnyValue) -> Any:
    # The same values the OTLP/JSON reader gives: bytes stay base64 text (stored values are JSON).
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which is None:
        return None
    if which == "array_value":
        return [_pb_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, which)  # bool_value, int_value, double_value


def _span_by_span(document: Mapping[str, Any], prepare: _Prepare) -> Decoded:
    out = Decoded()

    def reject(error: Exception, count: int = 1) -> None:
        out.rejected += count
        out.error = out.error or str(error)

    resource_spans = document.get("resourceSpans")
    if not isinstance(resource_spans, list):
        raise ValueError("'resourceSpans' must be a list")
    for rs in resource_spans:
        if not isinstance(rs, Mapping):
            raise ValueError("each 'resourceSpans' item must be an object")
        scope_key = "scopeSpans" if "scopeSpans" in rs else "instrumentationLibrarySpans"
        scopes = rs.get(scope_key) or []
        for ss in scopes if isinstance(scopes, list) else [None]:
            spans = ss.get("spans") if isinstance(ss, Mapping) else None
            if not isinstance(spans, list):
                reject(ValueError(f"'{scope_key}' items must hold a list of spans"))
                continue
            for span in spans:
                one = {"resource": rs.get("resource", {}), "scopeSpans": [{"spans": [span]}]}
                try:
                    out.spans.extend(otlp_json_span_data({"resourceSpans": [one]}, prepare))
                except ValueError as exc:
                    reject(exc)
    return out


def encode_response(kind: str, rejected: int = 0, message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse`` in the request's encoding (partial success if any)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if kind == PROTOBUF:
        data: bytes = response.SerializeToString()
        return data
    from google.protobuf import json_format

    return json.dumps(json_format.MessageToDict(response)).encode("utf-8")
