"""Jaeger JSON back to records: every field ``to_jaeger`` writes comes back."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from spanflow import attributes as attr
from spanflow.exporters.file_formats import (
    from_jaeger_json,
    parse_trace_file,
    to_jaeger,
    to_otlp_json,
)
from spanflow.exporters.records import EventRecord, LinkRecord, RunRecord, SpanRecord

RUN = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT, FETCH, FAIL = "00f067aa0ba902b7", "53995c3f42cd8ad8", "a2fb4a1d1a96d312"
T0 = 1_700_000_000_123_456_000  # whole microseconds: Jaeger's unit
RESOURCE = {"service.name": "support-bot", "host.name": "box", "process.pid": 4242}
WORKER = {"service.name": "worker", "host.name": "other"}


def _run() -> RunRecord:
    return RunRecord(
        id=RUN,
        workflow="support",
        status="failed",
        started_at=dt.datetime(2023, 11, 14, tzinfo=dt.UTC),
        service="support-bot",
    )


def _spans() -> list[SpanRecord]:
    root = SpanRecord(
        run_id=RUN,
        span_id=ROOT,
        name="support",
        status="ERROR",
        status_message="RuntimeError: model down",
        start_ns=T0,
        end_ns=T0 + 42_000_000,
        attributes={
            attr.RUN_ID: RUN,
            attr.STEP_TYPE: attr.STEP_TYPE_WORKFLOW,
            attr.INPUT_VALUE: '{"text":"hi"}',
        },
        links=[LinkRecord(trace_id=OTHER_TRACE, span_id=FAIL, attributes={})],
        resource=RESOURCE,
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
        attributes={attr.RUN_ID: RUN, attr.STEP_ATTEMPTS: 2, "score": 0.75, "cached": False},
        events=[EventRecord(name="log", time_ns=T0 + 5_000, attributes={"message": "hello"})],
        links=[LinkRecord(trace_id=RUN, span_id=FAIL, attributes={})],
        resource=WORKER,
    )
    fail = SpanRecord(
        run_id=RUN,
        span_id=FAIL,
        parent_id=ROOT,
        name="classify",
        kind="SERVER",
        status="ERROR",
        status_message="RuntimeError: model down",
        start_ns=T0 + 3_000_000,
        end_ns=T0 + 40_000_000,
        attributes={attr.RUN_ID: RUN, attr.ERROR_TYPE: "RuntimeError"},
        events=[
            EventRecord(
                name=attr.EXCEPTION_EVENT,
                time_ns=T0 + 39_999_000,
                attributes={
                    attr.EXCEPTION_TYPE: "RuntimeError",
                    attr.EXCEPTION_MESSAGE: "model down",
                    "exception.escaped": True,
                },
            )
        ],
        resource=RESOURCE,
    )
    return [root, fetch, fail]


def test_every_field_the_writer_writes_round_trips() -> None:
    spans = _spans()
    document = json.loads(json.dumps(to_jaeger(_run(), spans)))
    assert from_jaeger_json(document) == spans


def test_what_jaegers_ui_downloads_reads_too() -> None:
    trace = to_jaeger(_run(), _spans())["data"][0]
    trace["warnings"] = ["clock skew adjustment disabled"]
    for span in trace["spans"]:
        span["warnings"] = ["invalid parent span IDs"]
    # The UI's download is the bare trace; a list of traces reads the same.
    assert from_jaeger_json(copy.deepcopy(trace)) == _spans()
    assert parse_trace_file(json.dumps(trace)) == _spans()
    assert parse_trace_file(json.dumps([trace]).encode()) == _spans()


def test_tags_keep_their_types_and_short_ids_are_padded() -> None:
    trace: dict[str, Any] = {
        "traceID": "abc",
        "spans": [
            {
                "traceID": "abc",
                "spanID": "1f",
                "operationName": "op",
                "startTime": 10,
                "duration": 5,
                "tags": [
                    {"key": "n", "type": "int64", "value": "7"},
                    {"key": "f", "type": "float64", "value": 1.5},
                    {"key": "b", "type": "bool", "value": "true"},
                    {"key": "s", "type": "string", "value": "x"},
                    {"key": "error", "type": "bool", "value": True},
                ],
                "processID": "p1",
            }
        ],
        "processes": {"p1": {"serviceName": "svc", "tags": []}},
    }
    (span,) = from_jaeger_json({"data": [trace]})
    assert span.run_id == "0" * 29 + "abc" and span.span_id == "0" * 14 + "1f"
    assert span.attributes == {"n": 7, "f": 1.5, "b": True, "s": "x"}
    assert span.status == "ERROR"  # Jaeger's error tag alone marks a failed span
    assert (span.start_ns, span.end_ns) == (10_000, 15_000)
    assert span.resource == {"service.name": "svc"}


def test_parse_trace_file_still_reads_otlp_json() -> None:
    text = json.dumps(to_otlp_json(_run(), _spans()))
    assert sorted(s.span_id for s in parse_trace_file(text)) == sorted([ROOT, FETCH, FAIL])


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"data": [{"spans": [{"traceID": "zz"}]}]}, "data[0].spans[0].traceID"),
        ({"data": "nope"}, "expected a list of traces"),
        ({"spans": [{"traceID": "ab", "spanID": "cd", "startTime": "soon"}]}, "startTime"),
    ],
)
def test_bad_jaeger_json_names_the_field(document: Any, message: str) -> None:
    with pytest.raises(ValueError, match="Jaeger JSON") as caught:
        parse_trace_file(json.dumps(document))
    assert message in str(caught.value)
