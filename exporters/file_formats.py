"""Stored runs as files other tools read: Jaeger's JSON and OTLP/JSON, and OTLP/JSON back.

Pure functions; the ``write_*`` ones write through a callable they are given, as they read the
spans, so a run of any size is exported in the memory of one span. ``to_jaeger`` writes what Jaeger's UI loads with "JSON file" upload;
``to_otlp_json`` writes an ``ExportTraceServiceRequest`` in the OTLP/JSON encoding, which the
Jaeger UI, the OpenTelemetry Collector and most backends read too. ``from_otlp_json`` reads that
back, and also the files of the Collector's file exporter (see ``parse_otlp_json`` for JSON lines);
``from_jaeger_json`` reads Jaeger's JSON back, and ``parse_trace_file`` tells the two apart.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from . import records
from .records import AnyRun, AnySpan, EventData, LinkData, SpanData

if TYPE_CHECKING:
    # The pydantic models load on first use (``records``): reading OTLP into plain records, as
    # ``spanflow serve`` does, never imports pydantic.
    from .records import EventRecord, LinkRecord, SpanRecord, SpanStatus

SCOPE_NAME: Final = "spanflow"
SERVICE_NAME: Final = "service.name"
DEFAULT_SERVICE: Final = "spanflow"

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_HEX = re.compile(r"[0-9a-fA-F]*\Z")  # used with match(); \Z: "$" would admit a final "\n"

# OTLP enum values (opentelemetry/proto/trace/v1/trace.proto: Span.SpanKind, Status.StatusCode).
_KIND_NUMBERS: Final = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_KIND_NAMES: Final = {number: name for name, number in _KIND_NUMBERS.items()} | {0: "INTERNAL"}
_STATUS_NUMBERS: Final = {"UNSET": 0, "OK": 1, "ERROR": 2}
_STATUS_NAMES: Final = {number: name for name, number in _STATUS_NUMBERS.items()}
# How the protobuf JSON mapping spells the doubles JSON has no number for.
_NON_FINITE: Final = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _check_run(run: AnyRun, spans: Sequence[AnySpan]) -> None:
    for span in spans:
        if span.run_id != run.id:
            raise ValueError(f"span {span.span_id} belongs to run {span.run_id}, not to {run.id}")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# --- Jaeger -------------------------------------------------------------------------------------
#
# The shape is jaeger-query's HTTP API answer, which is what the UI's "JSON file" upload accepts:
# the `structuredResponse` envelope {data, total, limit, offset, errors} of
# jaegertracing/jaeger cmd/query/app/http_handler.go around the `Trace`/`Span`/`Reference`/
# `Process`/`Log`/`KeyValue` structs of jaegertracing/jaeger model/json/model.go (the UI's own
# fixture packages/jaeger-ui/src/utils/fixtures/otlp2jaeger-out.json has the same layout). OTel
# concepts map to tags as in the Collector's pkg/translator/jaeger README: `span.kind`,
# `otel.status_code`, `otel.status_description`, `error=true`, events as logs with an `event`
# field, links as FOLLOWS_FROM references after the CHILD_OF parent reference.


def _jaeger_value(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return "int64", value
        return "string", str(value)
    if isinstance(value, float):
        # NaN and infinities are not JSON numbers.
        return ("float64", value) if math.isfinite(value) else ("string", str(value))
    if isinstance(value, str):
        return "string", value
    return "string", _json_text(value)


def _jaeger_tag(key: str, value: Any) -> dict[str, Any]:
    kind, converted = _jaeger_value(value)
    return {"key": key, "type": kind, "value": converted}


def _jaeger_tags(span: AnySpan) -> Iterator[dict[str, Any]]:
    """The tags one at a time (a span may carry a million attributes)."""
    own = {"otel.scope.name": _jaeger_tag("otel.scope.name", SCOPE_NAME)}
    own["span.kind"] = _jaeger_tag("span.kind", span.kind.lower())
    if span.status != "UNSET":
        own["otel.status_code"] = _jaeger_tag("otel.status_code", span.status)
    if span.status_message:
        own["otel.status_description"] = _jaeger_tag("otel.status_description", span.status_message)
    if span.status == "ERROR":
        # Jaeger marks failed spans by this tag alone; it overrides an attribute of that name.
        own["error"] = _jaeger_tag("error", True)
    # As if added to a dict of the attributes: an own tag takes an attribute's place.
    for key, value in span.attributes.items():
        yield own.pop(key) if key in own else _jaeger_tag(key, value)
    yield from own.values()


def _jaeger_log(event: EventData | EventRecord) -> dict[str, Any]:
    fields = [_jaeger_tag(key, value) for key, value in event.attributes.items()]
    if "event" not in event.attributes:  # an `event` attribute takes precedence over the name
        fields.insert(0, _jaeger_tag("event", event.name))
    return {"timestamp": event.time_ns // 1000, "fields": fields}


def _jaeger_span(span: AnySpan, process_id: str) -> dict[str, Any]:
    references = []
    if span.parent_id is not None:
        references.append({"refType": "CHILD_OF", "traceID": span.run_id, "spanID": span.parent_id})
    references.extend(
        {"refType": "FOLLOWS_FROM", "traceID": link.trace_id, "spanID": link.span_id}
        for link in span.links
    )
    return {
        "traceID": span.run_id,
        "spanID": span.span_id,
        "operationName": span.name,
        "references": references,
        "startTime": span.start_ns // 1000,
        "duration": max(0, span.end_ns - span.start_ns) // 1000,
        "flags": 1,  # sampled: it was recorded
        "tags": _Lazy(_jaeger_tags(span)),
        "logs": _Lazy(_jaeger_log(event) for event in span.events),
        "processID": process_id,
        "warnings": None,
    }


class _Process:
    """Jaeger processes: one per distinct resource, numbered in order of appearance."""

    def __init__(self, run: AnyRun) -> None:
        self._run = run
        self._ids: dict[str, str] = {}
        self.processes: dict[str, dict[str, Any]] = {}

    def of(self, span: AnySpan) -> str:
        key = _json_text(sorted(span.resource.items()))
        process_id = self._ids.get(key)
        if process_id is None:
            process_id = self._ids[key] = f"p{len(self._ids) + 1}"
            service = span.resource.get(SERVICE_NAME) or self._run.service or DEFAULT_SERVICE
            self.processes[process_id] = {
                "serviceName": str(service),
                "tags": [_jaeger_tag(k, v) for k, v in span.resource.items() if k != SERVICE_NAME],
            }
        return process_id


def to_jaeger(run: AnyRun, spans: Sequence[AnySpan]) -> dict[str, Any]:
    """One run as the JSON Jaeger's UI loads with "JSON file" upload (jaeger-query's format).

    Times are microseconds since the epoch; each distinct resource becomes a process whose service
    is the resource's ``service.name`` (else the run's service). A run without spans gives an
    empty ``data`` list.

    Raises:
        ValueError: a span belongs to another run.
    """
    _check_run(run, spans)
    processes = _Process(run)
    out = [_materialize(_jaeger_span(span, processes.of(span))) for span in spans]
    data = (
        [{"traceID": run.id, "spans": out, "processes": processes.processes, "warnings": None}]
        if out
        else []
    )
    return {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}


def write_jaeger(run: AnyRun, spans: Iterable[AnySpan], write: Callable[[str], Any]) -> int:
    """Write what :func:`to_jaeger` returns, as JSON text, while reading ``spans``.

    Memory stays that of one span, whatever the run's size: each span is written as soon as it
    is read, its tags one by one. Returns the number of spans written.

    Raises:
        ValueError: a span belongs to another run (the text written so far is incomplete).
    """
    sink = _Sink(write)
    processes = _Process(run)
    count = 0
    for span in spans:
        _check_run(run, [span])
        sink.write(",\n" if count else f'{{"data": [{{"traceID": {_dump(run.id)}, "spans": [\n')
        _emit(_jaeger_span(span, processes.of(span)), sink)
        count += 1
    if count:
        sink.write(f'\n], "processes": {_dump(processes.processes)}, "warnings": null}}], ')
        sink.write('"total": 0, "limit": 0, "offset": 0, "errors": null}\n')
    else:
        sink.write(_dump(to_jaeger(run, [])) + "\n")
    sink.flush()
    return count


# --- OTLP/JSON: writing -------------------------------------------------------------------------
#
# The protobuf JSON mapping of opentelemetry/proto/collector/trace/v1 ExportTraceServiceRequest
# with OTLP's own rules (opentelemetry-proto docs/specification.md, "JSON Protobuf Encoding"):
# lowerCamelCase keys, trace and span ids as hex (not base64), enums as integers, 64-bit
# integers as decimal strings.


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return {"intValue": str(value)}
        return {"stringValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else _NON_FINITE[str(value)]}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, (bytes, bytearray)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": _key_values(value)}}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_any_value(item) for item in value]}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def _key_values(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": str(key), "value": _any_value(value)} for key, value in attributes.items()]


def _lazy_key_values(attributes: Mapping[str, Any]) -> _Lazy:
    return _Lazy({"key": str(k), "value": _any_value(v)} for k, v in attributes.items())


def _otlp_span(span: AnySpan) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": span.run_id, "spanId": span.span_id}
    if span.parent_id is not None:
        out["parentSpanId"] = span.parent_id
    status: dict[str, Any] = {"code": _STATUS_NUMBERS[span.status]}
    if span.status_message:
        status["message"] = span.status_message
    out.update(
        name=span.name,
        kind=_KIND_NUMBERS.get(span.kind.upper(), _KIND_NUMBERS["INTERNAL"]),
        startTimeUnixNano=str(span.start_ns),
        endTimeUnixNano=str(span.end_ns),
        attributes=_lazy_key_values(span.attributes),
        events=_Lazy(
            {
                "timeUnixNano": str(e.time_ns),
                "name": e.name,
                "attributes": _lazy_key_values(e.attributes),
            }
            for e in span.events
        ),
        links=[
            {"traceId": ln.trace_id, "spanId": ln.span_id, "attributes": _key_values(ln.attributes)}
            for ln in span.links
        ],
        status=status,
    )
    return out


def to_otlp_json(run: AnyRun, spans: Sequence[AnySpan]) -> dict[str, Any]:
    """One run as an OTLP/JSON ``ExportTraceServiceRequest`` (one ``resourceSpans`` per resource).

    A span whose resource has no ``service.name`` is given the run's service, as OTLP receivers
    file spans by service.

    Raises:
        ValueError: a span belongs to another run.
    """
    _check_run(run, spans)
    groups: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for span in spans:
        resource = _otlp_resource(run, span)
        key = _json_text(sorted(resource.items()))
        if key not in groups:
            groups[key] = (resource, [])
        groups[key][1].append(_materialize(_otlp_span(span)))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _key_values(resource)},
                "scopeSpans": [{"scope": {"name": SCOPE_NAME}, "spans": otlp_spans}],
            }
            for resource, otlp_spans in groups.values()
        ]
    }


def _otlp_resource(run: AnyRun, span: AnySpan) -> dict[str, Any]:
    resource = dict(span.resource)
    if SERVICE_NAME not in resource and run.service:
        resource[SERVICE_NAME] = run.service
    return resource


def write_otlp_json(run: AnyRun, spans: Iterable[AnySpan], write: Callable[[str], Any]) -> int:
    """Write an OTLP/JSON ``ExportTraceServiceRequest`` of ``spans`` while reading them.

    Memory stays that of one span, as for :func:`write_jaeger`. Spans of one resource should
    come together (``Store.iter_spans(by_resource=True)``): each change of resource opens a
    new ``resourceSpans`` entry, which OTLP allows. Returns the number of spans written.

    Raises:
        ValueError: a span belongs to another run (the text written so far is incomplete).
    """
    sink = _Sink(write)
    sink.write('{"resourceSpans": [')
    current: str | None = None
    count = 0
    for span in spans:
        _check_run(run, [span])
        resource = _otlp_resource(run, span)
        key = _json_text(sorted(resource.items()))
        if key != current:
            if current is not None:
                sink.write("\n]}]},")
            resource_json = _dump({"attributes": _key_values(resource)})
            sink.write(f'\n{{"resource": {resource_json}, "scopeSpans": [{{"scope": ')
            sink.write(f'{_dump({"name": SCOPE_NAME})}, "spans": [\n')
            current = key
        else:
            sink.write(",\n")
        _emit(_otlp_span(span), sink)
        count += 1
    sink.write("\n]}]}\n]}\n" if count else "]}\n")
    sink.flush()
    return count


# --- streaming JSON -----------------------------------------------------------------------------


#: Items of a lazy array encoded per ``json.dumps`` call.
_BATCH: Final = 2000


class _Lazy:
    """A JSON array whose items are made while it is written (see :func:`_emit`)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = items


