"""``spanflow serve`` as a user runs it: a real subprocess on free ports, real OTLP clients."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tests.viewer.conftest import Watched

SPANFLOW = [sys.executable, "-m", "spanflow.viewer.cli"]
SECRET = "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789ABCD"
PROTOBUF = "application/x-protobuf"


class Serving:
    """A running ``spanflow serve`` and its two addresses."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.proc = subprocess.Popen(
            [*SPANFLOW, "serve", "--db", str(db), "--port", "0", "--otlp-port", "0", "--no-open"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first, second = self.proc.stdout.readline(), self.proc.stdout.readline()
        found = re.search(r"OTEL_EXPORTER_OTLP_ENDPOINT=(http://127\.0\.0\.1:\d+)", first)
        assert found, (first, second, self.proc.stderr.read() if self.proc.stderr else "")
        self.endpoint = found.group(1)
        self.traces = f"{self.endpoint}/v1/traces"
        viewer = re.search(r"at (http://127\.0\.0\.1:\d+/\?token=\S+)", second)
        assert viewer, second
        self.viewer_url = viewer.group(1)

    def post(
        self, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            self.traces,
            data=body,
            method="POST",
            headers={"Content-Type": content_type, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        assert self.proc.returncode == 0, self.proc.returncode


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Serving]:
    served = Serving(tmp_path / "traces.db")
    try:
        yield served
    finally:
        served.stop()


def spanflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SPANFLOW, *args], capture_output=True, text=True, timeout=60)


def runs(db: Path) -> list[dict[str, Any]]:
    done = spanflow("runs", "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def show(db: Path, run_id: str) -> dict[str, Any]:
    done = spanflow("show", run_id, "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _attr(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _span(trace: int, span: int, parent: int | None, name: str, **attrs: str) -> Span:
    return Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=1_700_000_000_000_000_000 + span,
        end_time_unix_nano=1_700_000_000_500_000_000 - span,
        attributes=[_attr(k, v) for k, v in attrs.items()],
    )


def request_of(*spans: Span, service: str = "billing") -> bytes:
    message = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_attr("service.name", service)]),
                scope_spans=[ScopeSpans(spans=list(spans))],
            )
        ]
    )
    data: bytes = message.SerializeToString()
    return data


SENDER = textwrap.dedent(
    """
    import sys
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1])))
    tracer = provider.get_tracer("shop")
    with tracer.start_as_current_span("checkout") as root:
        with tracer.start_as_current_span("charge card") as child:
            child.set_attribute("note", "used key " + sys.argv[2])
            child.set_attribute("api_key", "plain-value-not-shaped-like-a-key")
    print(format(root.get_span_context().trace_id, "032x"))
    provider.shutdown()
    """
)


