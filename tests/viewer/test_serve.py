"""``spanflow serve`` as a user runs it: a real subprocess on free ports, real OTLP clients."""

from __future__ import annotations

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
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

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
