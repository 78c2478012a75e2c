"""Benchmark of ``spanflow serve``: start time and OTLP/HTTP ingest over loopback.

Each round starts ``spanflow serve`` as a user does (a subprocess, fresh store, free ports) and
prints, over ``--rounds`` rounds, min / median / max of:
  1. start: from launching the process to the first accepted ``POST /v1/traces`` (a one-span
     request answered 200, so the spans are on disk; target < 1 s), with a new store and again
     on the store the round filled;
  2. ingest: a separate sender process exports ``--spans`` finished spans (the 10-span runs of
     ``bench_store.py``, built before the clock starts) with the real
     ``opentelemetry-exporter-otlp-proto-http`` OTLPSpanExporter in batches of 512, one request
     at a time as a BatchSpanProcessor sends them. Throughput runs from the first request to the
     last 200 (a 200 means committed); the store's span count is checked afterwards. Server CPU
     per span is read from ``/proc/<pid>/stat`` (user + system, whole process) around it;
  3. beside it, the in-process store (``bench_store.measure_processor``) on the same spans in the
     same round, so both figures share the machine's noise.

Run: ``python bench/bench_serve.py [--spans N] [--rounds N]`` (``make bench`` runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pathlib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

BATCH = 512
HERE = pathlib.Path(__file__).resolve().parent
SPANFLOW = [sys.executable, "-m", "spanflow.viewer.cli"]
NO_OPEN = ["--no-open"]
SPANS = ["--spans"]
SENDER = [sys.executable, str(HERE / "bench_serve.py"), "--send"]
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def one_span_request() -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    now = time.time_ns()
    span = Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name="first request",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1000,
    )
    message = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    data: bytes = message.SerializeToString()
    return data


class Server:
    """``spanflow serve`` on free ports with a fresh store; ``started_s`` is its start time."""

    def __init__(self, db: pathlib.Path) -> None:
        self.db = db
        self.port = free_port()
        body = one_span_request()
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                *SPANFLOW,
                "serve",
                "--db",
                str(db),
                "--port",
                "0",
                "--otlp-port",
                str(self.port),
                *NO_OPEN,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spanflow serve exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            status = self._post(body)
            if status == 200:
                break
            time.sleep(0.002)
        self.started_s = time.perf_counter() - started
        self.traces = f"http://127.0.0.1:{self.port}/v1/traces"

    def _post(self, body: bytes) -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            response = conn.getresponse()
            response.read()
            return response.status
        except OSError:
            return None
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.send_signal(2)
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def send(endpoint: str, n_spans: int, senders: int) -> None:
    """The sender process: export ``n_spans`` prebuilt spans in batches; print the timings.

    One sender calls ``OTLPSpanExporter.export`` batch after batch, as an application's
    BatchSpanProcessor does: the exporter encodes each batch on the way. Several senders
    (threads, one exporter each) post batches encoded before the clock starts, with the same
    encoder ``export`` uses, through the exporter's own HTTP client: the receiver is never
    waiting for a client, so what is measured is what it sustains.
    """
    import threading

    from bench_store import make_runs
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    spans = make_runs(n_spans)
    batches = [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]
    exporters = [OTLPSpanExporter(endpoint=endpoint, timeout=60) for _ in range(senders)]
    failed = 0
    if senders == 1:
        first, cpu = time.monotonic(), time.process_time()
        for batch in batches:
            if exporters[0].export(batch) is not SpanExportResult.SUCCESS:
                failed += 1
    else:
        bodies = [encode_spans(batch).SerializePartialToString() for batch in batches]
        lock = threading.Lock()

        def post(exporter: OTLPSpanExporter, mine: list[bytes]) -> None:
            nonlocal failed
            for body in mine:
                if not exporter._client.export(body).success:
                    with lock:
                        failed += 1

        threads = [
            threading.Thread(target=post, args=(exporter, bodies[k::senders]))
            for k, exporter in enumerate(exporters)
        ]
        first, cpu = time.monotonic(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    last = time.monotonic()
    cpu = time.process_time() - cpu
    for exporter in exporters:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    print(json.dumps({"first": first, "last": last, "failed": failed, "cpu": cpu}))


def stored_spans(db: pathlib.Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])


def ingest(directory: pathlib.Path, n_spans: int, senders: int) -> dict[str, float]:
    db = directory / f"serve-{senders}.db"
    server = Server(db)
    try:
        before = cpu_seconds(server.proc.pid)
        sent = subprocess.run(
            [*SENDER, server.traces, *SPANS, str(n_spans), "--senders", str(senders)],
            capture_output=True,
            text=True,
            check=True,
        )
        server_cpu = cpu_seconds(server.proc.pid) - before
        timings = json.loads(sent.stdout)
        stored = stored_spans(db) - 1  # the first request's span
    finally:
        server.stop()
    if timings["failed"] or stored != n_spans:
        raise RuntimeError(f"{timings['failed']} batches failed, {stored} of {n_spans} stored")
    again = Server(db)  # the same store, now holding the spans: the start of a later session
    again.stop()
    elapsed = timings["last"] - timings["first"]
    return {
        "start_s": server.started_s,
        "restart_s": again.started_s,
        "spans_per_s": n_spans / elapsed,
        "server_us": server_cpu / n_spans * 1e6,
        "sender_us": timings["cpu"] / n_spans * 1e6,
    }


def spread(values: Sequence[float], fmt: str) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:{fmt}} (min {low:{fmt}}, max {high:{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000, help="spans sent per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (fresh server and store)")
    parser.add_argument("--senders", type=int, default=2, help="concurrent senders, capacity")
    parser.add_argument("--send", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send(args.send, args.spans, args.senders)
        return
    sys.path.insert(0, str(HERE))
    from bench_store import make_runs, measure_processor

    spans = make_runs(args.spans)
    one: list[dict[str, float]] = []
    many: list[dict[str, float]] = []
    local: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="spanflow-bench-serve-") as tmp:
        for r in range(args.rounds):
            directory = pathlib.Path(tmp) / str(r)
            directory.mkdir()
            one.append(ingest(directory, args.spans, 1))
            many.append(ingest(directory, args.spans, args.senders))
            local.append(measure_processor(directory / "local.db", spans))
    starts = [r["start_s"] * 1e3 for r in one + many]
    restarts = [r["restart_s"] * 1e3 for r in one + many]
    print(f"spanflow serve, {os.cpu_count()} CPUs, {args.rounds} rounds: median (min, max)")
    print(f"  start to first accepted request, new store: {spread(starts, ',.0f')} ms")
    print(f"  start to first accepted request, existing store: {spread(restarts, ',.0f')} ms")
    print(f"  ingest of {args.spans:,} spans in batches of {BATCH}, loopback HTTP, protobuf:")
    for label, rounds in (
        ("one OTLPSpanExporter.export() after another (encoding in the sender)", one),
        (f"receiver capacity, {args.senders} senders, batches encoded beforehand", many),
    ):
        print(f"    {label}:")
        print(f"      {spread([r['spans_per_s'] for r in rounds], ',.0f')} spans/s")
        print(f"      server CPU {spread([r['server_us'] for r in rounds], '.1f')} µs/span")
        print(f"      sender CPU {spread([r['sender_us'] for r in rounds], '.1f')} µs/span")
    rates = [m["spans_per_s"] for m in local]
    print(
        "  in-process store (SQLiteSpanProcessor, same spans): "
        f"{spread(rates, ',.0f')} spans/s, CPU {spread([m['cpu_us'] for m in local], '.1f')} µs/span"
    )
    ratios = [m["spans_per_s"] / r["spans_per_s"] for r, m in zip(many, local, strict=True)]
    print(f"  in-process / receiver capacity, per round: {spread(ratios, '.2f')}")


if __name__ == "__main__":
    main()
