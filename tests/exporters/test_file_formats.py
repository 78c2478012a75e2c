"""Jaeger and OTLP/JSON files from stored records, and OTLP/JSON back to records."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import spanflow
from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from spanflow import attributes as attr
from spanflow import runtime
from spanflow.exporters.file_formats import (
    from_otlp_json,
    parse_otlp_json,
    to_jaeger,
    to_otlp_json,
)
from spanflow.exporters.records import EventRecord, LinkRecord, RunRecord, SpanRecord

RUN = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT, FETCH, FAIL = "00f067aa0ba902b7", "53995c3f42cd8ad8", "a2fb4a1d1a96d312"
T0 = 1_700_000_000_123_456_789
RESOURCE = {"service.name": "support-bot", "host.name": "box", "process.pid": 4242}

SPAN_KEYS = {
    "traceID",
    "spanID",
    "operationName",
    "references",
    "startTime",
    "duration",
    "flags",
    "tags",
    "logs",
    "processID",
    "warnings",
}
TAG_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "bool": bool,
    "int64": int,
    "float64": float,
}


def _run(**changes: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "id": RUN,
        "workflow": "support",
        "status": "failed",
        "started_at": dt.datetime(2023, 11, 14, tzinfo=dt.UTC),
        "service": "support-bot",
        "error": "RuntimeError: model down",
    }
    return RunRecord(**(fields | changes))


def _spans(resource: dict[str, Any] | None = None) -> list[SpanRecord]:
    res = RESOURCE if resource is None else resource
    root = SpanRecord(
        run_id=RUN,
        span_id=ROOT,
        name="support",
        status="ERROR",
        status_message="RuntimeError: model down",
        start_ns=T0,
        end_ns=T0 + 42_000_999,
        attributes={
            attr.RUN_ID: RUN,
            attr.STEP_TYPE: attr.STEP_TYPE_WORKFLOW,
            attr.INPUT_VALUE: '{"text":"hi","api_key":"[REDACTED]"}',
        },
        resource=res,
    )
    fetch = SpanRecord(
        run_id=RUN,
        span_id=FETCH,
        parent_id=ROOT,
        name="fetch",
        kind="CLIENT",
        status="OK",
        start_ns=T0 + 1_000,
        end_ns=T0 + 2_001_000,
        attributes={
            attr.RUN_ID: RUN,
            attr.STEP_ATTEMPTS: 2,
            "score": 0.75,
            attr.FALLBACK_USED: False,
            "tags": ["a", "b"],
            "huge": 2**70,
        },
        events=[
            EventRecord(name="log", time_ns=T0 + 5_000, attributes={attr.LOG_MESSAGE: "hello"}),
        ],
        links=[LinkRecord(trace_id=OTHER_TRACE, span_id=FAIL, attributes={"why": "retry of"})],
        resource=res,
    )
    fail = SpanRecord(
        run_id=RUN,
        span_id=FAIL,
        parent_id=ROOT,
        name="classify",
        status="ERROR",
        status_message="RuntimeError: model down",
        start_ns=T0 + 3_000_000,
        end_ns=T0 + 40_000_000,
        attributes={attr.RUN_ID: RUN, attr.ERROR_TYPE: "RuntimeError", "error": "overridden"},
        events=[
            EventRecord(
                name=attr.EXCEPTION_EVENT,
                time_ns=T0 + 39_999_000,
                attributes={
                    attr.EXCEPTION_TYPE: "RuntimeError",
                    attr.EXCEPTION_MESSAGE: "model down",
                    attr.EXCEPTION_STACKTRACE: "Traceback ...",
                    "exception.escaped": True,
                },
            ),
            EventRecord(name="custom", time_ns=T0 + 39_999_500, attributes={"event": "renamed"}),
        ],
        resource=res,
    )
    return [root, fetch, fail]


def _tags(span: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tag["key"]: tag for tag in span["tags"]}


def _by_id(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {span["spanID"]: span for span in trace["spans"]}


# --- Jaeger ------------------------------------------------------------------------------------


def test_jaeger_envelope_and_trace_have_the_query_api_shape() -> None:
    out = to_jaeger(_run(), _spans())

    assert out == {"data": out["data"], "total": 0, "limit": 0, "offset": 0, "errors": None}
    assert isinstance(out["data"], list) and len(out["data"]) == 1
    trace = out["data"][0]
    assert set(trace) == {"traceID", "spans", "processes", "warnings"}
    assert trace["traceID"] == RUN and trace["warnings"] is None
    assert [s["spanID"] for s in trace["spans"]] == [ROOT, FETCH, FAIL]
    # Strict JSON (no NaN), as the Go and JS parsers on the other side require.
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_jaeger_every_span_field_has_the_right_type_and_unit() -> None:
    records = {s.span_id: s for s in _spans()}
    trace = to_jaeger(_run(), _spans())["data"][0]

    for span in trace["spans"]:
        record = records[span["spanID"]]
        assert set(span) == SPAN_KEYS
        assert span["traceID"] == RUN
        assert isinstance(span["spanID"], str) and len(span["spanID"]) == 16
        assert span["operationName"] == record.name
        assert type(span["startTime"]) is int and type(span["duration"]) is int
        assert span["startTime"] == record.start_ns // 1000  # microseconds since the epoch
        assert span["duration"] == (record.end_ns - record.start_ns) // 1000
        assert span["flags"] == 1
        assert span["processID"] in trace["processes"]
        assert span["warnings"] is None
        for ref in span["references"]:
            assert set(ref) == {"refType", "traceID", "spanID"}
            assert ref["refType"] in {"CHILD_OF", "FOLLOWS_FROM"}
        for tag in span["tags"]:
            assert set(tag) == {"key", "type", "value"}
            assert isinstance(tag["value"], TAG_TYPES[tag["type"]])
            if tag["type"] == "int64":
                assert type(tag["value"]) is int
        for log in span["logs"]:
            assert set(log) == {"timestamp", "fields"}
            assert type(log["timestamp"]) is int
            for field in log["fields"]:
                assert set(field) == {"key", "type", "value"}
                assert isinstance(field["value"], TAG_TYPES[field["type"]])

    assert trace["spans"][0]["startTime"] == 1_700_000_000_123_456
    assert trace["spans"][0]["duration"] == 42_000


def test_jaeger_references_parent_first_then_links() -> None:
    spans = _by_id(to_jaeger(_run(), _spans())["data"][0])

    assert spans[ROOT]["references"] == []
    assert spans[FETCH]["references"] == [
        {"refType": "CHILD_OF", "traceID": RUN, "spanID": ROOT},
        {"refType": "FOLLOWS_FROM", "traceID": OTHER_TRACE, "spanID": FAIL},
    ]
    assert spans[FAIL]["references"] == [{"refType": "CHILD_OF", "traceID": RUN, "spanID": ROOT}]


def test_jaeger_failed_spans_carry_the_error_tag_and_status_tags() -> None:
    spans = _by_id(to_jaeger(_run(), _spans())["data"][0])

    failed = _tags(spans[FAIL])
    assert failed["error"] == {"key": "error", "type": "bool", "value": True}
    assert failed["otel.status_code"] == {
        "key": "otel.status_code",
        "type": "string",
        "value": "ERROR",
    }
    assert failed["otel.status_description"]["value"] == "RuntimeError: model down"
    assert [t["key"] for t in spans[FAIL]["tags"]].count("error") == 1
    assert _tags(spans[ROOT])["error"]["value"] is True

    ok = _tags(spans[FETCH])
    assert "error" not in ok and "otel.status_description" not in ok
    assert ok["otel.status_code"]["value"] == "OK"


def test_jaeger_span_kind_and_attribute_types() -> None:
    spans = _by_id(to_jaeger(_run(), _spans())["data"][0])

    assert _tags(spans[ROOT])["span.kind"] == {
        "key": "span.kind",
        "type": "string",
        "value": "internal",
    }
    tags = _tags(spans[FETCH])
    assert tags["span.kind"]["value"] == "client"
    assert tags[attr.STEP_ATTEMPTS] == {"key": attr.STEP_ATTEMPTS, "type": "int64", "value": 2}
    assert tags["score"] == {"key": "score", "type": "float64", "value": 0.75}
    assert tags[attr.FALLBACK_USED] == {"key": attr.FALLBACK_USED, "type": "bool", "value": False}
    assert tags["tags"] == {"key": "tags", "type": "string", "value": '["a","b"]'}
    assert tags["huge"] == {"key": "huge", "type": "string", "value": str(2**70)}
    assert tags[attr.RUN_ID] == {"key": attr.RUN_ID, "type": "string", "value": RUN}


def test_jaeger_events_become_logs_with_an_event_field() -> None:
    spans = _by_id(to_jaeger(_run(), _spans())["data"][0])

    exception, custom = spans[FAIL]["logs"]
    assert exception["timestamp"] == (T0 + 39_999_000) // 1000
    assert exception["fields"][0] == {"key": "event", "type": "string", "value": "exception"}
    fields = {f["key"]: f for f in exception["fields"]}
    assert fields[attr.EXCEPTION_MESSAGE] == {
        "key": attr.EXCEPTION_MESSAGE,
        "type": "string",
        "value": "model down",
    }
    assert fields["exception.escaped"]["type"] == "bool"
    # An `event` attribute wins over the event's name, as the OTel->Jaeger mapping says.
    assert custom["fields"] == [{"key": "event", "type": "string", "value": "renamed"}]
    assert spans[ROOT]["logs"] == []


def test_jaeger_processes_come_from_resources() -> None:
    spans = _spans()
    other = spans[2].model_copy(update={"resource": {"service.name": "worker", "node": 3}})
    no_service = spans[1].model_copy(update={"resource": {}})
    trace = to_jaeger(_run(), [spans[0], no_service, other])["data"][0]

    assert trace["processes"] == {
        "p1": {
            "serviceName": "support-bot",
            "tags": [
                {"key": "host.name", "type": "string", "value": "box"},
                {"key": "process.pid", "type": "int64", "value": 4242},
            ],
        },
        "p2": {"serviceName": "support-bot", "tags": []},  # the run's service
        "p3": {"serviceName": "worker", "tags": [{"key": "node", "type": "int64", "value": 3}]},
    }
    assert [s["processID"] for s in trace["spans"]] == ["p1", "p2", "p3"]


def test_jaeger_non_finite_floats_are_strings() -> None:
    span = _spans()[0].model_copy(update={"attributes": {"a": math.nan, "b": -math.inf}})
    out = to_jaeger(_run(), [span])
    tags = _tags(out["data"][0]["spans"][0])
    assert tags["a"] == {"key": "a", "type": "string", "value": "nan"}
    assert tags["b"] == {"key": "b", "type": "string", "value": "-inf"}
    json.dumps(out, allow_nan=False)


def test_jaeger_without_spans_and_with_a_foreign_span() -> None:
    assert to_jaeger(_run(), [])["data"] == []
    foreign = _spans()[0].model_copy(update={"run_id": OTHER_TRACE})
    with pytest.raises(ValueError, match=f"belongs to run {OTHER_TRACE}, not to {RUN}"):
        to_jaeger(_run(), [foreign])
    with pytest.raises(ValueError, match="belongs to run"):
        to_otlp_json(_run(), [foreign])


# --- OTLP/JSON writing --------------------------------------------------------------------------


def test_otlp_json_shape() -> None:
    out = to_otlp_json(_run(), _spans())

    (rs,) = out["resourceSpans"]
    resource = {kv["key"]: kv["value"] for kv in rs["resource"]["attributes"]}
    assert resource == {
        "service.name": {"stringValue": "support-bot"},
        "host.name": {"stringValue": "box"},
        "process.pid": {"intValue": "4242"},
    }
    (ss,) = rs["scopeSpans"]
    assert ss["scope"] == {"name": "spanflow"}
    root, fetch, _ = ss["spans"]
    assert "parentSpanId" not in root
    assert root["traceId"] == RUN and root["spanId"] == ROOT
    assert fetch["parentSpanId"] == ROOT
    assert root["startTimeUnixNano"] == str(T0)
    assert root["endTimeUnixNano"] == str(T0 + 42_000_999)
    assert (root["kind"], fetch["kind"]) == (1, 3)
    assert root["status"] == {"code": 2, "message": "RuntimeError: model down"}
    assert fetch["status"] == {"code": 1}
    values = {kv["key"]: kv["value"] for kv in fetch["attributes"]}
    assert values[attr.STEP_ATTEMPTS] == {"intValue": "2"}
    assert values["score"] == {"doubleValue": 0.75}
    assert values[attr.FALLBACK_USED] == {"boolValue": False}
    assert values["tags"] == {
        "arrayValue": {"values": [{"stringValue": "a"}, {"stringValue": "b"}]}
    }
    assert values["huge"] == {"stringValue": str(2**70)}  # beyond int64
    assert fetch["events"] == [
        {
            "timeUnixNano": str(T0 + 5_000),
            "name": "log",
            "attributes": [{"key": attr.LOG_MESSAGE, "value": {"stringValue": "hello"}}],
        }
    ]
    assert fetch["links"] == [
        {
            "traceId": OTHER_TRACE,
            "spanId": FAIL,
            "attributes": [{"key": "why", "value": {"stringValue": "retry of"}}],
        }
    ]
    json.dumps(out, allow_nan=False)


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON's hex ids as the base64 that protobuf's generic JSON parser expects."""
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    if isinstance(node, dict):
        return {
            key: base64.b64encode(bytes.fromhex(value)).decode()
            if key in {"traceId", "spanId", "parentSpanId"}
            else _hex_ids_to_base64(value)
            for key, value in node.items()
        }
    return node


