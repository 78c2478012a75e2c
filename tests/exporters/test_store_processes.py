"""Several processes, a killed process, a full disk: real subprocesses writing one store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from spanflow import attributes as attr
from spanflow.exporters import schema
from spanflow.exporters.store import Store

from tests.exporters.conftest import Recorder, child_env, query

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rlimits")

PRELUDE = """
import json, os, signal, sys, time
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from spanflow.attributes import RUN_ID, STEP_NAME, STEP_TYPE
from spanflow.exporters.sqlite_store import SQLiteSpanProcessor

path = sys.argv[1]
proc = SQLiteSpanProcessor(path)
provider = TracerProvider()
provider.add_span_processor(proc)
tracer = provider.get_tracer("child")

def run(name, steps, payload=""):
    with tracer.start_as_current_span(name, context=Context()) as root:
        rid = f"{root.get_span_context().trace_id:032x}"
        root.set_attributes({RUN_ID: rid, STEP_NAME: name, STEP_TYPE: "workflow"})
        for j in range(steps):
            with tracer.start_as_current_span(f"s{j}") as s:
                s.set_attributes({RUN_ID: rid, STEP_NAME: f"s{j}", STEP_TYPE: "step",
                                  "output.value": payload})
    return rid
"""


def python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(code), *args],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_four_processes_writing_one_new_store_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "traces.db"
    code = """
        ids = [run("mp", 2) for _ in range(100)]
        provider.shutdown()
        print(json.dumps({"ids": ids, "stats": proc.stats()}))
    """
    # Started together on a path that does not exist yet: they also race to create the schema.
    children = [python(code, str(path)) for _ in range(4)]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        reports.append(json.loads(out))
    ids = {i for r in reports for i in r["ids"]}
    assert len(ids) == 400
    assert all(r["stats"]["spans_written"] == 300 for r in reports)
    assert all(r["stats"]["write_errors"] == 0 for r in reports)
    with Store.open(path) as store:
        assert store.count_runs() == 400
        assert store.count_runs(status="ok") == 400
        assert {r.id for r in store.list_runs(limit=1000)} == ids
        assert {r.span_count for r in store.list_runs(limit=1000)} == {3}
    assert query(path, "SELECT count(*) FROM spans") == [(1200,)]
    assert query(path, "SELECT max(version), count(*) FROM schema_version") == [
        (schema.SCHEMA_VERSION, schema.SCHEMA_VERSION + 1)
    ]


def test_sigkill_keeps_ended_spans_and_the_run_reads_crashed(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    code = """
        root = tracer.start_span("pipeline", context=Context())
        rid = f"{root.get_span_context().trace_id:032x}"
        root.set_attributes({RUN_ID: rid, STEP_NAME: "pipeline", STEP_TYPE: "workflow"})
        inside = trace.set_span_in_context(root)
        for j in range(3):
            with tracer.start_as_current_span(f"s{j}", context=inside) as s:
                s.set_attributes({RUN_ID: rid, STEP_NAME: f"s{j}", STEP_TYPE: "step"})
        unfinished = tracer.start_span("never_ends", context=inside)
        print(rid, flush=True)
        # Killed once the ended spans are committed (promised within 0.5 s; test_store_writer
        # times that promise): waiting for it here keeps a loaded machine from failing this test.
        import sqlite3
        from contextlib import closing
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                    if db.execute("SELECT count(*) FROM spans").fetchone()[0] >= 3:
                        break
            except sqlite3.OperationalError:
                pass  # not created yet
        os.kill(os.getpid(), signal.SIGKILL)
    """
    child = python(code, str(path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    run_id = out.strip()
    with Store.open(path) as store:
        run = store.get_run(run_id)
        assert run.status == "crashed"
        assert run.pid == child.pid
        root, *ended = store.spans(run_id)  # the root never ended: from its start record
        assert root.attributes[attr.RUN_UNFINISHED] is True and root.parent_id is None
        assert [s.name for s in ended] == ["s0", "s1", "s2"]
        assert store.count_runs(status="crashed") == 1
        assert store.count_runs(status="running") == 0
        assert [r.id for r in store.list_runs(status="crashed")] == [run_id]
    # Stored as running: crashed is the reader's conclusion, nothing was written back.
    assert query(path, "SELECT status FROM runs") == [("running",)]


def test_a_full_disk_is_logged_and_counted_never_raised(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    code = """
        import resource
        first = run("small", 1)
        proc.force_flush()
        size = os.path.getsize(path) + os.path.getsize(path + "-wal")
        # Writes past this size now fail as they would on a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20_000, size + 20_000))
        for _ in range(30):
            run("big", 3, payload="x" * 50_000)
        proc.force_flush()
        stats = proc.stats()
        provider.shutdown()
        print(json.dumps({"first": first, "stats": stats}))
    """
    child = python(code, str(path))
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    report = json.loads(out)
    stats = report["stats"]
    assert stats["write_errors"] >= 1 and stats["spans_failed"] >= 1
    assert stats["spans_written"] + stats["spans_failed"] == 2 + 30 * 4
    # Logged once per kind of problem, not once per batch.
    assert err.count("writing to") <= 2, err
    with Store.open(path) as store:
        assert store.get_run(report["first"]).status == "ok"


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_writes_its_own_runs(recorder: Recorder) -> None:
    with recorder.run("before_fork"):
        pass
    recorder.flush()  # the writer thread and its connection exist now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            with recorder.run("in_child"):
                pass
            if recorder.processor.force_flush(10_000):
                code = 0 if recorder.processor.stats()["spans_written"] == 1 else 3
            recorder.processor.shutdown()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with recorder.run("after_fork"):
        pass
    recorder.flush()
    rows = query(recorder.path, "SELECT workflow, status FROM runs ORDER BY started_ns")
    assert rows == [("before_fork", "ok"), ("in_child", "ok"), ("after_fork", "ok")]
