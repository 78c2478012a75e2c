"""Sustained contention: writers that meet a store locked longer than their busy timeout keep
every finished run (retried with backoff), and run rows end ok, never crashed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from spanflow.exporters.store import Store

from tests.exporters.conftest import Recorder, child_env, query, run_id_of

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

WRITER = """
import json, os, signal, sys, time
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from spanflow.attributes import RUN_ID, STEP_NAME, STEP_TYPE
from spanflow.exporters.sqlite_store import SQLiteSpanProcessor

path, stop = sys.argv[1], sys.argv[2]
proc = SQLiteSpanProcessor(path, busy_timeout=0.3)
provider = TracerProvider()
provider.add_span_processor(proc)
tracer = provider.get_tracer("writer")
ids = []
while not os.path.exists(stop):  # until the locker is done, however slowly this machine runs
    with tracer.start_as_current_span("job", context=Context()) as root:
        rid = f"{root.get_span_context().trace_id:032x}"
        root.set_attributes({RUN_ID: rid, STEP_NAME: "job", STEP_TYPE: "workflow"})
        for j in range(2):
            with tracer.start_as_current_span(f"s{j}") as s:
                s.set_attributes({RUN_ID: rid, STEP_NAME: f"s{j}", STEP_TYPE: "step"})
    ids.append(rid)
    if len(ids) == 1:
        assert proc.force_flush(30_000)
        print("ready", flush=True)
    time.sleep(0.005)
flushed = proc.force_flush(30_000)
print(json.dumps({"ids": ids, "flushed": flushed, "stats": proc.stats()}), flush=True)
# Killed, not shut down: what finished must already be on disk.
os.kill(os.getpid(), signal.SIGKILL)
"""

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
for _ in range(4):
    conn.execute("BEGIN EXCLUSIVE")  # longer than the writers' busy timeout
    time.sleep(1.2)
    conn.execute("COMMIT")
    time.sleep(0.6)
print("done", flush=True)
"""


def test_writers_lose_nothing_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    stop = tmp_path / "stop"
    Store.open(path, readonly=False).close()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), str(path), str(stop)],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    for writer in writers:  # all writing before the lock is taken
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n", writer.communicate()[1]
    locker = subprocess.run(
        [sys.executable, "-c", LOCKER, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert locker.stdout.strip() == "done"
    stop.touch()
    reports = []
    for writer in writers:
        out, err = writer.communicate(timeout=90)
        assert writer.returncode == -signal.SIGKILL, err
        reports.append(json.loads(out))
    ids = {i for r in reports for i in r["ids"]}
    stats = [r["stats"] for r in reports]
    assert all(r["flushed"] for r in reports)
    assert sum(st["write_retries"] for st in stats) >= 10, stats
    assert {(st["spans_failed"], st["spans_dropped"]) for st in stats} == {(0, 0)}
    assert sum(st["spans_written"] for st in stats) == 3 * len(ids)
    with Store.open(path) as store:
        assert store.count_runs() == len(ids)
        assert store.count_runs(status="ok") == len(ids)
        assert store.count_runs(status="crashed") == 0
    assert query(path, "SELECT DISTINCT span_count FROM runs") == [(3,)]
    assert query(path, "SELECT count(*) FROM spans") == [(3 * len(ids),)]


def test_a_full_queue_drops_spans_but_keeps_the_run_end(
    recorder_factory: Callable[..., Recorder],
) -> None:
    rec = recorder_factory(max_queue=1)
    with rec.run("pipeline") as root:
        run_id = run_id_of(root)
        for name in ("kept", "dropped"):
            with rec.step(name):
                pass
    rec.flush()
    stats = rec.processor.stats()
    assert stats["spans_dropped"] == 2 and stats["spans_written"] == 1
    with Store.open(rec.path) as store:
        run = store.get_run(run_id)
        assert (run.status, run.workflow) == ("ok", "pipeline")
        assert [s.name for s in store.spans(run_id)] == ["kept"]
