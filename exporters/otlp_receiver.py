"""OTLP/HTTP trace requests as store records: decoding, size limits, redaction, run marking.

Pure functions, no sockets (``spanflow.viewer.serve`` runs the HTTP server). A request body is
protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``), optionally gzip
compressed. Protobuf is decoded with the official ``opentelemetry-proto`` messages and turned into
the OTLP/JSON dict with ``json_format.MessageToDict``, so one converter
(:func:`spanflow.exporters.file_formats.from_otlp_json`) reads both encodings. OTLP/JSON is not
parsed with ``json_format``: OTLP writes trace and span ids as hex, which protobuf's generic JSON
mapping would take for base64 and silently turn into wrong ids.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from spanflow.attributes import RUN_ID
from spanflow.values.redact import Redactor

from .file_formats import from_otlp_json
from .records import EventRecord, LinkRecord, SpanRecord

__all__ = [
    "JSON",
    "MAX_BODY_BYTES",
    "PROTOBUF",
    "BodyTooLarge",
    "Decoded",
    "UnsupportedMediaType",
    "decode_request",
    "encode_response",
    "prepare_spans",
]

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
#: The largest request body accepted, after decompression.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
_CHUNK: Final = 64 * 1024


class BodyTooLarge(ValueError):
    """The body (compressed or not) is over the size limit: HTTP 413."""


class UnsupportedMediaType(ValueError):
    """Neither protobuf nor JSON, or a content encoding other than gzip: HTTP 415."""


@dataclass
class Decoded:
    """The spans of one request, and how many could not be read (with the first reason)."""

    spans: list[SpanRecord] = field(default_factory=list)
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
    limit: int = MAX_BODY_BYTES,
) -> Decoded:
    """The spans of an ``ExportTraceServiceRequest`` body.

    A span that cannot be stored (an all-zero or short id, a missing time) is counted in
    ``rejected`` rather than failing the whole request.

    Raises:
        UnsupportedMediaType: the content type or encoding is not supported.
        BodyTooLarge: over ``limit`` bytes, before or after decompression.
        ValueError: the body cannot be decoded as that type.
    """
    kind = media_type(content_type)
    raw = decompress(body, content_encoding, limit)
    document: Any
    if kind == PROTOBUF:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(raw)
        except DecodeError as exc:
            raise ValueError(f"not an ExportTraceServiceRequest ({exc})") from None
        document = json_format.MessageToDict(request)
    else:
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ValueError("an OTLP/JSON request is a JSON object")
        document.setdefault("resourceSpans", [])
    try:
        return Decoded(from_otlp_json(document))
    except ValueError:
        pass  # some span is bad: read them one by one to keep the good ones
    return _span_by_span(document)


def _span_by_span(document: Mapping[str, Any]) -> Decoded:
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
                    out.spans.extend(from_otlp_json({"resourceSpans": [one]}))
                except ValueError as exc:
                    reject(exc)
    return out


def encode_response(kind: str, rejected: int = 0, message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse`` in the request's encoding (partial success if any)."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if kind == PROTOBUF:
        data: bytes = response.SerializeToString()
        return data
    return json.dumps(json_format.MessageToDict(response)).encode("utf-8")


def _scrub(redactor: Redactor, attributes: Mapping[str, Any]) -> dict[str, Any]:
    clean = redactor.scrub_attributes(attributes)
    return dict(attributes) if clean is None else clean


def prepare_spans(spans: Iterable[SpanRecord], redactor: Redactor) -> list[SpanRecord]:
    """Received spans as the store keeps them: secrets redacted, each trace's root a run.

    Span, event, link and resource attributes go through ``redactor``, and so does the status
    message. A root span (no parent) is given ``spanflow.run.id`` = its trace id unless it has
    one, so the store files the trace as a run named after the root, with the resource's
    service; spans that arrive before their root join the same run.
    """
    out = []
    for span in spans:
        attributes = _scrub(redactor, span.attributes)
        if span.parent_id is None:
            attributes.setdefault(RUN_ID, span.run_id)
        message = span.status_message
        out.append(
            span.model_copy(
                update={
                    "attributes": attributes,
                    "status_message": redactor.redact_text(message)[0] if message else message,
                    "events": [
                        EventRecord(
                            name=e.name,
                            time_ns=e.time_ns,
                            attributes=_scrub(redactor, e.attributes),
                        )
                        for e in span.events
                    ],
                    "links": [
                        LinkRecord(
                            trace_id=ln.trace_id,
                            span_id=ln.span_id,
                            attributes=_scrub(redactor, ln.attributes),
                        )
                        for ln in span.links
                    ],
                    "resource": _scrub(redactor, span.resource),
                }
            )
        )
    return out