def test_otlp_json_is_a_valid_export_trace_service_request() -> None:
    out = to_otlp_json(_run(), _spans())

    # ignore_unknown_fields=False: every key must be a field of the protobuf schema.
    message = json_format.ParseDict(_hex_ids_to_base64(out), ExportTraceServiceRequest())
    spans = message.resource_spans[0].scope_spans[0].spans
    assert [s.span_id.hex() for s in spans] == [ROOT, FETCH, FAIL]
    assert spans[0].trace_id.hex() == RUN
    assert spans[1].parent_span_id.hex() == ROOT
    assert spans[0].start_time_unix_nano == T0
    assert spans[1].kind == spans[1].SPAN_KIND_CLIENT
    assert spans[0].status.code == spans[0].status.STATUS_CODE_ERROR
    assert spans[1].links[0].trace_id.hex() == OTHER_TRACE


def test_otlp_json_fills_a_missing_service_name_from_the_run() -> None:
    out = to_otlp_json(_run(), _spans(resource={}))
    attributes = out["resourceSpans"][0]["resource"]["attributes"]
    assert attributes == [{"key": "service.name", "value": {"stringValue": "support-bot"}}]


# --- OTLP/JSON reading --------------------------------------------------------------------------


def test_otlp_json_round_trip() -> None:
    spans = _spans()
    # An int beyond int64 has no OTLP type (it is written as text); everything else round-trips.
    attributes = {k: v for k, v in spans[1].attributes.items() if k != "huge"}
    spans[1] = spans[1].model_copy(update={"attributes": attributes})
    spans.append(
        SpanRecord(
            run_id=RUN,
            span_id="1111111111111111",
            parent_id=FAIL,
            name="nested",
            kind="CONSUMER",
            start_ns=T0 + 4_000_000,
            end_ns=T0 + 5_000_000,
            attributes={"nested": {"k": [1, 2.5, "x", None]}, "empty": [], "neg": -7},
            resource={"service.name": "worker", "node": 2},
        )
    )
    text = json.dumps(to_otlp_json(_run(), spans), allow_nan=False)
    back = from_otlp_json(json.loads(text))

    assert back == spans
    assert parse_otlp_json(text) == spans
    assert parse_otlp_json(text.encode()) == spans


