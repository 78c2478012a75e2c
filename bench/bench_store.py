"""Benchmark of the local SQLite store.

Prints:
  1. spans/s sustained through SQLiteSpanProcessor into a fresh database (``--spans``, default
     200k, fed as finished spans), the CPU each span costs, and the bytes it takes on disk;
  2. the same two halves measured apart: span -> row on the caller's thread, and rows -> the
     indexed schema in the writer;
  3. what the processor adds to the application's thread when spans come from a real tracer;
  4. how late spans reach the disk while the application thread keeps the GIL busy (the
     store promises half a second): runs of 10 spans made as fast as one thread can;
  5. the run-list and one-run-spans query times on a store of ``--big`` spans (default 1M),
     built directly with executemany.

Run: ``python bench/bench_store.py [--spans N] [--big N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from spanflow.attributes import (
    INPUT_MIME_TYPE,
    INPUT_VALUE,
    JSON_MIME,
    OUTPUT_MIME_TYPE,
    OUTPUT_VALUE,
    RUN_ID,
    SPAN_KIND,
    STEP_NAME,
    STEP_TYPE,
    STEP_TYPE_STEP,
    STEP_TYPE_WORKFLOW,
    WORKFLOW_ENTRYPOINT,
)
from spanflow.exporters import schema
from spanflow.exporters._batch import BatchWriter
from spanflow.exporters._span_rows import RowMaker
from spanflow.exporters.sqlite_store import SQLiteSpanProcessor, span_extra
from spanflow.exporters.store import Store

SPANS_PER_RUN = 10
WORKFLOWS = [f"pipeline_{i}" for i in range(8)]


def make_runs(n_spans: int) -> list[ReadableSpan]:
    """Finished spans of n_spans / 10 runs: a workflow root and nine steps, typical attributes."""
    resource = Resource.create({"service.name": "bench"})
    rng = random.Random(1)
    spans: list[ReadableSpan] = []
    now = time.time_ns()
    for r in range(n_spans // SPANS_PER_RUN):
        tid = rng.getrandbits(128)
        run_id = f"{tid:032x}"
        root_ctx = SpanContext(tid, rng.getrandbits(64), False, TraceFlags(1))
        start = now + r * 1_000_000
        for i in range(SPANS_PER_RUN - 1):
            attrs = {
                RUN_ID: run_id,
                STEP_NAME: f"step_{i}",
                STEP_TYPE: STEP_TYPE_STEP,
                SPAN_KIND: "CHAIN",
                INPUT_VALUE: json.dumps({"question": f"what is {r}+{i}?", "n": i}),
                INPUT_MIME_TYPE: JSON_MIME,
                OUTPUT_VALUE: json.dumps({"answer": r + i}),
                OUTPUT_MIME_TYPE: JSON_MIME,
            }
            spans.append(
                ReadableSpan(
                    name=f"step_{i}",
                    context=SpanContext(tid, rng.getrandbits(64), False, TraceFlags(1)),
                    parent=root_ctx,
                    resource=resource,
                    attributes=attrs,
                    kind=SpanKind.INTERNAL,
                    status=Status(StatusCode.OK),
                    start_time=start + i * 1000,
                    end_time=start + i * 1000 + 800,
                )
            )
        root_attrs = {
            RUN_ID: run_id,
            STEP_NAME: WORKFLOWS[r % len(WORKFLOWS)],
            STEP_TYPE: STEP_TYPE_WORKFLOW,
            WORKFLOW_ENTRYPOINT: "bench:pipeline",
            SPAN_KIND: "CHAIN",
            INPUT_VALUE: json.dumps({"n": r}),
        }
        spans.append(
            ReadableSpan(
                name="pipeline",
                context=root_ctx,
                parent=None,
                resource=resource,
                attributes=root_attrs,
                status=Status(StatusCode.OK),
                start_time=start,
                end_time=start + 20_000,
            )
        )
    return spans


def measure_processor(path: pathlib.Path, spans: list[ReadableSpan]) -> dict[str, float]:
    """Feed finished ``spans`` through SQLiteSpanProcessor into a fresh store at ``path``.

    Returns spans/s sustained (wall), CPU µs per span on the caller's thread and in the writer,
    and what the processor counted (written, dropped, failed) and bytes per span on disk.
    """
    proc = SQLiteSpanProcessor(path)
    cpu, caller_cpu, started = time.process_time(), time.thread_time(), time.perf_counter()
    for i, span in enumerate(spans):
        proc.on_end(span)
        # Feed as fast as the writer sustains: back off only when the queue is well filled.
        if i % 2000 == 0:
            while proc.stats()["queue_size"] > 50_000:
                time.sleep(0.001)
    caller_cpu = time.thread_time() - caller_cpu
    proc.force_flush()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    stats = proc.stats()
    proc.shutdown()
    n = len(spans)
    return {
        "spans_per_s": n / elapsed,
        "elapsed_s": elapsed,
        "caller_us": caller_cpu / n * 1e6,
        "writer_us": (cpu - caller_cpu) / n * 1e6,
        "cpu_us": cpu / n * 1e6,
        "written": stats["spans_written"],
        "dropped": stats["spans_dropped"],
        "failed": stats["spans_failed"],
        "bytes_per_span": path.stat().st_size / n,
    }


def bench_processor(directory: pathlib.Path, n_spans: int) -> None:
    spans = make_runs(n_spans)
    m = measure_processor(directory / "throughput.db", spans)
    n = len(spans)
    print(
        f"processor: {n:,} spans in {m['elapsed_s']:.2f} s wall = "
        f"{m['spans_per_s']:,.0f} spans/s sustained"
    )
    print(
        f"  CPU per span: {m['caller_us']:.1f} us in on_end (caller's thread), "
        f"{m['writer_us']:.1f} us in the writer thread "
        f"= {1e6 / m['cpu_us']:,.0f} spans per CPU-second"
    )
    print(
        f"  written {m['written']:,}, dropped {m['dropped']:.0f}, "
        f"failed {m['failed']:.0f}; {m['bytes_per_span']:.0f} bytes/span on disk"
    )


def bench_stages(directory: pathlib.Path, n_spans: int) -> None:
    """The two halves apart: span -> row (caller's thread), rows -> indexed schema (writer)."""
    spans = make_runs(n_spans)
    maker = RowMaker()
    started = time.perf_counter()
    rows: list[schema.SpanRow] = []
    extras: list[schema.SpanExtra] = []
    for span in spans:
        assert span.context is not None
        attrs = dict(span.attributes or {})
        row = maker.row(span, span.context, attrs)
        rows.append(row)
        if span.parent is None:
            extras.append(span_extra(span, attrs, row, (), ()))
    convert = time.perf_counter() - started
    conn = schema.open_for_writing(directory / "stages.db")
    writer = BatchWriter()
    cpu, started = time.process_time(), time.perf_counter()
    # Rounds as the writer thread commits them: 4,000 spans (400 runs) per transaction.
    for i in range(0, len(rows), 4000):
        conn.execute("BEGIN IMMEDIATE")
        writer.write(conn, rows[i : i + 4000], extras[i // 10 : (i + 4000) // 10])
        conn.execute("COMMIT")
    write, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    n = len(spans)
    print(
        f"stages: span -> row {convert / n * 1e6:.1f} us/span; rows -> indexed schema "
        f"{n / write:,.0f} spans/s wall ({n / cpu:,.0f} per CPU-second)"
    )


class Timed(SpanProcessor):
    """Wraps a processor and adds up the time the application thread spends in it."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self.seconds = 0.0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        started = time.perf_counter()
        self.inner.on_start(span, parent_context)
        self.seconds += time.perf_counter() - started

    def on_end(self, span: ReadableSpan) -> None:
        started = time.perf_counter()
        self.inner.on_end(span)
        self.seconds += time.perf_counter() - started

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def traced_runs(provider: TracerProvider, n_runs: int) -> float:
    """Seconds to record n_runs runs of 10 spans through a real tracer."""
    tracer = provider.get_tracer("bench")
    started = time.perf_counter()
    for r in range(n_runs):
        with tracer.start_as_current_span("pipeline", context=Context()) as root:
            run_id = f"{root.get_span_context().trace_id:032x}"
            root.set_attributes(
                {RUN_ID: run_id, STEP_NAME: "pipeline", STEP_TYPE: STEP_TYPE_WORKFLOW}
            )
            for i in range(SPANS_PER_RUN - 1):
                with tracer.start_as_current_span(f"step_{i}") as span:
                    span.set_attributes(
                        {
                            RUN_ID: run_id,
                            STEP_NAME: f"step_{i}",
                            STEP_TYPE: STEP_TYPE_STEP,
                            INPUT_VALUE: json.dumps({"question": f"what is {r}+{i}?"}),
                            OUTPUT_VALUE: json.dumps({"answer": r + i}),
                        }
                    )
    return time.perf_counter() - started


def bench_overhead(directory: pathlib.Path, n_spans: int) -> None:
    """What the processor costs the application's thread when spans come from a real tracer."""
    n_runs = n_spans // SPANS_PER_RUN
    provider = TracerProvider()
    proc = SQLiteSpanProcessor(directory / "overhead.db")
    timed_proc = Timed(proc)
    provider.add_span_processor(timed_proc)
    total = traced_runs(provider, n_runs)
    proc.force_flush()
    written = proc.stats()["spans_written"]
    provider.shutdown()
    n = n_runs * SPANS_PER_RUN
    print(
        f"application thread, real tracer: {total / n * 1e6:.1f} us per span in all, of which "
        f"{timed_proc.seconds / n * 1e6:.1f} us in the store's on_start/on_end; "
        f"{written:,} spans written"
    )


class EndTimes(SpanProcessor):
    """Remembers when each span ended, by span id."""

    def __init__(self) -> None:
        self.ended: dict[str, int] = {}

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.end_time is not None:
            self.ended[f"{span.context.span_id:016x}"] = span.end_time


def bench_lag(directory: pathlib.Path, seconds: float, *, cold: bool) -> None:
    """How late spans reach the disk while the application thread never lets the GIL rest.

    ``cold``: the store is created while the application is already busy (creating it takes
    over a hundred statements, each waiting for the GIL); else it exists and is open first.
    """
    path = directory / ("cold.db" if cold else "lag.db")
    provider = TracerProvider()
    proc = SQLiteSpanProcessor(path)
    ends = EndTimes()
    provider.add_span_processor(proc)
    provider.add_span_processor(ends)
    if not cold:
        traced_runs(provider, 1)
        proc.force_flush()
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        # Polls the committed spans; a span's lag is when it was first seen minus its end.
        conn: sqlite3.Connection | None = None
        last = 0
        try:
            while not done.wait(0.02):
                now = time.time_ns()
                # One row per query: fetching row by row would give the GIL up (and wait up
                # to 5 ms for it) once per span.
                try:
                    conn = conn or sqlite3.connect(schema.ro_uri(path), uri=True)
                    top, ids = conn.execute(
                        "SELECT max(rowid), group_concat(span_id) FROM spans WHERE rowid > ?",
                        (last,),
                    ).fetchone()
                except sqlite3.Error:  # the store is still being created
                    continue
                if top is not None:
                    seen.update(dict.fromkeys(ids.split(","), now))
                    last = top
        finally:
            if conn is not None:
                conn.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    n_runs = 0
    since = time.time_ns()
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        traced_runs(provider, 100)
        n_runs += 100
    elapsed = time.perf_counter() - started
    backlog = proc.stats()["queue_size"]
    proc.force_flush()
    time.sleep(0.1)
    done.set()
    watcher.join()
    provider.shutdown()
    lags = sorted(
        (seen[span_id] - end) / 1e9
        for span_id, end in ends.ended.items()
        if span_id in seen and end > since
    )
    late = sum(lag > 0.5 for lag in lags)
    print(
        f"busy application thread, {'store created meanwhile' if cold else 'store open'}: "
        f"{n_runs * SPANS_PER_RUN / elapsed:,.0f} spans/s ({n_runs:,} runs of {SPANS_PER_RUN}); "
        f"committed {lags[len(lags) // 2]:.2f} s after the span ended (median), "
        f"{lags[int(len(lags) * 0.99)]:.2f} s (99th percentile), {lags[-1]:.2f} s (max), "
        f"{late:,} of {len(lags):,} later than 0.5 s; {backlog:,} queued at the end, "
        f"{proc.stats()['spans_dropped']:,} dropped (±0.02 s polling)"
    )


def build_big(path: pathlib.Path, n_spans: int) -> list[str]:
    """A store of n_spans spans in n_spans / 10 runs, written directly; returns the run ids."""
    conn = schema.open_for_writing(path)
    rng = random.Random(2)
    now = time.time_ns() - n_spans * 100_000
    n_runs = n_spans // SPANS_PER_RUN
    run_ids = [f"{rng.getrandbits(128):032x}" for _ in range(n_runs)]
    attrs = json.dumps(
        {RUN_ID: "0" * 32, STEP_NAME: "step", STEP_TYPE: STEP_TYPE_STEP, INPUT_VALUE: "{}"}
    )
    cols = (
        f"{schema.RUN_PK}, {schema.RUN_ID}, {schema.RUN_WORKFLOW}, {schema.RUN_STATUS}, "
        f"{schema.RUN_ERROR}, {schema.RUN_STARTED_NS}, {schema.RUN_ENDED_NS}, "
        f"{schema.RUN_DURATION_MS}, {schema.RUN_SPAN_COUNT}, {schema.RUN_ERROR_COUNT}"
    )
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO {schema.RUNS} ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                pk + 1,
                run_id,
                WORKFLOWS[pk % len(WORKFLOWS)],
                "failed" if pk % 10 == 0 else "ok",
                "ValueError: bench" if pk % 10 == 0 else None,
                now + pk * 1_000_000,
                now + pk * 1_000_000 + 500_000,
                0.5,
                SPANS_PER_RUN,
                1 if pk % 10 == 0 else 0,
            )
            for pk, run_id in enumerate(run_ids)
        ),
    )
    marks = ", ".join("?" * len(schema.SPAN_COLUMNS))
    # Runs overlap in time as in a busy service: spans of 20 runs interleave.
    conn.executemany(
        f"INSERT INTO {schema.SPANS} VALUES ({marks})",
        (
            (
                (i // 200) * 20 + i % 20 + 1,
                f"{rng.getrandbits(64):016x}",
                None,
                "step",
                "INTERNAL",
                "OK",
                None,
                now + i * 50_000,
                now + i * 50_000 + 40_000,
                attrs,
                None,
            )
            for i in range(n_runs * SPANS_PER_RUN)
        ),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return run_ids


def timed(fn: Callable[[], Any], repeat: int = 200) -> float:
    """Median wall time of fn() in milliseconds."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def bench_queries(directory: pathlib.Path, n_spans: int) -> None:
    path = directory / "big.db"
    t = time.perf_counter()
    run_ids = build_big(path, n_spans)
    print(
        f"\nbig store: {n_spans:,} spans / {len(run_ids):,} runs built in "
        f"{time.perf_counter() - t:.1f} s, {path.stat().st_size / n_spans:.0f} bytes/span"
    )
    rng = random.Random(3)
    picks = [rng.choice(run_ids) for _ in range(50)]
    recent = Store.open(path)
    since = recent.list_runs(limit=1, offset=1000)[0].started_at
    with Store.open(path) as store:
        cases: dict[str, Callable[[], Any]] = {
            "list_runs(limit=50)": lambda: store.list_runs(limit=50),
            "list_runs(status='failed')": lambda: store.list_runs(status="failed"),
            "list_runs(workflow=...)": lambda: store.list_runs(workflow=WORKFLOWS[3]),
            "list_runs(since=...)": lambda: store.list_runs(since=since),
            "list_runs(offset=5000)": lambda: store.list_runs(offset=5000),
            "get_run(prefix)": lambda: store.get_run(rng.choice(picks)[:8]),
            "spans(run) [10 spans]": lambda: store.spans(rng.choice(picks)),
        }
        for label, fn in cases.items():
            print(f"  {label:32s} {timed(fn):7.3f} ms (API call, records built)")
    recent.close()
    # The SQL alone, as the store issues it.
    conn = sqlite3.connect(schema.ro_uri(path), uri=True)
    pk = conn.execute("SELECT pk FROM runs WHERE id = ?", (picks[0],)).fetchone()[0]
    sql_cases = {
        "SQL run list": ("SELECT * FROM runs ORDER BY started_ns DESC LIMIT 50", ()),
        "SQL run list status=failed": (
            "SELECT * FROM runs WHERE status = ? ORDER BY started_ns DESC LIMIT 50",
            ("failed",),
        ),
        "SQL one run's spans": ("SELECT * FROM spans WHERE run_pk = ? ORDER BY start_ns", (pk,)),
    }
    for label, (sql, params) in sql_cases.items():

        def fetch(sql: str = sql, params: tuple[Any, ...] = params) -> list[Any]:
            return conn.execute(sql, params).fetchall()

        ms = timed(fetch)
        plan = "; ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        print(f"  {label:32s} {ms:7.3f} ms   plan: {plan}")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000, help="spans through the processor")
    parser.add_argument("--big", type=int, default=1_000_000, help="spans in the query store")
    parser.add_argument(
        "--lag-seconds", type=float, default=6.0, help="how long the busy application runs"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spanflow-bench-") as tmp:
        directory = pathlib.Path(tmp)
        print(f"sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
        bench_processor(directory, args.spans)
        bench_stages(directory, args.spans)
        bench_overhead(directory, min(args.spans, 50_000))
        bench_lag(directory, 2.0, cold=True)
        bench_lag(directory, args.lag_seconds, cold=False)
        bench_queries(directory, args.big)


if __name__ == "__main__":
    main()
