"""SQLiteSpanProcessor: what gets stored, when, and how runs are summarised."""

from __future__ import annotations

import gc
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags
from spanflow.attributes import (
    ERROR_TYPE,
    REPLAY_OF,
    RUN_ID,
    RUN_UNFINISHED,
    STEP_NAME,
    STEP_TYPE,
    STEP_TYPE_STEP,
    STEP_TYPE_WORKFLOW,
    WORKFLOW_ENTRYPOINT,
)
from spanflow.errors import ConfigurationError
from spanflow.exporters import sqlite_store
from spanflow.exporters.sqlite_store import SQLiteSpanProcessor
from spanflow.exporters.store import Store
from spanflow.values.redact import Redactor

from tests.exporters.conftest import Recorder, query, run_id_of


def test_run_is_listed_while_running(recorder: Recorder) -> None:
    with recorder.run("pipeline", **{WORKFLOW_ENTRYPOINT: "app:pipeline"}) as root:
        run_id = run_id_of(root)
        with recorder.step("fetch"):
            pass
        recorder.flush()
        with Store.open(recorder.path) as store:
            run = store.get_run(run_id)
            assert run.status == "running"
            assert run.workflow == "pipeline"
            assert run.entrypoint == "app:pipeline"
            assert run.ended_at is None and run.duration_ms is None
            first, *ended = store.spans(run_id)  # the running root, from its start record
            assert first.attributes[RUN_UNFINISHED] is True
            assert [s.name for s in ended] == ["fetch"]
    recorder.flush()
    with Store.open(recorder.path) as store:
        run = store.get_run(run_id)
    assert run.status == "ok"
    assert run.span_count == 2 and run.error_count == 0
    assert run.duration_ms is not None and run.duration_ms > 0
    assert run.ended_at is not None and run.ended_at >= run.started_at


def test_run_id_known_at_start_is_listed_too(
    recorder_factory: Callable[..., Recorder], tmp_path: Path
) -> None:
    trace_id = 0x0123456789ABCDEF0123456789ABCDEF
    rec = recorder_factory(tmp_path / "start.db", id_generator=FixedTraceId(trace_id))
    run_id = f"{trace_id:032x}"
    span = rec.tracer.start_span(
        "wf",
        context=Context(),
        attributes={RUN_ID: run_id, STEP_TYPE: STEP_TYPE_WORKFLOW, STEP_NAME: "wf"},
    )
    rec.flush()
    assert query(rec.path, "SELECT id, status, workflow FROM runs") == [(run_id, "running", "wf")]
    span.end()
    rec.flush()
    assert query(rec.path, "SELECT status, span_count FROM runs") == [("ok", 1)]


class FixedTraceId(RandomIdGenerator):
    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id

    def generate_trace_id(self) -> int:
        return self.trace_id


def test_failed_run_reads_exception_type_and_message(recorder: Recorder) -> None:
    class PaymentDeclined(Exception):
        pass

    with pytest.raises(PaymentDeclined), recorder.run("checkout") as root:
        run_id = run_id_of(root)
        with recorder.step("charge"):
            raise PaymentDeclined("card 4242 declined")
    with pytest.raises(KeyError), recorder.run("lookup") as root:
        other = run_id_of(root)
        raise KeyError("user")
    recorder.flush()
    with Store.open(recorder.path) as store:
        run = store.get_run(run_id)
        assert run.status == "failed"
        # Qualified like a traceback's last line: the test module, not "__main__"/"builtins".
        assert run.error is not None
        assert run.error.endswith("PaymentDeclined: card 4242 declined")
        assert run.error_count == 2
        assert store.get_run(other).error == "KeyError: 'user'"


def test_error_without_exception_event_uses_error_type_and_description(recorder: Recorder) -> None:
    with recorder.run("wf") as root:
        root.set_attribute(ERROR_TYPE, "RateLimited")
        root.set_status(Status(StatusCode.ERROR, "too many requests"))
    recorder.flush()
    assert query(recorder.path, "SELECT status, error FROM runs") == [
        ("failed", "RateLimited: too many requests")
    ]