def test_otlp_json_non_finite_doubles_survive() -> None:
    span = _spans()[0].model_copy(update={"attributes": {"a": math.nan, "b": math.inf}})
    out = to_otlp_json(_run(), [span])
    values = out["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    assert values == [
        {"key": "a", "value": {"doubleValue": "NaN"}},
        {"key": "b", "value": {"doubleValue": "Infinity"}},
    ]
    (back,) = from_otlp_json(json.loads(json.dumps(out, allow_nan=False)))
    assert math.isnan(back.attributes["a"]) and back.attributes["b"] == math.inf


COLLECTOR_FILE = """\
{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}},{"key":"k8s.pod.uid","value":{"stringValue":"abc"}},{"key":"replicas","value":{"intValue":3}}],"droppedAttributesCount":0},"scopeSpans":[{"scope":{"name":"io.opentelemetry.http","version":"1.2"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"","name":"GET /cart","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000","attributes":[{"key":"http.status_code","value":{"intValue":"500"}},{"key":"retry","value":{"intValue":2}}],"droppedAttributesCount":0,"events":[{"timeUnixNano":"1544712660500000000","name":"exception","attributes":[{"key":"exception.message","value":{"stringValue":"oops"}}]}],"status":{"message":"boom","code":2}},{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b173","parentSpanId":"eee19b7ec3c1b174","name":"db","kind":"SPAN_KIND_CLIENT","startTimeUnixNano":1544712660100000000,"endTimeUnixNano":1544712660200000000,"status":{}}]}],"schemaUrl":"https://opentelemetry.io/schemas/1.21.0"}]}
{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"payments"}}]},"scopeSpans":[{"scope":{},"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"charge","kind":"SPAN_KIND_INTERNAL","startTimeUnixNano":"1544712662000000000","endTimeUnixNano":"1544712663000000000","links":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}],"status":{"code":"STATUS_CODE_OK"}},{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203332","parentSpanId":"b7ad6b7169203331","name":"","startTimeUnixNano":"1544712662500000000","endTimeUnixNano":"1544712662600000000"}]}]},{"scopeSpans":[{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203333","name":"orphan","kind":0,"startTimeUnixNano":"1544712662700000000","endTimeUnixNano":"1544712662800000000"}]}]}]}
"""


