"""How spans reach the store: rows made on the application thread, batches written in a few
statements, and the half-second promise kept while the application keeps the GIL busy."""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import spanflow
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from spanflow import runtime
from spanflow.attributes import RUN_ID, STEP_NAME, STEP_TYPE, STEP_TYPE_STEP, STEP_TYPE_WORKFLOW
from spanflow.exporters import schema
from spanflow.exporters._batch import BatchWriter, canonical_rows, chunk_sizes
from spanflow.exporters._span_rows import (
    SDK_SPANS,
    RowMaker,
    attributes,
    ended_run_rows,
    span_row,
)
from spanflow.exporters.sqlite_store import SQLiteSpanProcessor
from spanflow.exporters.store import Store

from tests.exporters.conftest import Recorder, query, run_id_of


class Keep(SpanProcessor):
    """Keeps every finished span."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def finished_spans() -> list[ReadableSpan]:
    """SDK spans of every shape a row has a field for: root and child, each kind, error with
    and without a message, remote parent, events and links."""
    keep = Keep()
    provider = TracerProvider(resource=Resource.create({"service.name": "rows"}))
    provider.add_span_processor(keep)
    tracer = provider.get_tracer("tests")
    remote = SpanContext(0xAB, 0xCD, True, TraceFlags(1))
    with tracer.start_as_current_span("root", context=Context()) as root:
        root.set_attribute(RUN_ID, run_id_of(root))
        for kind in SpanKind:
            with tracer.start_as_current_span(f"k-{kind.name}", kind=kind) as span:
                span.set_attributes({"n": 1, "f": 0.5, "b": True, "t": ("x", "y"), "s": 'q"é'})
        with tracer.start_as_current_span("failed") as span:
            span.set_status(Status(StatusCode.ERROR, "0"))
            span.add_event("exception", {"exception.type": "ValueError"})
        with tracer.start_as_current_span("failed quietly") as span:
            span.set_status(Status(StatusCode.ERROR))
        with tracer.start_as_current_span("linked", links=[Link(remote, {"why": "x"})]):
            pass
    with tracer.start_as_current_span("from a worker", context=trace_context(remote)):
        pass
    provider.shutdown()
    return keep.spans


def trace_context(parent: SpanContext) -> Context:
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def test_rows_read_through_fields_equal_rows_read_through_properties() -> None:
    spans = finished_spans()
    assert {type(span) for span in spans} <= SDK_SPANS
    maker = RowMaker()
    for span in spans:
        assert span.context is not None
        attrs = attributes(span)
        fast = maker.row(span, span.context, attrs)
        slow = span_row(span, span.context, attrs, maker.resource_text(span.resource))
        # The fast rows give a missing parent or message as 0, which the writer stores as NULL.
        assert [None if i in (2, 6) and v == 0 else v for i, v in enumerate(fast)] == list(slow)


class Renamed(ReadableSpan):
    """A span class that answers ``name`` its own way."""

    @property
    def name(self) -> str:
        return "renamed"


def test_a_span_class_overriding_a_property_is_read_through_the_property() -> None:
    ctx = SpanContext(1, 2, False, TraceFlags(1))
    span = Renamed("original", context=ctx, start_time=1, end_time=2)
    assert Renamed not in SDK_SPANS
    assert RowMaker().row(span, ctx, {})[3] == "renamed"


def test_queued_rows_are_untracked_by_the_garbage_collector() -> None:
    # A queue of tracked rows makes every collection of the application's slower.
    span = finished_spans()[0]
    assert span.context is not None
    row = RowMaker().row(span, span.context, attributes(span))
    gc.collect()
    assert not gc.is_tracked(row)


@contextlib.contextmanager
def counted(conn: sqlite3.Connection) -> Iterator[list[str]]:
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        conn.set_trace_callback(None)


def fake_rows(n_runs: int, per_run: int) -> tuple[list[schema.SpanRow], list[schema.SpanExtra]]:
    """Canonical rows of ``n_runs`` runs, each a root (ended, with an event) and children."""
    resource = '{"service.name":"fake"}'
    rows: list[schema.SpanRow] = []
    extras: list[schema.SpanExtra] = []
    for r in range(n_runs):
        trace = f"{r + 1:032x}"
        root = f"{r + 1:016x}"
        for i in range(per_run - 1):
            status = "ERROR" if i == 0 else "UNSET"
            rows.append(
                (
                    trace,
                    f"{r:08x}{i + 1:08x}",
                    root,
                    f"s{i}",
                    "INTERNAL",
                    status,
                    0,
                    i,
                    i + 1,
                    "{}",
                    resource,
                )
            )
        rows.append((trace, root, None, "run", "INTERNAL", "OK", None, 0, 99, "{}", resource))
        run = (
            trace,
            "run",
            None,
            None,
            "ok",
            None,
            0,
            99,
            99e-6,
            None,
            "fake",
            None,
            None,
            None,
            1,
        )
        extras.append((trace, root, (("log", 5, '{"a":1}'),), None, run))
    return rows, extras


def test_a_batch_takes_a_few_statements_whatever_it_holds(tmp_path: Path) -> None:
    # Each statement gives the GIL up, and getting it back from a busy application costs up to
    # 5 ms: statements per span or per run would leave the writer behind the application.
    conn = schema.open_for_writing(tmp_path / "traces.db")
    rows, extras = fake_rows(n_runs=300, per_run=10)
    try:
        with counted(conn) as statements:
            conn.execute("BEGIN IMMEDIATE")
            assert BatchWriter().write(conn, rows, extras) == 300
            conn.execute("COMMIT")
        assert len(statements) <= 12, statements
    finally:
        conn.close()
    path = tmp_path / "traces.db"
    assert query(path, "SELECT count(*), sum(span_count), sum(error_count) FROM runs") == [
        (300, 3000, 300)
    ]
    assert query(
        path, "SELECT count(*) FROM spans WHERE run_pk IS NULL OR resource_pk IS NULL"
    ) == [(0,)]
    assert query(path, "SELECT count(*), count(DISTINCT run_pk) FROM events") == [(300, 300)]
    assert query(path, "SELECT count(*) FROM spans") == [(3000,)]


@pytest.mark.parametrize("n", [1, 3, 17, 64, 65, 300])
def test_padding_rows_never_reach_the_tables(tmp_path: Path, n: int) -> None:
    conn = schema.open_for_writing(tmp_path / "traces.db")
    # A low parameter limit, as older SQLite builds have, makes for small statements.
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 200)
    assert chunk_sizes(conn, 11, 1024) == (16, 4, 1)
    rows, extras = fake_rows(n_runs=n, per_run=3)
    try:
        conn.execute("BEGIN IMMEDIATE")
        BatchWriter().write(conn, rows, extras)
        conn.execute("COMMIT")
    finally:
        conn.close()
    path = tmp_path / "traces.db"
    assert query(path, "SELECT count(*) FROM spans") == [(3 * n,)]
    assert query(path, "SELECT count(*), sum(span_count) FROM runs") == [(n, 3 * n)]
    assert query(path, "SELECT count(*) FROM events") == [(n,)]
    assert query(path, "SELECT count(*) FROM spans WHERE span_id = 0 OR run_pk IS NULL") == [(0,)]


def test_rows_in_the_readers_format_are_converted() -> None:
    canonical, _ = fake_rows(n_runs=2, per_run=2)
    assert canonical_rows(canonical) is canonical
    legacy = [[0x1F, "a" * 16, None, "x", "INTERNAL", "OK", None, 1, 2, "{}", {"k": "v"}]]
    assert canonical_rows(legacy) == [
        (f"{0x1F:032x}", "a" * 16, None, "x", "INTERNAL", "OK", None, 1, 2, "{}", '{"k": "v"}')
    ]


def test_missing_parent_and_message_are_null_and_a_message_of_0_is_text(
    recorder: Recorder,
) -> None:
    with recorder.run("pipeline") as root:
        run_id = run_id_of(root)
        with recorder.step("zero") as span:
            span.set_status(Status(StatusCode.ERROR, "0"))
        with recorder.step("empty") as span:
            span.set_status(Status(StatusCode.ERROR, ""))
        with recorder.step("fine"):
            pass
    recorder.flush()
    rows = query(
        recorder.path,
        "SELECT name, typeof(parent_id), status_message, typeof(status_message) FROM spans",
    )
    assert sorted(rows) == [
        ("empty", "text", "", "text"),
        ("fine", "text", None, "null"),
        ("pipeline", "null", None, "null"),
        ("zero", "text", "0", "text"),
    ]
    with Store.open(recorder.path) as store:
        spans = {s.name: s for s in store.spans(run_id)}
    assert spans["zero"].status_message == "0" and spans["pipeline"].parent_id is None


class EndTimes(SpanProcessor):
    """When each span ended, by its span id as stored."""

    def __init__(self) -> None:
        self.ended: dict[str, int] = {}

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None and span.end_time is not None
        self.ended[f"{span.context.span_id:016x}"] = span.end_time


@pytest.mark.slow
def test_spans_reach_the_disk_in_half_a_second_while_the_application_is_busy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "traces.db"
    processor = SQLiteSpanProcessor(path)
    ends = EndTimes()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(ends)
    tracer = provider.get_tracer("tests")
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        conn: sqlite3.Connection | None = None
        last = 0
        try:
            while not done.wait(0.02):
                now = time.time_ns()
                try:
                    conn = conn or sqlite3.connect(schema.ro_uri(path), uri=True)
                    # One row per query: row by row, each fetch would wait for the GIL too.
                    top, ids = conn.execute(
                        "SELECT max(rowid), group_concat(span_id) FROM spans WHERE rowid > ?",
                        (last,),
                    ).fetchone()
                except sqlite3.Error:  # not created yet
                    continue
                if top is not None:
                    seen.update(dict.fromkeys(ids.split(","), now))
                    last = top
        finally:
            if conn is not None:
                conn.close()

    def run() -> None:
        with tracer.start_as_current_span("pipeline", context=Context()) as root:
            root.set_attributes(
                {RUN_ID: run_id_of(root), STEP_NAME: "pipeline", STEP_TYPE: STEP_TYPE_WORKFLOW}
            )
            for i in range(9):
                with tracer.start_as_current_span(f"s{i}") as span:
                    span.set_attributes(
                        {RUN_ID: run_id_of(root), STEP_NAME: f"s{i}", STEP_TYPE: STEP_TYPE_STEP}
                    )

    # The store is created first: creating it takes over a hundred statements, each of which
    # waits for the GIL under load, once per store.
    run()
    assert processor.force_flush(10_000)
    watcher = threading.Thread(target=watch)
    watcher.start()
    settled = time.time_ns()
    stop = time.monotonic() + 3.0
    try:
        while time.monotonic() < stop:  # pure Python, never giving the GIL up on its own
            run()
        assert processor.force_flush(30_000)
        time.sleep(0.1)
    finally:
        done.set()
        watcher.join()
        provider.shutdown()
    lags = sorted(
        (seen[span_id] - end) / 1e9 for span_id, end in ends.ended.items() if end > settled
    )
    assert processor.stats()["spans_dropped"] == 0
    assert len(lags) > 1000 and all(span_id in seen for span_id in ends.ended)
    # Polling adds up to 0.02 s; a loaded machine may delay a round now and then.
    assert lags[int(len(lags) * 0.99)] < 0.5, lags[-20:]


def test_finished_runs_bind_no_none_and_read_back_null(tmp_path: Path) -> None:
    # sqlite3 binds None through its adapter lookup (a failed attribute lookup, an exception made
    # and cleared), several times what an int costs: a one-step run's row had four of them.
    ended = [
        (("a" * 32, "b" * 16, 0, "step", "INTERNAL", "OK", 0, 1, 3_000_001, "{}", None), *names)
        for names in (("step", None, None, None), ("flow", "m:flow", "/x/flow.py", "c" * 32))
    ]
    for row in ended_run_rows(ended, None) + ended_run_rows(ended, "fallback"):
        assert None not in row, row
    provider = TracerProvider(resource=Resource.get_empty())  # no service.name
    spanflow.configure(tracer_provider=provider, db=tmp_path / "traces.db")

    @spanflow.step
    def alone() -> int:
        return 1

    @spanflow.workflow
    def flow() -> int:
        return alone()

    try:
        alone()
        flow()
        spanflow.flush()
    finally:
        runtime.reset_for_tests()
    rows = query(
        tmp_path / "traces.db",
        "SELECT workflow, typeof(entrypoint), typeof(workflow_file), typeof(error), "
        "typeof(replay_of), typeof(service), status, span_count FROM runs ORDER BY workflow",
    )
    assert rows == [
        ("alone", "null", "null", "null", "null", "null", "ok", 1),
        ("flow", "text", "null", "null", "null", "null", "ok", 2),
    ]
    assert query(tmp_path / "traces.db", "SELECT entrypoint FROM runs WHERE workflow = 'flow'") == [
        (f"{__name__}:test_finished_runs_bind_no_none_and_read_back_null.<locals>.flow",)
    ]


def test_a_batch_of_one_step_runs_takes_a_statement_per_thousand_runs(tmp_path: Path) -> None:
    # A step called from a web handler is a run of one span: its batch holds as many run rows as
    # spans, and each statement more is a GIL hand-over more for the application.
    conn = schema.open_for_writing(tmp_path / "traces.db")
    rows, extras = fake_rows(n_runs=1000, per_run=1)
    runs = [extra[4] for extra in extras if extra[4] is not None]
    try:
        with counted(conn) as statements:
            conn.execute("BEGIN IMMEDIATE")
            assert BatchWriter().write(conn, rows, (), runs) == 1000
            conn.execute("COMMIT")
        upserts = [sql for sql in statements if sql.startswith("INSERT INTO runs")]
        assert len(upserts) == 1, len(upserts)
        assert len(statements) <= 5, statements
    finally:
        conn.close()
    path = tmp_path / "traces.db"
    assert query(path, "SELECT count(*), sum(span_count), count(entrypoint) FROM runs") == [
        (1000, 1000, 0)
    ]