def test_spans_of_other_traces_are_not_stored(recorder: Recorder) -> None:
    with (
        recorder.tracer.start_as_current_span("GET /health"),
        recorder.tracer.start_as_current_span("db.query"),
    ):
        pass
    with recorder.run("pipeline") as root:
        run_id = run_id_of(root)
        # Other instrumentation inside a run: no spanflow attributes, same trace.
        with (
            recorder.tracer.start_as_current_span("POST /v1/chat"),
            recorder.tracer.start_as_current_span("tcp.connect"),
        ):
            pass
    with recorder.tracer.start_as_current_span("GET /metrics"):
        pass
    recorder.flush()
    names = query(recorder.path, "SELECT name FROM spans ORDER BY start_ns")
    assert names == [("pipeline",), ("POST /v1/chat",), ("tcp.connect",)]
    assert query(recorder.path, "SELECT id, span_count FROM runs") == [(run_id, 3)]


def test_child_ending_after_the_root_is_kept(recorder: Recorder) -> None:
    with recorder.run("pipeline") as root:
        run_id = run_id_of(root)
        late = recorder.tracer.start_span("background.upload")
    late.end()
    recorder.flush()
    assert query(recorder.path, "SELECT name FROM spans WHERE name = 'background.upload'")
    assert query(recorder.path, "SELECT span_count FROM runs WHERE id = ?", (run_id,)) == [(2,)]


def remote_span(
    trace_id: int,
    span_id: int,
    parent: int | None,
    name: str,
    attrs: dict[str, str] | None = None,
    *,
    resource: Resource | None = None,
) -> ReadableSpan:
    """A span as re-created from a remote worker: never started here, only ended."""
    now = time.time_ns()
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, False, TraceFlags(1)),
        parent=SpanContext(trace_id, parent, True, TraceFlags(1)) if parent else None,
        resource=resource or Resource.create({"service.name": "worker"}),
        attributes={RUN_ID: f"{trace_id:032x}", **(attrs or {})},
        status=Status(StatusCode.OK),
        start_time=now - 1_000_000,
        end_time=now,
    )


def test_remote_spans_arriving_only_at_end_are_stored(recorder: Recorder) -> None:
    with recorder.run("pipeline") as root:
        run_id = run_id_of(root)
        ctx = root.get_span_context()
        recorder.processor.on_end(
            remote_span(
                ctx.trace_id,
                0xABC,
                ctx.span_id,
                "embed",
                {STEP_NAME: "embed", STEP_TYPE: STEP_TYPE_STEP},
            )
        )
    # A whole run that happened elsewhere: root and child reach this process only ended.
    recorder.processor.on_end(remote_span(0xFEED, 0x1, None, "remote_wf", {STEP_NAME: "rwf"}))
    recorder.processor.on_end(remote_span(0xFEED, 0x2, 0x1, "remote_step"))
    recorder.flush()
    with Store.open(recorder.path) as store:
        assert {s.name for s in store.spans(run_id)} == {"pipeline", "embed"}
        embed = next(s for s in store.spans(run_id) if s.name == "embed")
        assert embed.resource["service.name"] == "worker"
        remote = store.get_run(f"{0xFEED:032x}")
        assert (remote.status, remote.workflow, remote.span_count) == ("ok", "rwf", 2)


def test_a_span_under_a_remote_parent_is_not_held_after_it_ends(recorder: Recorder) -> None:
    # A step whose parent came from another process learns its run id just after it starts
    # (as spanflow writes it): the store holds it as a possible run start until it ends.
    remote = SpanContext(0xBEEF, 0x1, True, TraceFlags(1))
    parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote), Context())
    for i in range(5):
        span = recorder.tracer.start_span(f"step{i}", context=parent_ctx)
        span.set_attributes({RUN_ID: f"{0xBEEF:032x}", STEP_NAME: f"step{i}"})
        span.end()
    assert recorder.processor._pending == {}
    recorder.flush()
    assert len(query(recorder.path, "SELECT 1 FROM spans")) == 5


def test_events_links_and_resource_are_stored(recorder: Recorder) -> None:
    target = SpanContext(0x1234, 0x5678, False, TraceFlags(1))
    with recorder.run("pipeline") as root:
        run_id = run_id_of(root)
        root.add_event("log", {"log.message": "hello"})
        with recorder.tracer.start_as_current_span("linked", links=[Link(target, {"why": "x"})]):
            pass
    recorder.flush()
    with Store.open(recorder.path) as store:
        spans = {s.name: s for s in store.spans(run_id)}
        run = store.get_run(run_id)
    assert [(e.name, e.attributes) for e in spans["pipeline"].events] == [
        ("log", {"log.message": "hello"})
    ]
    [link] = spans["linked"].links
    assert (link.trace_id, link.span_id, link.attributes) == (
        f"{0x1234:032x}",
        f"{0x5678:016x}",
        {"why": "x"},
    )
    assert spans["pipeline"].resource["service.name"] == "tests"
    assert run.service == "tests"
    assert spans["linked"].parent_id == spans["pipeline"].span_id