def test_reads_a_collector_file_exporter_file() -> None:
    spans = parse_otlp_json(COLLECTOR_FILE)

    assert [s.name for s in spans] == ["GET /cart", "db", "charge", "", "orphan"]
    cart, db, charge, unnamed, orphan = spans
    assert cart.run_id == db.run_id == "5b8efff798038103d269b633813fc60c"  # hex case folded
    assert charge.run_id == "0af7651916cd43dd8448eb211c80319c"
    assert cart.parent_id is None and db.parent_id == cart.span_id
    assert (cart.kind, db.kind, charge.kind, orphan.kind) == (
        "SERVER",
        "CLIENT",
        "INTERNAL",
        "INTERNAL",
    )
    assert (cart.status, cart.status_message) == ("ERROR", "boom")
    assert (db.status, db.status_message) == ("UNSET", None)
    assert charge.status == "OK" and unnamed.status == "UNSET"
    assert cart.attributes == {"http.status_code": 500, "retry": 2}
    assert cart.start_ns == 1544712660000000000 and db.end_ns == 1544712660200000000
    assert cart.events == [
        EventRecord(
            name="exception",
            time_ns=1544712660500000000,
            attributes={"exception.message": "oops"},
        )
    ]
    assert charge.links == [
        LinkRecord(trace_id="5b8efff798038103d269b633813fc60c", span_id="eee19b7ec3c1b174")
    ]
    assert cart.resource == {"service.name": "checkout", "k8s.pod.uid": "abc", "replicas": 3}
    assert db.resource == cart.resource
    assert charge.resource == {"service.name": "payments"}
    assert orphan.resource == {} and orphan.attributes == {} and orphan.events == []


