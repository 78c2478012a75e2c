"""Store: listing, filtering, lookup by prefix, spans of a run, import and garbage collection."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode
from spanflow.attributes import REPLAY_OF, RUN_ID, STEP_NAME, STEP_TYPE, STEP_TYPE_WORKFLOW
from spanflow.errors import StoreError, UnknownRunError
from spanflow.exporters.records import (
    EventRecord,
    SpanRecord,
    datetime_to_ns,
    ns_to_datetime,
    process_is_alive,
    process_start,
)
from spanflow.exporters.store import Store

from tests.exporters.conftest import PrefixIds, Recorder, run_id_of

DAY_NS = 86_400 * 10**9


def finished_run(rec: Recorder, name: str, *, start_ns: int, fail: bool = False) -> str:
    """A run (root + one step) that started at ``start_ns`` and took 2 ms."""
    root = rec.tracer.start_span(name, context=Context(), start_time=start_ns)
    run_id = run_id_of(root)
    root.set_attributes({RUN_ID: run_id, STEP_NAME: name, STEP_TYPE: STEP_TYPE_WORKFLOW})
    step = rec.tracer.start_span(
        "step",
        context=trace.set_span_in_context(root),
        start_time=start_ns + 1000,
        attributes={RUN_ID: run_id},
    )
    step.end(end_time=start_ns + 1_000_000)
    if fail:
        root.record_exception(ValueError("bad input"))
        root.set_status(Status(StatusCode.ERROR, "ValueError: bad input"))
    root.end(end_time=start_ns + 2_000_000)
    return run_id


@pytest.fixture
def history(recorder: Recorder) -> Iterator[dict[str, str]]:
    """Six finished runs a day apart (oldest first) and one still running."""
    now = time.time_ns()
    ids = {
        "d5": finished_run(recorder, "ingest", start_ns=now - 5 * DAY_NS),
        "d4": finished_run(recorder, "report", start_ns=now - 4 * DAY_NS, fail=True),
        "d3": finished_run(recorder, "ingest", start_ns=now - 3 * DAY_NS),
        "d2": finished_run(recorder, "report", start_ns=now - 2 * DAY_NS),
        "d1": finished_run(recorder, "ingest", start_ns=now - 1 * DAY_NS, fail=True),
        "d0": finished_run(recorder, "report", start_ns=now - DAY_NS // 24),
    }
    live = recorder.tracer.start_span("ingest", context=Context())
    live.set_attributes(
        {RUN_ID: run_id_of(live), STEP_NAME: "ingest", STEP_TYPE: STEP_TYPE_WORKFLOW}
    )
    ids["live"] = run_id_of(live)
    recorder.flush()
    yield ids
    live.end()


def test_list_runs_newest_first_with_filters(recorder: Recorder, history: dict[str, str]) -> None:
    with Store.open(recorder.path) as store:
        assert [r.id for r in store.list_runs()] == [
            history[k] for k in ("live", "d0", "d1", "d2", "d3", "d4", "d5")
        ]
        assert [r.id for r in store.list_runs(status="failed")] == [history["d1"], history["d4"]]
        assert [r.id for r in store.list_runs(status="running")] == [history["live"]]
        assert [r.id for r in store.list_runs(workflow="report")] == [
            history["d0"],
            history["d2"],
            history["d4"],
        ]
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=2, hours=12)
        assert [r.id for r in store.list_runs(since=since)] == [
            history[k] for k in ("live", "d0", "d1", "d2")
        ]
        naive_utc = since.replace(tzinfo=None)
        assert store.list_runs(since=naive_utc) == store.list_runs(since=since)
        assert [r.id for r in store.list_runs(limit=2, offset=1)] == [history["d0"], history["d1"]]
        assert store.count_runs() == 7
        assert store.count_runs(status="failed") == 2
        assert store.count_runs(workflow="ingest", status="ok") == 2
        assert store.count_runs(since=since) == 4
        failed = store.get_run(history["d4"])
        assert failed.error == "ValueError: bad input"
        assert failed.duration_ms == pytest.approx(2.0)
        assert failed.started_at.tzinfo is not None
        with pytest.raises(ValueError, match="status must be one of"):
            store.list_runs(status="exploded")


def test_records_serialise_for_the_cli(recorder: Recorder, history: dict[str, str]) -> None:
    with Store.open(recorder.path) as store:
        run = store.get_run(history["d4"])
    data = run.model_dump(mode="json")
    assert {"id", "workflow", "status", "started_at", "duration_ms", "error"} <= set(data)
    assert data["started_at"].endswith("Z") or data["started_at"].endswith("+00:00")


def test_prefix_lookup_and_ambiguity(
    recorder_factory: Callable[..., Recorder], tmp_path: Path
) -> None:
    rec = recorder_factory(tmp_path / "prefix.db", id_generator=PrefixIds("beef"))
    now = time.time_ns()
    a = finished_run(rec, "wf", start_ns=now)
    b = finished_run(rec, "wf", start_ns=now + 1)
    rec.flush()
    assert a[:4] == b[:4] == "beef"
    with Store.open(rec.path) as store:
        with pytest.raises(UnknownRunError, match="ambiguous") as info:
            store.get_run("beef")
        assert a in str(info.value) and b in str(info.value)
        common = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        assert store.get_run(a[: common + 1]).id == a
        assert store.get_run(b.upper()).id == b
        with pytest.raises(UnknownRunError, match="no run"):
            store.get_run("0000")
        with pytest.raises(UnknownRunError, match="at least"):
            store.get_run("bee")
        with pytest.raises(UnknownRunError, match="not a run id"):
            store.get_run("not-hex!")
        with pytest.raises(UnknownRunError):
            store.spans("0000")
        assert isinstance(UnknownRunError("x"), StoreError)


def test_spans_of_a_run_in_start_order(recorder: Recorder) -> None:
    with pytest.raises(RuntimeError), recorder.run("pipeline") as root:
        run_id = run_id_of(root)
        for name in ("a", "b", "c"):
            with recorder.step(name, **{"input.value": '{"n": 1}'}):
                pass
        with recorder.step("d"):
            raise RuntimeError("d broke")
    recorder.flush()
    with Store.open(recorder.path) as store:
        spans = store.spans(run_id[:8])
    assert [s.name for s in spans] == ["pipeline", "a", "b", "c", "d"]
    assert all(isinstance(s, SpanRecord) for s in spans)
    assert [s.start_ns for s in spans] == sorted(s.start_ns for s in spans)
    top, *steps = spans
    assert top.parent_id is None and all(s.parent_id == top.span_id for s in steps)
    assert steps[0].attributes["input.value"] == '{"n": 1}'
    assert steps[0].attributes[RUN_ID] == run_id
    assert (steps[3].status, steps[3].status_message) == ("ERROR", "RuntimeError: d broke")
    [event] = steps[3].events
    assert isinstance(event, EventRecord)
    assert event.name == "exception" and event.attributes["exception.message"] == "d broke"
    assert all(s.duration_ms >= 0 and s.kind == "INTERNAL" for s in spans)
    assert all(len(s.span_id) == 16 for s in spans)
    assert top.model_dump()["duration_ms"] == top.duration_ms


def test_replays_of(recorder: Recorder) -> None:
    with recorder.run("pipeline") as root:
        original = run_id_of(root)
    replays = []
    for _ in range(2):
        with recorder.run("pipeline", **{REPLAY_OF: original}) as root:
            replays.append(run_id_of(root))
    recorder.flush()
    with Store.open(recorder.path) as store:
        assert [r.id for r in store.replays_of(original[:6])] == replays[::-1]
        assert store.replays_of(replays[0]) == []


def test_write_spans_imports_runs_once(recorder: Recorder, tmp_path: Path) -> None:
    with pytest.raises(ValueError), recorder.run("pipeline") as root:
        run_id = run_id_of(root)
        with recorder.step("ok_step"):
            pass
        raise ValueError("nope")
    recorder.flush()
    with Store.open(recorder.path) as source:
        spans = source.spans(run_id)
        original = source.get_run(run_id)
    target_path = tmp_path / "imported" / "traces.db"
    with pytest.raises(StoreError, match="read-only"), Store.open(recorder.path) as readonly:
        readonly.write_spans(spans)
    with Store.open(target_path, readonly=False) as target:
        assert target.write_spans(spans, service="import") == 2
        assert target.write_spans(spans) == 0  # already there: nothing duplicated
        run = target.get_run(run_id)
        assert target.spans(run_id) == spans
    assert (run.status, run.error, run.workflow) == ("failed", "ValueError: nope", "pipeline")
    assert run.span_count == 2 and run.error_count == original.error_count
    assert run.service == "tests"  # from the spans' resource; service= only fills a gap
    assert run.pid is None  # not run by the importing process: never reads crashed


def test_write_spans_without_the_root(tmp_path: Path) -> None:
    run_id = "ab" * 16
    spans = [
        SpanRecord(
            run_id=run_id,
            span_id=f"{i + 1:016x}",
            parent_id="f" * 16,
            name=f"s{i}",
            status="ERROR" if i == 1 else "OK",
            start_ns=10_000 + i,
            end_ns=20_000 + i,
        )
        for i in range(3)
    ]
    with Store.open(tmp_path / "t.db", readonly=False) as store:
        assert store.write_spans(spans, service="batch") == 3
        run = store.get_run(run_id)
    assert (run.status, run.span_count, run.error_count) == ("failed", 3, 1)
    assert run.ended_at == ns_to_datetime(20_002)


def test_gc_by_age_keeps_recent_and_live_runs(recorder: Recorder, history: dict[str, str]) -> None:
    with Store.open(recorder.path, readonly=False) as store:
        result = store.gc(keep_days=2.5)
        remaining = {r.id for r in store.list_runs()}
    assert remaining == {history[k] for k in ("live", "d0", "d1", "d2")}
    assert (result.runs_deleted, result.spans_deleted, result.runs_kept) == (3, 6, 4)
    assert result.bytes_after <= result.bytes_before
    with pytest.raises(StoreError, match="read-only"):
        Store.open(recorder.path).gc(keep_days=1)


def test_gc_to_a_size_deletes_oldest_first(recorder: Recorder) -> None:
    now = time.time_ns()
    ids = []
    for i in range(40):
        root = recorder.tracer.start_span("wf", context=Context(), start_time=now + i * 1000)
        ids.append(run_id_of(root))
        root.set_attributes(
            {RUN_ID: ids[-1], STEP_NAME: "wf", STEP_TYPE: STEP_TYPE_WORKFLOW, "blob": "x" * 20_000}
        )
        root.end(end_time=now + i * 1000 + 500)
    recorder.close()
    with Store.open(recorder.path, readonly=False) as store:
        result = store.gc(max_bytes=400_000)
        kept = [r.id for r in store.list_runs(limit=100)]
    assert result.bytes_before > 800_000
    assert result.bytes_after <= 400_000
    assert 0 < len(kept) < 40
    assert kept == ids[::-1][: len(kept)]  # the newest survive
    assert result.runs_deleted == 40 - len(kept)


def test_crashed_needs_a_dead_or_reused_pid() -> None:
    me = os.getpid()
    assert process_is_alive(me, process_start(me))
    if sys.platform.startswith("linux"):
        assert process_start(me) is not None
        assert not process_is_alive(me, (process_start(me) or 0) + 1)  # pid reused
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_is_alive(child.pid, None)


def test_time_conversions_round_trip() -> None:
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    assert ns_to_datetime(datetime_to_ns(when)) == when
    assert datetime_to_ns(when.replace(tzinfo=None)) == datetime_to_ns(when)


def test_imported_ids_are_normalised_to_lowercase(tmp_path: Path) -> None:
    span = SpanRecord(
        run_id="AB" * 16, span_id="CD" * 8, name="s", start_ns=1, end_ns=2, status="OK"
    )
    assert (span.run_id, span.span_id) == ("ab" * 16, "cd" * 8)
    with Store.open(tmp_path / "t.db", readonly=False) as store:
        store.write_spans([span])
        assert [s.span_id for s in store.spans("AB" * 16)] == ["cd" * 8]
    with pytest.raises(ValueError, match="pattern"):
        SpanRecord(run_id="xyz", span_id="cd" * 8, name="s", start_ns=1, end_ns=2)