def test_real_otlp_exporter_trace_becomes_a_run(serving: Serving, tmp_path: Path) -> None:
    script = tmp_path / "send.py"
    script.write_text(SENDER, encoding="utf-8")
    sent = subprocess.run(
        [sys.executable, str(script), serving.traces, SECRET],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    assert "Failed to export" not in sent.stderr, sent.stderr
    trace_id = sent.stdout.strip()
    [run] = runs(serving.db)
    assert run["id"] == trace_id
    assert run["workflow"] == "checkout"
    assert run["status"] == "ok"
    shown = show(serving.db, trace_id)
    assert shown["run"]["service"] == "shop"
    assert shown["run"]["span_count"] == 2
    child = next(s for s in shown["spans"] if s["name"] == "charge card")
    assert child["attributes"]["note"] == "used key [REDACTED]"
    assert child["attributes"]["api_key"] == "[REDACTED]"
    # The secret is nowhere in the store's files, not even in the write-ahead log.
    for path in tmp_path.glob("traces.db*"):
        assert SECRET.encode() not in path.read_bytes(), path
        assert b"plain-value-not-shaped" not in path.read_bytes(), path


def test_otlp_json_with_hex_ids(serving: Serving) -> None:
    trace_id = "5b8efff798038103d269b633813fc60c"
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "eee19b7ec3c1b174",
                                "name": "GET /",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000250000000",
                                "status": {"code": 2, "message": "boom"},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    status, headers, body = serving.post(json.dumps(document).encode(), "application/json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}
    [run] = runs(serving.db)
    assert (run["id"], run["workflow"], run["status"]) == (trace_id, "GET /", "failed")
    assert show(serving.db, trace_id)["run"]["service"] == "web"


def test_gzip_protobuf_and_a_trace_in_three_batches_root_last(serving: Serving) -> None:
    trace = 0xABC
    batches = [
        request_of(_span(trace, 3, 2, "grandchild")),
        request_of(_span(trace, 2, 1, "child")),
        request_of(_span(trace, 1, None, "pipeline")),
    ]
    for body in batches:
        status, headers, answer = serving.post(
            gzip.compress(body), PROTOBUF, {"Content-Encoding": "gzip"}
        )
        assert status == 200, answer
        assert headers["Content-Type"] == PROTOBUF
        response = ExportTraceServiceResponse()
        response.ParseFromString(answer)
        assert response.partial_success.rejected_spans == 0
    [run] = runs(serving.db)
    assert run["id"] == f"{trace:032x}"
    assert (run["workflow"], run["status"]) == ("pipeline", "ok")
    shown = show(serving.db, run["id"])
    assert shown["run"]["span_count"] == 3
    assert shown["run"]["service"] == "billing"
    assert sorted(s["name"] for s in shown["spans"]) == ["child", "grandchild", "pipeline"]


def test_bad_spans_are_rejected_one_by_one(serving: Serving) -> None:
    good = _span(0xF00D, 1, None, "kept")
    bad = _span(0xF00D, 2, 1, "bad id")
    bad.span_id = b"\x00" * 8  # all-zero: not a valid span id
    status, _, answer = serving.post(request_of(good, bad), PROTOBUF)
    assert status == 200
    response = ExportTraceServiceResponse()
    response.ParseFromString(answer)
    assert response.partial_success.rejected_spans == 1
    assert "all-zero" in response.partial_success.error_message
    [run] = runs(serving.db)
    assert run["workflow"] == "kept"


def test_refusals(serving: Serving) -> None:
    assert serving.post(b"\xff\xff\xff garbage", PROTOBUF)[0] == 400
    assert serving.post(b"{not json", "application/json")[0] == 400
    assert serving.post(b"not gzip", PROTOBUF, {"Content-Encoding": "gzip"})[0] == 400
    assert serving.post(b"hello", "text/plain")[0] == 415
    assert serving.post(b"", PROTOBUF, {"Content-Encoding": "br"})[0] == 415
    # A gzip bomb: 17 MiB of zeros in about 17 KiB; refused without inflating it all.
    bomb = gzip.compress(b"\0" * (17 * 1024 * 1024))
    assert len(bomb) < 100_000
    assert serving.post(bomb, PROTOBUF, {"Content-Encoding": "gzip"})[0] == 413
    # Small bodies holding more spans than a request may: 200 kB of empty protobuf spans, or
    # 400 kB of empty JSON ones (reading and rejecting each of 4 million took 30 s).
    many = b"\x12\x00" * 100_001
    scope = b"\x12" + _varint(len(many)) + many
    assert serving.post(b"\x0a" + _varint(len(scope)) + scope, PROTOBUF)[0] == 413
    empty: dict[str, Any] = {"resourceSpans": [{"scopeSpans": [{"spans": [{}] * 100_001}]}]}
    status, _, answer = serving.post(json.dumps(empty).encode(), "application/json")
    assert status == 413 and b"100001 spans" in answer, answer
    # A declared length over the limit is refused before the body is read.
    port = int(serving.endpoint.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/x-protobuf\r\nContent-Length: 17000000\r\n\r\n" % port
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
    # A web page that rebinds its name to 127.0.0.1 is not this receiver's host.
    request = urllib.request.Request(
        serving.traces,
        data=request_of(_span(1, 1, None, "x")),
        method="POST",
        headers={"Content-Type": PROTOBUF, "Host": "attacker.example:80"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 403
    assert runs(serving.db) == []
    assert serving.proc.poll() is None  # still serving


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def test_writer_behind_answers_503_with_retry_after(serving: Serving) -> None:
    # Another process holds the store's write lock past the writer's busy timeout.
    with sqlite3.connect(serving.db, timeout=10, isolation_level=None) as locker:
        locker.execute("BEGIN EXCLUSIVE")
        try:
            status, headers, _ = serving.post(request_of(_span(7, 1, None, "late")), PROTOBUF)
        finally:
            locker.execute("ROLLBACK")
    locker.close()
    assert status == 503
    assert headers["Retry-After"] == "1"
    # The client retries once the lock is gone, as an OTLP exporter does.
    assert serving.post(request_of(_span(7, 1, None, "late")), PROTOBUF)[0] == 200
    assert [r["workflow"] for r in runs(serving.db)] == ["late"]


def test_serve_refuses_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    before = notes.read_bytes(), os.stat(notes).st_mtime_ns
    done = spanflow("serve", "--db", str(notes), "--port", "0", "--otlp-port", "0", "--no-open")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert (notes.read_bytes(), os.stat(notes).st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("busy", ["--otlp-port", "--port"])
def test_a_busy_port_is_exit_2_and_leaves_no_store_behind(tmp_path: Path, busy: str) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with taken:
        ports = {"--port": "0", "--otlp-port": "0", busy: str(taken.getsockname()[1])}
        db = tmp_path / "new" / "traces.db"
        done = spanflow(
            "serve", "--db", str(db), *(x for kv in ports.items() for x in kv), "--no-open"
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and busy in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_viewer_url_serves_the_received_runs(serving: Serving) -> None:
    assert serving.post(request_of(_span(9, 1, None, "seen in the viewer")), PROTOBUF)[0] == 200
    deadline = time.monotonic() + 10
    base = serving.viewer_url.split("?", 1)[0]
    token = serving.viewer_url.split("token=", 1)[1]
    request = urllib.request.Request(f"{base}api/runs?token={token}")
    while True:
        with urllib.request.urlopen(request, timeout=10) as response:
            listed = json.loads(response.read())
        text = json.dumps(listed)
        if "seen in the viewer" in text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "seen in the viewer" in text


def _viewer_runs(serving: Serving) -> list[dict[str, Any]]:
    base = serving.viewer_url.split("?", 1)[0]
    token = serving.viewer_url.split("token=", 1)[1]
    with urllib.request.urlopen(f"{base}api/runs?token={token}", timeout=10) as response:
        listed: list[dict[str, Any]] = json.loads(response.read())["runs"]
    return listed


def test_a_trace_whose_root_has_not_arrived_is_an_incomplete_run(serving: Serving) -> None:
    trace = 0xDEF
    run_id = f"{trace:032x}"
    # Children first, in two batches and out of order; the root (span 1) has not been sent.
    assert serving.post(request_of(_span(trace, 3, 2, "grandchild")), PROTOBUF)[0] == 200
    assert serving.post(request_of(_span(trace, 2, 1, "child")), PROTOBUF)[0] == 200
    [run] = runs(serving.db)
    assert (run["id"], run["incomplete"]) == (run_id, True)
    assert run["workflow"] is None
    # It lasts as long as what arrived: the child (second batch) starts before and ends after
    # the grandchild (first batch).
    child_ns = (1_700_000_000_500_000_000 - 2) - (1_700_000_000_000_000_000 + 2)
    assert run["duration_ms"] == pytest.approx(child_ns / 1e6, abs=1e-7)
    table = spanflow("runs", "--db", str(serving.db))
    assert table.returncode == 0, table.stderr
    [row] = [line for line in table.stdout.splitlines() if line.startswith(run_id[:12])]
    assert "incomplete" in row, table.stdout
    [listed] = _viewer_runs(serving)
    assert (listed["id"], listed["incomplete"]) == (run_id, True)
    shown = show(serving.db, run_id)
    assert shown["run"]["incomplete"] is True
    assert shown["run"]["service"] == "billing"  # from the resource, before the root came
    drawn = spanflow("show", run_id, "--db", str(serving.db))
    assert drawn.returncode == 0, drawn.stderr
    lines = drawn.stdout.splitlines()
    assert "ok (incomplete)" in lines[0], drawn.stdout  # as `runs` lists it
    assert any(line.lstrip().startswith("incomplete") for line in lines[1:6]), drawn.stdout
    [root] = [
        i for i, line in enumerate(lines) if "(root span)  " in line and "not received" in line
    ]
    [child] = [i for i, line in enumerate(lines) if "child" in line and "grand" not in line]
    [grandchild] = [i for i, line in enumerate(lines) if "grandchild" in line]
    assert root < child < grandchild, drawn.stdout
    # The child hangs under the missing root, indented one level deeper, not as an orphan.
    indent = len(lines[root]) - len(lines[root].lstrip("└├─│ "))
    assert len(lines[child]) - len(lines[child].lstrip("└├─│ ")) > indent, drawn.stdout
    assert "(orphan)" not in drawn.stdout, drawn.stdout
    # The root arrives minutes later: the same run becomes complete, one run, not two.
    assert serving.post(request_of(_span(trace, 1, None, "pipeline")), PROTOBUF)[0] == 200
    [run] = runs(serving.db)
    assert (run["id"], run["workflow"], run["status"]) == (run_id, "pipeline", "ok")
    assert run["incomplete"] is False
    [listed] = _viewer_runs(serving)
    assert listed["incomplete"] is False
    shown = show(serving.db, run_id)
    assert shown["run"]["span_count"] == 3
    assert sorted(s["name"] for s in shown["spans"]) == ["child", "grandchild", "pipeline"]
    drawn = spanflow("show", run_id, "--db", str(serving.db))
    assert "(root span)" not in drawn.stdout
    table = spanflow("runs", "--db", str(serving.db))
    assert "incomplete" not in table.stdout


def _any(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    if isinstance(value, dict):
        pairs = [KeyValue(key=k, value=_any(v)) for k, v in value.items()]
        return AnyValue(kvlist_value=KeyValueList(values=pairs))
    return AnyValue(string_value=str(value))


ATTRIBUTES: dict[str, object] = {
    "text": "hello",
    "count": 3,
    "ratio": 0.25,
    "flag": True,
    "raw": b"\x00\x01\xfe",
    "list": ["a", 1, False],
    "nested": {"inner": {"deep": [1.5, "x"]}, "password": "hunter2hunter2"},
    "note": f"key {SECRET} inside",
}


def _rich_span(trace: int) -> Span:
    # Named as an HTTP client names its span: after the URL, query and all.
    span = _span(trace, 1, None, f"GET /v1/models?key={SECRET}")
    span.attributes.extend(KeyValue(key=k, value=_any(v)) for k, v in ATTRIBUTES.items())
    span.status.code = Status.STATUS_CODE_ERROR
    span.status.message = f"failed with {SECRET}"
    span.events.append(
        Span.Event(
            name=f"exception {SECRET}",
            time_unix_nano=1_700_000_000_100_000_000,
            attributes=[_attr("exception.message", f"bad {SECRET}"), _attr("token", "t0k3n-val")],
        )
    )
    span.links.append(
        Span.Link(
            trace_id=(trace + 1).to_bytes(16, "big"),
            span_id=(7).to_bytes(8, "big"),
            attributes=[KeyValue(key="api_key", value=_any("plain-value-not-shaped"))],
        )
    )
    return span


def _as_otlp_json(message: ExportTraceServiceRequest) -> bytes:
    # The OTLP/JSON encoding: protobuf's JSON mapping, except that ids are hex.
    document = json_format.MessageToDict(message)
    for rs in document["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for owner in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in owner:
                            owner[key] = base64.b64decode(owner[key]).hex()
    return json.dumps(document).encode()


def test_protobuf_and_json_requests_store_the_same_redacted_span(serving: Serving) -> None:
    stored = []
    for trace, encode in ((0xA1, "protobuf"), (0xA2, "json")):
        message = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(
                        attributes=[
                            _attr("service.name", "billing"),
                            _attr("authorization", "Bearer abcdefghijklmnop"),
                        ]
                    ),
                    scope_spans=[ScopeSpans(spans=[_rich_span(trace)])],
                )
            ]
        )
        if encode == "protobuf":
            answer = serving.post(message.SerializeToString(), PROTOBUF)
        else:
            answer = serving.post(_as_otlp_json(message), "application/json")
        assert answer[0] == 200, answer
        [span] = show(serving.db, f"{trace:032x}")["spans"]
        stored.append(span)
    binary, text = stored
    for span in stored:
        del span["run_id"], span["attributes"]["spanflow.run.id"], span["links"][0]["trace_id"]
    assert binary == text
    attributes = binary["attributes"]
    assert attributes["nested"] == {"inner": {"deep": [1.5, "x"]}, "password": "[REDACTED]"}
    assert attributes["list"] == ["a", 1, False]
    assert attributes["raw"] == base64.b64encode(b"\x00\x01\xfe").decode()
    assert (attributes["count"], attributes["ratio"], attributes["flag"]) == (3, 0.25, True)
    assert attributes["note"] == "key [REDACTED] inside"
    assert binary["status"] == "ERROR"
    assert binary["status_message"] == "failed with [REDACTED]"
    assert binary["name"] == "GET /v1/models?key=[REDACTED]"
    [event] = binary["events"]
    assert event["name"] == "exception [REDACTED]"
    assert event["attributes"] == {"exception.message": "bad [REDACTED]", "token": "[REDACTED]"}
    assert binary["links"][0]["attributes"] == {"api_key": "[REDACTED]"}
    assert binary["resource"] == {"service.name": "billing", "authorization": "[REDACTED]"}
    for path in serving.db.parent.glob("traces.db*"):
        data = path.read_bytes()
        for secret in (
            SECRET,
            "hunter2hunter2",
            "t0k3n-val",
            "plain-value-not",
            "abcdefghijklmnop",
        ):
            assert secret.encode() not in data, (path, secret)


APP = textwrap.dedent(
    """
    import pathlib
    import sys
    import time

    import spanflow

    @spanflow.step
    def add(total: int, n: int) -> int:
        return total + n

    @spanflow.workflow
    def tally(count: int) -> int:
        total = 0
        for n in range(count):
            total = add(total, n)
        return total

    # Runs until told to stop, so its writes overlap the receiver's however fast either is.
    stop = pathlib.Path(sys.argv[1])
    made = 0
    while not stop.exists() or made < 20:
        tally(5)
        made += 1
        time.sleep(0.001)  # busy, but within what the store writes: no span is dropped
        if made == 20:
            print("started", flush=True)
    print(made)
    """
)


def test_an_app_and_serve_write_one_store_at_once(serving: Serving, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP, encoding="utf-8")
    stop, received = tmp_path / "stop", 60
    app = subprocess.Popen(
        [sys.executable, str(script), str(stop)],
        env={**os.environ, "SPANFLOW_DB": str(serving.db)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None and app.stdout.readline() == "started\n"
        # While the app writes its runs, traces arrive: three spans each, root last.
        for trace in range(1, received + 1):
            spans = [
                _span(trace, 3, 2, "leaf"),
                _span(trace, 2, 1, "mid"),
                _span(trace, 1, None, "got"),
            ]
            for span in spans:
                # As an OTLP exporter does: a 503 (the store is locked by the app's writer
                # longer than the receiver waits) is retried after its Retry-After.
                for _attempt in range(20):
                    status, headers, answer = serving.post(request_of(span), PROTOBUF)
                    if status != 503:
                        break
                    time.sleep(min(float(headers.get("Retry-After", "1")), 1.0))
                assert status == 200, answer
        overlapped = app.poll() is None
        stop.touch()
        out, err = app.communicate(timeout=120)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()
    assert app.returncode == 0, err
    assert overlapped, "the app stopped before the traces were received: nothing ran at once"
    app_runs = int(out)
    done = spanflow("runs", "--db", str(serving.db), "--json", "--limit", "100000")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    mine = [r for r in listed if r["workflow"] == "tally"]
    theirs = [r for r in listed if r["workflow"] == "got"]
    assert len(mine) == app_runs and len(theirs) == received, len(listed)
    assert {r["status"] for r in listed} == {"ok"}
    assert not any(r["incomplete"] for r in listed)
    with sqlite3.connect(f"file:{serving.db}?mode=ro", uri=True) as conn:
        counts = dict(conn.execute("SELECT workflow, sum(span_count) FROM runs GROUP BY workflow"))
        stored = dict(
            conn.execute(
                "SELECT r.workflow, count(*) FROM spans s JOIN runs r ON s.run_pk = r.pk "
                "GROUP BY r.workflow"
            )
        )
    conn.close()
    assert counts == stored == {"tally": app_runs * 6, "got": received * 3}


@pytest.mark.browser
def test_the_page_marks_a_trace_without_its_root_incomplete(
    serving: Serving, watched: Watched
) -> None:
    trace = 0xFED
    run_id = f"{trace:032x}"
    assert serving.post(request_of(_span(trace, 2, 1, "child")), PROTOBUF)[0] == 200
    page = watched.page
    page.goto(serving.viewer_url)
    row = page.locator(f"tr.run-row[data-run-id='{run_id}']")
    row.wait_for()
    assert row.locator(".tag.incomplete").inner_text() == "incomplete"
    row.click()
    page.wait_for_function("() => window.__spanflow && window.__spanflow.ready")
    assert page.locator(".rh-top .tag.incomplete").count() == 1
    assert "has not been received" in page.locator(".rh-noreplay").inner_text()
    # The root arrives: the same run, no longer marked.
    assert serving.post(request_of(_span(trace, 1, None, "pipeline")), PROTOBUF)[0] == 200
    page.goto(serving.viewer_url)
    row.wait_for()
    assert row.locator(".tag.incomplete").count() == 0
    assert watched.errors == []


def test_hostile_fields_are_rejected_span_by_span_and_never_break_the_store(
    serving: Serving,
) -> None:
    good = _span(0xB0B, 1, None, "kept")
    late = _span(0xB0B, 2, 1, "beyond int64")
    late.end_time_unix_nano = 2**64 - 1  # a fixed64 holds it; SQLite's integers do not
    status, _, answer = serving.post(request_of(good, late), PROTOBUF)
    assert status == 200
    response = ExportTraceServiceResponse()
    response.ParseFromString(answer)
    assert response.partial_success.rejected_spans == 1
    assert "64 signed bits" in response.partial_success.error_message
    # A hex id with a final newline is not an id (it made a second, ghost run).
    trace = "0af7651916cd43dd8448eb211c80319"
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace + "\n",
                                "spanId": "00f067aa0ba902b7",
                                "name": "newline",
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    status, _, answer = serving.post(json.dumps(document).encode(), "application/json")
    assert status == 200
    assert json.loads(answer)["partialSuccess"]["rejectedSpans"] in (1, "1")
    # Nested past what Python can parse: a 400, never a dropped connection.
    status, _, answer = serving.post(b"[" * 100_000 + b"]" * 100_000, "application/json")
    assert status == 400, answer
    assert [r["workflow"] for r in runs(serving.db)] == ["kept"]