def _materialize(value: Any) -> Any:
    if isinstance(value, _Lazy):
        return [_materialize(item) for item in value.items]
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialize(item) for item in value]
    return value


def _dump(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only the escaped form can be written
        text = json.dumps(value, default=str)
    return text


def _emit(value: Any, sink: _Sink) -> None:
    """Write ``value`` as JSON, its :class:`_Lazy` arrays (directly in it) in batches.

    The plain fields of an object are written in one piece first, its lazy arrays after them
    (key order carries no meaning in JSON), ``_BATCH`` items per ``json.dumps`` call.
    """
    if isinstance(value, _Lazy):
        sink.write("[")
        items = iter(value.items)
        first = True
        while batch := list(itertools.islice(items, _BATCH)):
            text = _dump([_materialize(item) for item in batch])[1:-1]
            sink.write(text if first else ", " + text)
            first = False
        sink.write("]")
    elif isinstance(value, dict) and any(isinstance(v, _Lazy) for v in value.values()):
        plain = {k: v for k, v in value.items() if not isinstance(v, _Lazy)}
        head = _dump(plain)[:-1]
        sink.write(head)
        for i, (key, item) in enumerate((k, v) for k, v in value.items() if k not in plain):
            sink.write(f"{', ' if plain or i else ''}{_dump(str(key))}: ")
            _emit(item, sink)
        sink.write("}")
    else:
        sink.write(_dump(value))


class _Sink:
    """Collects small pieces of text and hands them on in blocks of about 64 KiB."""

    BLOCK: Final = 1 << 16

    def __init__(self, write: Callable[[str], Any]) -> None:
        self._write = write
        self._parts: list[str] = []
        self._size = 0

    def write(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self.BLOCK:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._write("".join(self._parts))
            self._parts.clear()
            self._size = 0


# --- OTLP/JSON: reading -------------------------------------------------------------------------
#
# Lenient where producers differ in practice (the Collector's file exporter, protobuf's generic
# JSON printer): int64 as string or number, enums as integers or names, base64 ids, fields with
# default values left out, the pre-1.0 `instrumentationLibrarySpans` key. Strict about what
# cannot be guessed: ids, times and value types, with the path of the offending field.


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"OTLP/JSON {where}: {message}")


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected an object, got {_describe(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, f"expected a list, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _id(value: Any, nbytes: int, where: str) -> str:
    if isinstance(value, str) and len(value) == nbytes * 2 and _HEX.match(value):
        hex_id = value.lower()
    elif isinstance(value, str) and value and len(value) == 4 * math.ceil(nbytes / 3):
        # protobuf's generic JSON mapping writes bytes fields as base64
        try:
            hex_id = base64.b64decode(value, validate=True).hex()
        except (binascii.Error, ValueError):
            hex_id = ""
        if len(hex_id) != nbytes * 2:
            raise _fail(where, f"expected {nbytes * 2} hex digits, got {_describe(value)}")
    else:
        raise _fail(where, f"expected {nbytes * 2} hex digits, got {_describe(value)}")
    if hex_id == "0" * (nbytes * 2):
        raise _fail(where, "an all-zero id is not a valid trace or span id")
    return hex_id


def _int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _fail(
        where, f"expected an integer (a number or a decimal string), got {_describe(value)}"
    )


def _time(container: Mapping[str, Any], key: str, where: str) -> int:
    if key not in container:
        raise _fail(f"{where}.{key}", "missing")
    ns = _int(container[key], f"{where}.{key}")
    if ns < 0:
        raise _fail(f"{where}.{key}", f"a time cannot be negative, got {ns}")
    return ns


def _double(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # also "NaN", "Infinity", "-Infinity" of the protobuf mapping
        except ValueError:
            pass
    raise _fail(where, f"expected a number, got {_describe(value)}")


def _from_any(value: Any, where: str) -> Any:
    value = _obj(value, where)
    if "stringValue" in value:
        text = value["stringValue"]
        if not isinstance(text, str):
            raise _fail(f"{where}.stringValue", f"expected a string, got {_describe(text)}")
        return text
    if "boolValue" in value:
        flag = value["boolValue"]
        if not isinstance(flag, bool):
            raise _fail(f"{where}.boolValue", f"expected true or false, got {_describe(flag)}")
        return flag
    if "intValue" in value:
        return _int(value["intValue"], f"{where}.intValue")
    if "doubleValue" in value:
        return _double(value["doubleValue"], f"{where}.doubleValue")
    if "arrayValue" in value:
        array = _obj(value["arrayValue"], f"{where}.arrayValue")
        items = _list(array.get("values"), f"{where}.arrayValue.values")
        return [_from_any(item, f"{where}.arrayValue.values[{i}]") for i, item in enumerate(items)]
    if "kvlistValue" in value:
        kvlist = _obj(value["kvlistValue"], f"{where}.kvlistValue")
        return _from_key_values(kvlist.get("values"), f"{where}.kvlistValue.values")
    if "bytesValue" in value:
        raw = value["bytesValue"]
        if not isinstance(raw, str):
            raise _fail(f"{where}.bytesValue", f"expected base64 text, got {_describe(raw)}")
        return raw  # kept as its base64 text: stored values are JSON
    return None  # an empty AnyValue


def _from_key_values(value: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, item in enumerate(_list(value, where)):
        kv = _obj(item, f"{where}[{i}]")
        key = kv.get("key")
        if not isinstance(key, str):
            raise _fail(f"{where}[{i}].key", f"expected a string, got {_describe(key)}")
        out[key] = _from_any(kv.get("value", {}), f"{where}[{i}].value")
    return out


def _enum(value: Any, names: Mapping[int, str], prefix: str, where: str) -> str:
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        name = value.removeprefix(prefix)
        if name in names.values() or name == "UNSPECIFIED":
            return names[0] if name == "UNSPECIFIED" else name
        raise _fail(where, f"unknown value {value!r}")
    number = _int(value, where)
    if number not in names:
        raise _fail(where, f"unknown value {number}")
    return names[number]


@dataclasses.dataclass(slots=True)
class OtlpSpanParts:
    """One OTLP span's fields as its encoding gave them, before :func:`check_otlp_span` checks
    and normalises them: ids as hex (or base64) text, times and enums as numbers or text,
    attributes already decoded. Both readers (OTLP/JSON here, protobuf messages in
    ``otlp_receiver``) fill it, so what a span means is decided in one place."""

    trace_id: Any
    span_id: Any
    parent_id: Any  # None or "" for a root
    name: Any
    kind: Any
    status_code: Any
    status_message: Any
    start_ns: Any  # None when missing
    end_ns: Any
    attributes: dict[str, Any]
    events: list[tuple[Any, Any, dict[str, Any]]]  # (name, time, attributes)
    links: list[tuple[Any, Any, dict[str, Any]]]  # (trace id, span id, attributes)
    resource: dict[str, Any]
    where: str


#: Called with a span's checked parts (ids as lowercase hex, times as ints, kind and status as
#: names) before its record is built: it may change the attributes, events, links, message and
#: resource in place (the receiver redacts them and marks runs there).
PartsHook = Callable[[OtlpSpanParts], None]


def _ns(value: Any, where: str) -> int:
    if value is None:
        raise _fail(where, "missing")
    ns = _int(value, where)
    if ns < 0:
        raise _fail(where, f"a time cannot be negative, got {ns}")
    if ns > _INT64_MAX:  # a fixed64 may hold it; SQLite's integers cannot
        raise _fail(where, f"a time must fit in 64 signed bits, got {ns}")
    return ns


_ZERO_IDS: Final = {8: "0" * 16, 16: "0" * 32}


def _hex_id(value: Any, nbytes: int, where: str, field: str) -> str:
    if (
        type(value) is str
        and len(value) == 2 * nbytes
        and value != _ZERO_IDS[nbytes]
        and _HEX.match(value)
    ):
        return value.lower()
    return _id(value, nbytes, f"{where}.{field}")


def check_otlp_span(parts: OtlpSpanParts, hook: PartsHook | None = None) -> None:
    """One OTLP span's parts checked and normalised in place (ids, times, enums, name and
    message), then ``hook`` applied: what a span means, for every OTLP encoding.

    Raises:
        ValueError: a field cannot be stored; the message names it (``parts.where``).
    """
    where = parts.where
    # Each check has a fast path for the usual value; the general one words the error.
    parts.trace_id = _hex_id(parts.trace_id, 16, where, "traceId")
    parts.span_id = _hex_id(parts.span_id, 8, where, "spanId")
    parent = parts.parent_id
    parts.parent_id = _hex_id(parent, 8, where, "parentSpanId") if parent else None
    message = parts.status_message or None
    if message is not None and not isinstance(message, str):
        raise _fail(f"{where}.status.message", f"expected a string, got {_describe(message)}")
    parts.status_message = message
    if not isinstance(parts.name, str):
        raise _fail(f"{where}.name", f"expected a string, got {_describe(parts.name)}")
    kind = parts.kind
    if type(kind) is not int or kind not in _KIND_NAMES:
        kind = _enum(kind, _KIND_NAMES, "SPAN_KIND_", f"{where}.kind")
    else:
        kind = _KIND_NAMES[kind]
    parts.kind = kind
    code = parts.status_code
    if type(code) is not int or code not in _STATUS_NAMES:
        code = _enum(code, _STATUS_NAMES, "STATUS_CODE_", f"{where}.status.code")
    else:
        code = _STATUS_NAMES[code]
    parts.status_code = code
    start, end = parts.start_ns, parts.end_ns
    parts.start_ns = (
        start
        if type(start) is int and 0 <= start <= _INT64_MAX
        else _ns(start, f"{where}.startTimeUnixNano")
    )
    parts.end_ns = (
        end if type(end) is int and 0 <= end <= _INT64_MAX else _ns(end, f"{where}.endTimeUnixNano")
    )
    if parts.events:
        parts.events = [
            (str(name), _ns(time_ns, f"{where}.events[{i}].timeUnixNano"), attrs)
            for i, (name, time_ns, attrs) in enumerate(parts.events)
        ]
    if parts.links:
        parts.links = [
            (
                _hex_id(trace_id, 16, where, f"links[{i}].traceId"),
                _hex_id(span_id, 8, where, f"links[{i}].spanId"),
                attrs,
            )
            for i, (trace_id, span_id, attrs) in enumerate(parts.links)
        ]
    if hook is not None:
        hook(parts)


def otlp_span_record(parts: OtlpSpanParts) -> SpanRecord:
    """The validated record of one OTLP span (see :func:`check_otlp_span`)."""
    check_otlp_span(parts)
    return records.SpanRecord(
        run_id=parts.trace_id,
        span_id=parts.span_id,
        parent_id=parts.parent_id,
        name=parts.name,
        kind=parts.kind,
        status=cast("SpanStatus", parts.status_code),
        status_message=parts.status_message,
        start_ns=parts.start_ns,
        end_ns=parts.end_ns,
        attributes=parts.attributes,
        events=[records.EventRecord(name=n, time_ns=ns, attributes=a) for n, ns, a in parts.events],
        links=[
            records.LinkRecord(trace_id=tr, span_id=sp, attributes=a) for tr, sp, a in parts.links
        ],
        resource=parts.resource,
    )


def otlp_span_data(parts: OtlpSpanParts, hook: PartsHook | None = None) -> SpanData:
    """One OTLP span as a plain ``SpanData`` (see :func:`check_otlp_span`): the same fields as
    :func:`otlp_span_record`, checked the same way, without pydantic."""
    check_otlp_span(parts, hook)
    return SpanData(
        run_id=parts.trace_id,
        span_id=parts.span_id,
        parent_id=parts.parent_id,
        name=parts.name,
        kind=parts.kind,
        status=parts.status_code,
        status_message=parts.status_message,
        start_ns=parts.start_ns,
        end_ns=parts.end_ns,
        attributes=parts.attributes,
        events=tuple(EventData(n, ns, a) for n, ns, a in parts.events),
        links=tuple(LinkData(tr, sp, a) for tr, sp, a in parts.links),
        resource=dict(parts.resource),  # shared by the resource's spans: each keeps its own
    )


def _from_otlp_span(
    raw: Any, resource: dict[str, Any], where: str, build: Callable[[OtlpSpanParts], _S]
) -> _S:
    span = _obj(raw, where)
    status = _obj(span.get("status", {}), f"{where}.status")
    events = []
    for i, item in enumerate(_list(span.get("events"), f"{where}.events")):
        at = f"{where}.events[{i}]"
        event = _obj(item, at)
        attributes = _from_key_values(event.get("attributes"), f"{at}.attributes")
        events.append((event.get("name", ""), event.get("timeUnixNano"), attributes))
    links = []
    for i, item in enumerate(_list(span.get("links"), f"{where}.links")):
        at = f"{where}.links[{i}]"
        link = _obj(item, at)
        attributes = _from_key_values(link.get("attributes"), f"{at}.attributes")
        links.append((link.get("traceId"), link.get("spanId"), attributes))
    parts = OtlpSpanParts(
        trace_id=span.get("traceId"),
        span_id=span.get("spanId"),
        parent_id=span.get("parentSpanId"),
        name=span.get("name", ""),
        kind=span.get("kind", 0),
        status_code=status.get("code", 0),
        status_message=status.get("message"),
        start_ns=span.get("startTimeUnixNano"),
        end_ns=span.get("endTimeUnixNano"),
        attributes=_from_key_values(span.get("attributes"), f"{where}.attributes"),
        events=events,
        links=links,
        resource=resource,  # shared by the resource's spans; each record keeps its own copy
        where=where,
    )
    return build(parts)


def from_otlp_json(data: Mapping[str, Any]) -> list[SpanRecord]:
    """The spans of an OTLP/JSON ``ExportTraceServiceRequest`` (or ``TracesData``), in file order.

    Reads what :func:`to_otlp_json` writes and what other producers write (the Collector's file
    exporter: several resources and traces, int64 as strings or numbers, enums as numbers or
    names, optional fields left out). Resource attributes go into ``SpanRecord.resource``;
    scopes are not kept. Nothing is redacted here: ``Store.write_spans`` redacts what it stores.

    Raises:
        ValueError: the data is not OTLP/JSON trace data; the message names the bad field.
    """
    return _read_otlp_json(data, otlp_span_record)


def otlp_json_span_data(data: Mapping[str, Any], hook: PartsHook | None = None) -> list[SpanData]:
    """:func:`from_otlp_json` as plain ``SpanData`` records."""
    return _read_otlp_json(data, lambda parts: otlp_span_data(parts, hook))


_S = TypeVar("_S")


def _read_otlp_json(data: Mapping[str, Any], build: Callable[[OtlpSpanParts], _S]) -> list[_S]:
    root = _obj(data, "document")
    if "resourceSpans" not in root:
        keys = ", ".join(sorted(map(str, root))[:5]) or "none"
        raise _fail("document", f"no 'resourceSpans' key (keys: {keys}): not OTLP trace data")
    spans: list[_S] = []
    for r, raw_rs in enumerate(_list(root["resourceSpans"], "resourceSpans")):
        rs_at = f"resourceSpans[{r}]"
        rs = _obj(raw_rs, rs_at)
        resource_obj = _obj(rs.get("resource", {}), f"{rs_at}.resource")
        resource = _from_key_values(resource_obj.get("attributes"), f"{rs_at}.resource.attributes")
        scope_key = "scopeSpans" if "scopeSpans" in rs else "instrumentationLibrarySpans"
        for s, raw_ss in enumerate(_list(rs.get(scope_key), f"{rs_at}.{scope_key}")):
            ss_at = f"{rs_at}.{scope_key}[{s}]"
            ss = _obj(raw_ss, ss_at)
            for i, raw_span in enumerate(_list(ss.get("spans"), f"{ss_at}.spans")):
                spans.append(_from_otlp_span(raw_span, resource, f"{ss_at}.spans[{i}]", build))
    return spans


def parse_otlp_json(text: str | bytes) -> list[SpanRecord]:
    """The spans of an OTLP/JSON file: one document, a JSON array of them, or JSON lines.

    JSON lines (one ``ExportTraceServiceRequest`` per line) is what the Collector's file
    exporter writes; Jaeger's UI accepts the same three layouts.

    Raises:
        ValueError: the text is not JSON, or not OTLP/JSON trace data.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        documents: list[Any] = [json.loads(text)]
    except json.JSONDecodeError as whole_error:
        documents = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append(json.loads(line))
            except json.JSONDecodeError as exc:
                error = whole_error if number == 1 else exc
                raise ValueError(f"OTLP/JSON line {number}: not JSON ({error.msg})") from None
    if len(documents) == 1 and isinstance(documents[0], list):
        documents = documents[0]
    spans: list[SpanRecord] = []
    for number, document in enumerate(documents, start=1):
        try:
            spans.extend(from_otlp_json(document))
        except ValueError as exc:
            if len(documents) == 1:
                raise
            raise ValueError(f"document {number}: {exc}") from None
    return spans


# --- Jaeger JSON: reading -----------------------------------------------------------------------
#
# What `to_jaeger` writes and what Jaeger's UI downloads: the query API's {"data": [trace, ...]}
# envelope, a bare trace {"traceID", "spans", "processes"}, or a list of traces. Tags become
# attributes again except the ones the OTel mapping gives a meaning (`span.kind`,
# `otel.status_code`, `otel.status_description`, `error`, the scope's name); logs become events
# (their `event` field is the name); the first CHILD_OF reference is the parent and every other
# reference a link; a process is the resource (`serviceName` is its `service.name`). Warnings
# are ignored. Jaeger writes times in microseconds, so nanoseconds come back as whole microseconds.

_JAEGER_MAPPED: Final = frozenset(
    {
        "span.kind",
        "otel.status_code",
        "otel.status_description",
        "error",
        "otel.scope.name",
        "otel.scope.version",
        "otel.library.name",
        "otel.library.version",
        "internal.span.format",
    }
)


def _jaeger_fail(where: str, message: str) -> ValueError:
    return ValueError(f"Jaeger JSON {where}: {message}")


def _jaeger_id(value: Any, nbytes: int, where: str) -> str:
    # Jaeger drops leading zeros of ids (a 64-bit trace id is 16 digits): pad them back.
    if not isinstance(value, str) or not value or len(value) > nbytes * 2 or not _HEX.match(value):
        raise _jaeger_fail(where, f"expected up to {nbytes * 2} hex digits, got {_describe(value)}")
    hex_id = value.lower().rjust(nbytes * 2, "0")
    if hex_id == "0" * (nbytes * 2):
        raise _jaeger_fail(where, "an all-zero id is not a valid trace or span id")
    return hex_id


def _jaeger_number(value: Any, where: str, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _jaeger_fail(where, f"expected a number, got {_describe(value)}")
    try:
        number = kind(value)
    except ValueError:
        raise _jaeger_fail(where, f"expected a number, got {_describe(value)}") from None
    return number


def _from_jaeger_tags(value: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value is None:
        return out
    if not isinstance(value, list):
        raise _jaeger_fail(where, f"expected a list, got {_describe(value)}")
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise _jaeger_fail(at, f"expected a {{key, type, value}} tag, got {_describe(item)}")
        kind = str(item.get("type", "string")).lower()
        raw = item.get("value")
        if kind == "bool":
            out[item["key"]] = raw if isinstance(raw, bool) else str(raw).lower() == "true"
        elif kind == "int64":
            out[item["key"]] = _jaeger_number(raw, f"{at}.value", int)
        elif kind == "float64":
            out[item["key"]] = _jaeger_number(raw, f"{at}.value", float)
        else:  # string, binary (base64 text): kept as text
            out[item["key"]] = raw if isinstance(raw, str) else _json_text(raw)
    return out


def _from_jaeger_span(raw: Any, processes: Mapping[str, dict[str, Any]], where: str) -> SpanRecord:
    if not isinstance(raw, Mapping):
        raise _jaeger_fail(where, f"expected a span object, got {_describe(raw)}")
    trace_id = _jaeger_id(raw.get("traceID"), 16, f"{where}.traceID")
    tags = _from_jaeger_tags(raw.get("tags"), f"{where}.tags")
    parent: str | None = None
    links: list[LinkRecord] = []
    references = raw.get("references") or []
    if not isinstance(references, list):
        raise _jaeger_fail(f"{where}.references", f"expected a list, got {_describe(references)}")
    for i, ref in enumerate(references):
        at = f"{where}.references[{i}]"
        if not isinstance(ref, Mapping):
            raise _jaeger_fail(at, f"expected a reference object, got {_describe(ref)}")
        ref_trace = _jaeger_id(ref.get("traceID"), 16, f"{at}.traceID")
        ref_span = _jaeger_id(ref.get("spanID"), 8, f"{at}.spanID")
        if parent is None and ref.get("refType") == "CHILD_OF" and ref_trace == trace_id:
            parent = ref_span
        else:
            links.append(records.LinkRecord(trace_id=ref_trace, span_id=ref_span, attributes={}))
    if parent is None and raw.get("parentSpanID"):  # the older layout, no references
        parent = _jaeger_id(raw.get("parentSpanID"), 8, f"{where}.parentSpanID")
    code = str(tags.get("otel.status_code", "")).upper()
    status = (
        code if code in _STATUS_NUMBERS else ("ERROR" if tags.get("error") is True else "UNSET")
    )
    kind = str(tags.get("span.kind", "internal")).upper()
    message = tags.get("otel.status_description")
    events = []
    for i, log in enumerate(raw.get("logs") or []):
        at = f"{where}.logs[{i}]"
        if not isinstance(log, Mapping):
            raise _jaeger_fail(at, f"expected a log object, got {_describe(log)}")
        fields = _from_jaeger_tags(log.get("fields"), f"{at}.fields")
        name = fields.pop("event", "")
        events.append(
            records.EventRecord(
                name=str(name),
                time_ns=_jaeger_number(log.get("timestamp", 0), f"{at}.timestamp", int) * 1000,
                attributes=fields,
            )
        )
    start_us = _jaeger_number(raw.get("startTime"), f"{where}.startTime", int)
    duration_us = _jaeger_number(raw.get("duration", 0), f"{where}.duration", int)
    name = raw.get("operationName", "")
    return records.SpanRecord(
        run_id=trace_id,
        span_id=_jaeger_id(raw.get("spanID"), 8, f"{where}.spanID"),
        parent_id=parent,
        name=name if isinstance(name, str) else _json_text(name),
        kind=kind if kind in _KIND_NUMBERS else "INTERNAL",
        status=cast("SpanStatus", status),
        status_message=str(message) if message else None,
        start_ns=start_us * 1000,
        end_ns=(start_us + max(0, duration_us)) * 1000,
        attributes={k: v for k, v in tags.items() if k not in _JAEGER_MAPPED},
        events=events,
        links=links,
        resource=dict(processes.get(str(raw.get("processID")), {})),
    )


def from_jaeger_json(data: Any) -> list[SpanRecord]:
    """The spans of Jaeger JSON: the query API's ``{"data": [...]}`` (what :func:`to_jaeger`
    writes), one trace object as Jaeger's UI downloads it, or a list of traces.

    Raises:
        ValueError: the data is not Jaeger trace JSON; the message names the bad field.
    """
    if isinstance(data, Mapping) and "data" in data:
        traces = data["data"] or []
    elif isinstance(data, Mapping) and "spans" in data:
        traces = [data]
    elif isinstance(data, list):
        traces = data
    else:
        raise _jaeger_fail("document", "expected {'data': [traces]} or a trace with 'spans'")
    if not isinstance(traces, list):
        raise _jaeger_fail("data", f"expected a list of traces, got {_describe(traces)}")
    spans: list[SpanRecord] = []
    for t, trace in enumerate(traces):
        at = f"data[{t}]"
        if not isinstance(trace, Mapping):
            raise _jaeger_fail(at, f"expected a trace object, got {_describe(trace)}")
        processes: dict[str, dict[str, Any]] = {}
        raw_processes = trace.get("processes") or {}
        if not isinstance(raw_processes, Mapping):
            raise _jaeger_fail(
                f"{at}.processes", f"expected an object, got {_describe(raw_processes)}"
            )
        for pid, process in raw_processes.items():
            if not isinstance(process, Mapping):
                raise _jaeger_fail(
                    f"{at}.processes.{pid}", f"expected an object, got {_describe(process)}"
                )
            resource = _from_jaeger_tags(process.get("tags"), f"{at}.processes.{pid}.tags")
            if process.get("serviceName"):
                resource[SERVICE_NAME] = str(process["serviceName"])
            processes[str(pid)] = resource
        raw_spans = trace.get("spans") or []
        if not isinstance(raw_spans, list):
            raise _jaeger_fail(f"{at}.spans", f"expected a list, got {_describe(raw_spans)}")
        spans.extend(
            _from_jaeger_span(raw, processes, f"{at}.spans[{i}]") for i, raw in enumerate(raw_spans)
        )
    return spans


def _is_jaeger(document: Any) -> bool:
    if isinstance(document, list):
        return bool(document) and isinstance(document[0], Mapping) and "spans" in document[0]
    return isinstance(document, Mapping) and ("data" in document or "spans" in document)


def parse_trace_file(text: str | bytes) -> list[SpanRecord]:
    """The spans of a trace file in either format: Jaeger JSON or OTLP/JSON (see
    :func:`from_jaeger_json` and :func:`parse_otlp_json`).

    Raises:
        ValueError: neither format; the message names the bad field.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return parse_otlp_json(text)  # JSON lines, or not JSON at all: OTLP says which
    if _is_jaeger(document):
        return from_jaeger_json(document)
    return parse_otlp_json(text)
