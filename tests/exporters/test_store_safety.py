"""Files that are not ours, newer stores, odd paths, read-only opening: nothing is harmed."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from spanflow.errors import StoreError
from spanflow.exporters import schema
from spanflow.exporters.store import Store

from tests.exporters.conftest import Recorder, query, run_id_of, snapshot


def make_foreign_sqlite(path: Path, *, wal: bool = False) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada'), ('grace')")
        conn.commit()


def make_lookalike(path: Path) -> None:
    """An SQLite file with a schema_version table of its own but no spanflow marker."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.commit()


FOREIGN: dict[str, Callable[[Path], object]] = {
    "sqlite": make_foreign_sqlite,
    "sqlite-wal": lambda p: make_foreign_sqlite(p, wal=True),
    "lookalike": make_lookalike,
    "text": lambda p: p.write_text("name,score\nada,10\n" * 50),
    "garbage": lambda p: p.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_file_that_is_not_a_store_is_left_byte_identical(
    kind: str,
    tmp_path: Path,
    recorder_factory: Callable[..., Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "traces.db"
    FOREIGN[kind](path)
    before = snapshot(tmp_path)
    rec = recorder_factory(path)
    caplog.set_level(logging.ERROR, logger="spanflow")
    for _ in range(3):
        with rec.run("pipeline"), rec.step("s"):
            pass
    rec.flush()
    stats = rec.processor.stats()
    rec.close()
    assert snapshot(tmp_path) == before
    assert stats["disabled"] == 1 and stats["spans_written"] == 0
    assert stats["spans_failed"] == 6
    refusals = [r.getMessage() for r in caplog.records if "disabled" in r.getMessage()]
    assert len(refusals) == 1 and "not a spanflow store" in refusals[0]
    with pytest.raises(StoreError, match="not a spanflow store"):
        Store.open(path)
    with pytest.raises(StoreError, match="not a spanflow store"):
        Store.open(path, readonly=False)
    assert snapshot(tmp_path) == before


def bump_version(path: Path, version: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 'later')", (version,))
        conn.commit()


def test_a_newer_store_is_refused(
    tmp_path: Path, recorder_factory: Callable[..., Recorder]
) -> None:
    path = tmp_path / "traces.db"
    Store.open(path, readonly=False).close()
    bump_version(path, schema.SCHEMA_VERSION + 1)
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match="newer spanflow"):
        Store.open(path)
    with pytest.raises(StoreError, match="newer spanflow"):
        Store.open(path, readonly=False)
    rec = recorder_factory(path)
    with rec.run("pipeline"):
        pass
    rec.flush()
    assert rec.processor.stats()["disabled"] == 1
    rec.close()
    assert snapshot(tmp_path) == before


def test_a_directory_at_the_path(tmp_path: Path, recorder_factory: Callable[..., Recorder]) -> None:
    path = tmp_path / "traces.db"
    path.mkdir()
    rec = recorder_factory(path)
    with rec.run("pipeline"):
        pass
    rec.flush()
    assert rec.processor.stats()["disabled"] == 1
    assert list(path.iterdir()) == []
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(path)
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(path, readonly=False)


def test_missing_store_is_not_created_by_reading(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "traces.db"
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(path)
    assert not path.parent.exists()


def test_empty_file_is_not_a_store_for_readers(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    path.touch()
    with pytest.raises(StoreError, match="empty database"):
        Store.open(path)
    assert path.read_bytes() == b""


def test_read_only_open_creates_and_changes_nothing(recorder: Recorder) -> None:
    with recorder.run("pipeline") as root, recorder.step("s"):
        run_id = run_id_of(root)
    recorder.close()  # the last writer removes its -wal/-shm
    directory = recorder.path.parent
    before = snapshot(directory)
    assert sorted(before) == ["traces.db"]
    with Store.open(recorder.path) as store:
        assert store.get_run(run_id).status == "ok"
        assert len(store.spans(run_id)) == 2
        assert sorted(p.name for p in directory.iterdir()) == ["traces.db"]
    assert snapshot(directory) == before


def test_read_only_open_beside_a_live_writer(recorder: Recorder) -> None:
    with recorder.run("first") as root:
        first = run_id_of(root)
    recorder.flush()
    directory = recorder.path.parent
    files_before = sorted(p.name for p in directory.iterdir())
    assert "traces.db-wal" in files_before  # the writer's connection is open
    with Store.open(recorder.path) as store:
        assert store.get_run(first).status == "ok"
        with recorder.run("second") as root:
            second = run_id_of(root)
        recorder.flush()
        # The same open store sees what the writer commits afterwards.
        assert {r.id for r in store.list_runs()} == {first, second}
    assert sorted(p.name for p in directory.iterdir()) == files_before


def test_reader_opened_before_any_writer_sees_later_runs(
    tmp_path: Path, recorder_factory: Callable[..., Recorder]
) -> None:
    path = tmp_path / "traces.db"
    Store.open(path, readonly=False).close()
    with Store.open(path) as store:
        assert store.list_runs() == []
        rec = recorder_factory(path)
        with rec.run("pipeline") as root:
            run_id = run_id_of(root)
        rec.flush()
        assert [r.id for r in store.list_runs()] == [run_id]


def test_write_waits_for_a_briefly_locked_database(recorder: Recorder) -> None:
    with recorder.run("first"):
        pass
    recorder.flush()
    locker = sqlite3.connect(recorder.path, isolation_level=None, check_same_thread=False)
    try:
        locker.execute("BEGIN IMMEDIATE")
        with recorder.run("second"):
            pass
        releaser = threading.Timer(1.0, lambda: locker.execute("COMMIT"))
        releaser.start()
        started = time.monotonic()
        recorder.flush()
        assert time.monotonic() - started >= 0.5
        releaser.join()
    finally:
        locker.close()
    stats = recorder.processor.stats()
    assert stats["write_errors"] == 0 and stats["spans_failed"] == 0
    assert query(recorder.path, "SELECT count(*) FROM runs WHERE status = 'ok'") == [(2,)]