def test_parse_accepts_one_document_or_an_array_of_documents() -> None:
    lines = [json.loads(line) for line in COLLECTOR_FILE.splitlines()]
    expected = parse_otlp_json(COLLECTOR_FILE)

    assert parse_otlp_json(json.dumps(lines)) == expected
    assert parse_otlp_json(json.dumps(lines[1])) == expected[2:]
    assert from_otlp_json({"resourceSpans": []}) == []


def _sdk_spans() -> tuple[list[ReadableSpan], str]:
    """A failing workflow recorded by spanflow on a real SDK provider."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-run"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spanflow.configure(tracer_provider=provider, db=False)
    try:

        @spanflow.step(retries=1)
        def flaky(n: int) -> int:
            raise ValueError(f"bad {n}")

        @spanflow.workflow
        def job(n: int) -> int:
            try:
                return flaky(n)
            except ValueError:
                return -1

        assert job(3) == -1
    finally:
        runtime.reset_for_tests()
        provider.shutdown()
    spans = list(exporter.get_finished_spans())
    assert spans and spans[0].context is not None
    return spans, f"{spans[0].context.trace_id:032x}"


def test_reads_protobufs_own_json_of_real_sdk_spans() -> None:
    # The SDK's OTLP encoder + protobuf's generic JSON printer: base64 ids, enum names,
    # int64 as strings. Every span spanflow recorded must come back field for field.
    sdk_spans, trace_id = _sdk_spans()
    document = json_format.MessageToDict(encode_spans(sdk_spans))
    assert document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] == "SPAN_KIND_INTERNAL"

    records = {r.span_id: r for r in from_otlp_json(document)}

    assert len(records) == len(sdk_spans) >= 4  # workflow, step, two attempts
    for span in sdk_spans:
        assert span.context is not None
        record = records[f"{span.context.span_id:016x}"]
        assert record.run_id == trace_id
        assert record.name == span.name
        assert record.parent_id == (None if span.parent is None else f"{span.parent.span_id:016x}")
        assert record.kind == span.kind.name
        assert record.status == span.status.status_code.name
        assert record.status_message == span.status.description
        assert (record.start_ns, record.end_ns) == (span.start_time, span.end_time)
        assert record.attributes == {
            k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()
        }
        assert [(e.name, e.time_ns) for e in record.events] == [
            (e.name, e.timestamp) for e in span.events
        ]
        assert [dict(e.attributes) for e in record.events] == [
            dict(e.attributes or {}) for e in span.events
        ]
        assert record.resource["service.name"] == "sdk-run"
    failed = [r for r in records.values() if r.status == "ERROR"]
    assert failed and all(r.events[-1].name == attr.EXCEPTION_EVENT for r in failed)


# --- malformed input ----------------------------------------------------------------------------

SPAN_AT = "resourceSpans[0].scopeSpans[0].spans[0]"


def _valid() -> dict[str, Any]:
    return to_otlp_json(_run(), _spans())


def _span0(doc: dict[str, Any]) -> dict[str, Any]:
    span: dict[str, Any] = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    return span


def _set(path: Sequence[str | int], value: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(doc: dict[str, Any]) -> Any:
        node: Any = _span0(doc)
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return doc

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], Any]:
    def mutate(doc: dict[str, Any]) -> Any:
        del _span0(doc)[key]
        return doc

    return mutate


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("not an object", lambda doc: [doc], "document: expected an object, got list"),
    ("no resourceSpans", lambda doc: {"resource_spans": []}, "no 'resourceSpans' key"),
    (
        "resourceSpans not a list",
        lambda doc: {"resourceSpans": {}},
        "resourceSpans: expected a list",
    ),
    ("bad trace id", _set(["traceId"], "xyz"), f"{SPAN_AT}.traceId: expected 32 hex digits"),
    ("missing trace id", _drop("traceId"), f"{SPAN_AT}.traceId: expected 32 hex digits"),
    ("short span id", _set(["spanId"], "abcd"), f"{SPAN_AT}.spanId: expected 16 hex digits"),
    ("zero span id", _set(["spanId"], "0" * 16), f"{SPAN_AT}.spanId: an all-zero id"),
    ("bad parent", _set(["parentSpanId"], "zz" * 8), f"{SPAN_AT}.parentSpanId: expected 16"),
    ("missing start", _drop("startTimeUnixNano"), f"{SPAN_AT}.startTimeUnixNano: missing"),
    (
        "text end",
        _set(["endTimeUnixNano"], "soon"),
        f"{SPAN_AT}.endTimeUnixNano: expected an integer",
    ),
    ("negative time", _set(["startTimeUnixNano"], "-5"), "a time cannot be negative"),
    ("kind 9", _set(["kind"], 9), f"{SPAN_AT}.kind: unknown value 9"),
    (
        "kind name",
        _set(["kind"], "SPAN_KIND_WEIRD"),
        f"{SPAN_AT}.kind: unknown value 'SPAN_KIND_WEIRD'",
    ),
    ("status code", _set(["status", "code"], "bad"), f"{SPAN_AT}.status.code: unknown value 'bad'"),
    ("status object", _set(["status"], 2), f"{SPAN_AT}.status: expected an object"),
    ("name", _set(["name"], 5), f"{SPAN_AT}.name: expected a string"),
    ("attributes", _set(["attributes"], {"a": 1}), f"{SPAN_AT}.attributes: expected a list"),
    (
        "key",
        _set(["attributes", 0, "key"], None),
        f"{SPAN_AT}.attributes[0].key: expected a string",
    ),
    (
        "float int",
        _set(["attributes", 0, "value"], {"intValue": "1.5"}),
        f"{SPAN_AT}.attributes[0].value.intValue: expected an integer",
    ),
    (
        "string bool",
        _set(["attributes", 0, "value"], {"boolValue": "true"}),
        f"{SPAN_AT}.attributes[0].value.boolValue: expected true or false",
    ),
    (
        "number string",
        _set(["attributes", 0, "value"], {"stringValue": 3}),
        "value.stringValue: expected a string",
    ),
    ("event time", _set(["events"], [{"name": "x"}]), f"{SPAN_AT}.events[0].timeUnixNano: missing"),
    ("link id", _set(["links"], [{"traceId": RUN}]), f"{SPAN_AT}.links[0].spanId: expected 16"),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_raises_a_value_error_naming_the_field(
    mutate: Callable[[dict[str, Any]], Any], message: str
) -> None:
    document = mutate(copy.deepcopy(_valid()))
    with pytest.raises(ValueError) as info:
        from_otlp_json(document)
    assert message in str(info.value)
    assert str(info.value).startswith("OTLP/JSON ")


def test_parse_reports_the_bad_line_and_document() -> None:
    with pytest.raises(ValueError, match=r"OTLP/JSON line 2: not JSON"):
        parse_otlp_json('{"resourceSpans": []}\n{"resourceSpans": [\n')
    with pytest.raises(ValueError, match=r"line 1: not JSON"):
        parse_otlp_json("not json at all")
    good = json.dumps(_valid())
    bad = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "x"}]}]}]})
    with pytest.raises(ValueError, match=r"^document 2: OTLP/JSON resourceSpans\[0\]"):
        parse_otlp_json(f"{good}\n{bad}\n")