def test_replay_of_and_process_identity(recorder: Recorder) -> None:
    original = "ab" * 16
    with recorder.run("pipeline", **{REPLAY_OF: original}) as root:
        run_id = run_id_of(root)
    recorder.flush()
    with Store.open(recorder.path) as store:
        run = store.get_run(run_id)
    assert run.replay_of == original
    assert run.pid is not None and run.host
    assert run.attrs_version is not None


def test_a_finished_run_waits_in_the_queue_as_plain_values(
    recorder_factory: Callable[..., Recorder], tmp_path: Path
) -> None:
    """A run's end is queued as values the garbage collector stops tracking (a span, or a tuple
    subclass, per queued run has every collection of the application walk them all); the writer
    makes the run row from them, as complete as from the span."""
    rec = recorder_factory(tmp_path / "plain.db", flush_interval=0.5)
    with rec.run("pipeline", **{WORKFLOW_ENTRYPOINT: "app:pipeline"}) as root:
        run_id = run_id_of(root)
        with rec.step("fetch"):
            pass
    queued = list(rec.processor._queue)  # the writer's first round is half a second away
    gc.collect()
    assert len(queued) >= 3 and not [item for item in queued if gc.is_tracked(item)]
    rec.flush()
    with Store.open(rec.path) as store:
        run = store.get_run(run_id)
    assert (run.status, run.workflow, run.entrypoint, run.service) == (
        "ok",
        "pipeline",
        "app:pipeline",
        "tests",
    )
    assert run.span_count == 2 and run.error_count == 0 and run.error is None
    assert run.duration_ms is not None and run.duration_ms > 0 and run.ended_at is not None
    assert run.pid == os.getpid() and run.host and run.attrs_version is not None


class AppWritesMeanwhile(Redactor):
    """Sets an attribute on the running root while its start attributes are being read: what
    the application thread does when the writer is switched out in the middle of that read."""

    def __init__(self) -> None:
        super().__init__()
        self.root: trace.Span | None = None

    def scrub_attributes(
        self, attributes: Mapping[str, object], skip: frozenset[str] = frozenset()
    ) -> dict[str, object] | None:
        for i, _ in enumerate(attributes.items()):
            if i == 0 and self.root is not None:
                self.root.set_attribute("spanflow.output.value", '"late"')
        return super().scrub_attributes(attributes, skip)


def test_a_root_given_attributes_while_its_start_is_read_is_still_listed(
    recorder_factory: Callable[..., Recorder],
) -> None:
    redactor = AppWritesMeanwhile()
    rec = recorder_factory(redactor=redactor)
    with rec.run("pipeline") as root:
        redactor.root = root
        rec.flush()
        with Store.open(rec.path) as store:
            assert store.get_run(run_id_of(root)).status == "running"
        redactor.root = None
    assert rec.processor.stats()["spans_failed"] == 0


def test_service_name_fallback(recorder_factory: Callable[..., Recorder], tmp_path: Path) -> None:
    rec = recorder_factory(tmp_path / "svc.db", service_name="billing")
    rec.processor.on_end(remote_span(0xBEEF, 0x1, None, "wf", resource=Resource({})))
    rec.processor.on_end(remote_span(0xCAFE, 0x1, None, "wf"))
    rec.flush()
    assert query(rec.path, "SELECT service FROM runs ORDER BY pk") == [("billing",), ("worker",)]


def assert_on_disk_soon(path: Path, name: str) -> None:
    """The span ``name`` (just ended) is committed within the promised 0.5 s."""
    ended = time.monotonic()
    while True:
        try:
            if query(path, "SELECT 1 FROM spans WHERE name = ?", (name,)):
                return
        except sqlite3.Error:  # the store is not created yet
            pass
        assert time.monotonic() - ended < 0.5, f"span {name!r} not committed within 0.5 s"
        time.sleep(0.01)


def test_a_finished_span_is_on_disk_within_half_a_second(recorder: Recorder) -> None:
    with recorder.run("pipeline") as root:
        run_id = run_id_of(root)
        recorder.flush()  # the store exists and the writer is idle
        with recorder.step("quick"):
            pass
        assert_on_disk_soon(recorder.path, "quick")
    assert run_id


def test_a_store_created_while_the_application_runs_python_is_prompt(recorder: Recorder) -> None:
    # Creating a store takes dozens of statements, each giving the GIL up; with a thread that
    # never rests the writer used to wait up to 5 ms to get it back after every one of them.
    stop = threading.Event()

    def busy() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    spinner = threading.Thread(target=busy)
    spinner.start()
    try:
        interval = sys.getswitchinterval()
        with recorder.run("pipeline"):
            with recorder.step("first"):
                pass
            assert_on_disk_soon(recorder.path, "first")
        assert sys.getswitchinterval() == interval  # put back once the store was open
    finally:
        stop.set()
        spinner.join()


def test_threads_writing_at_once_lose_nothing(recorder: Recorder) -> None:
    run_ids: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(30):
            with recorder.run("threaded") as root:
                with lock:
                    run_ids.append(run_id_of(root))
                for i in range(3):
                    with recorder.step(f"s{i}"):
                        pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorder.flush()
    assert len(set(run_ids)) == 240
    assert query(recorder.path, "SELECT count(*), sum(span_count) FROM runs") == [(240, 960)]
    assert query(recorder.path, "SELECT count(*) FROM spans") == [(960,)]
    assert query(recorder.path, "SELECT DISTINCT status FROM runs") == [("ok",)]
    assert recorder.processor.stats()["spans_written"] == 960


def test_full_queue_drops_and_counts_without_blocking(
    recorder_factory: Callable[..., Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    rec = recorder_factory(max_queue=50, flush_interval=0.5)
    caplog.set_level(logging.WARNING, logger="spanflow")
    spans = [remote_span(0xF00D, i + 2, 1, f"s{i}") for i in range(2000)]
    started = time.perf_counter()
    for span in spans:
        rec.processor.on_end(span)
    elapsed = time.perf_counter() - started
    rec.flush()
    stats = rec.processor.stats()
    assert stats["spans_dropped"] > 0
    assert stats["spans_written"] + stats["spans_dropped"] == 2000
    assert query(rec.path, "SELECT count(*) FROM spans") == [(stats["spans_written"],)]
    assert elapsed < 1.0  # dropping never waits for the writer
    full = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 1  # one warning per burst, not one per span


def test_shutdown_writes_everything_and_is_idempotent(recorder: Recorder) -> None:
    for _ in range(5):
        with recorder.run("pipeline"):
            pass
    recorder.processor.shutdown()
    recorder.processor.shutdown()
    assert query(recorder.path, "SELECT count(*) FROM runs WHERE status = 'ok'") == [(5,)]
    assert not recorder.path.with_name("traces.db-wal").exists()
    # Spans ending after shutdown are ignored, not raised.
    with recorder.run("late"):
        pass
    assert recorder.processor.force_flush()


def test_no_file_until_a_run_starts(recorder: Recorder) -> None:
    with recorder.tracer.start_as_current_span("GET /"):
        pass
    assert recorder.processor.force_flush()
    assert not recorder.path.exists()
    assert recorder.processor.path == recorder.path


def test_options_are_validated(db: Path) -> None:
    with pytest.raises(ConfigurationError, match="flush_interval"):
        SQLiteSpanProcessor(db, flush_interval=2.0)
    with pytest.raises(ConfigurationError, match="max_queue"):
        SQLiteSpanProcessor(db, max_queue=0)


def test_unbindable_values_are_repaired_not_lost(recorder: Recorder) -> None:
    with recorder.run("pipeline") as root:
        run_id = run_id_of(root)
        with recorder.tracer.start_as_current_span("bad\ud800name"):
            pass
    recorder.flush()
    assert query(recorder.path, "SELECT count(*) FROM spans") == [(2,)]
    assert recorder.processor.stats()["spans_failed"] == 0
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert run_id


def test_the_switch_interval_is_put_back_after_creation_and_in_forked_children() -> None:
    before = sys.getswitchinterval()
    with sqlite_store._prompt_gil_turns():
        lowered = sys.getswitchinterval()
        assert lowered < before
        with sqlite_store._prompt_gil_turns():  # two stores created at once
            pass
        assert sys.getswitchinterval() == lowered  # still creating the first
        pid = os.fork()
        if pid == 0:
            os._exit(0 if sys.getswitchinterval() == before else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    assert sys.getswitchinterval() == before
