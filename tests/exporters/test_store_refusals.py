"""Foreign files left untouched (blank ones with pragmas, live or crashed WAL databases), and
refusals that say what is wrong: permissions, damage, not a store; through the API and the CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from spanflow.errors import StoreError
from spanflow.exporters import schema
from spanflow.exporters.store import Store

from tests.exporters.conftest import Recorder, child_env, run_id_of

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")

SPANFLOW = [sys.executable, "-m", "spanflow.viewer.cli"]


def stamps(directory: Path) -> dict[str, tuple[str, int, int]]:
    """File name -> (sha256, size, mtime_ns) of every file in a directory."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def cli(*args: str, prefix: bool = False) -> subprocess.CompletedProcess[str]:
    command = [*(without_override() if prefix else []), *SPANFLOW, *args]
    return subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=60)


def assert_refused(path: Path, rec: Recorder, caplog: pytest.LogCaptureFixture, words: str) -> None:
    """The recorder, both ways of opening and the CLI refuse ``path`` with ``words``."""
    caplog.set_level(logging.ERROR, logger="spanflow")
    with rec.run("pipeline"), rec.step("s"):
        pass
    rec.flush()
    assert rec.processor.stats()["disabled"] == 1
    assert any(words in r.getMessage() for r in caplog.records), caplog.records
    for readonly in (True, False):
        with pytest.raises(StoreError, match=words):
            Store.open(path, readonly=readonly)
    out = cli("runs", "--db", str(path))
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.splitlines()) == 1 and words in out.stderr, out.stderr


@pytest.mark.parametrize("pragma", ["application_id = 1094861636", "user_version = 7"])
def test_a_blank_sqlite_file_with_foreign_pragmas_is_not_made_a_store(
    pragma: str,
    tmp_path: Path,
    recorder_factory: Callable[..., Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA {pragma}")
        conn.commit()
    assert path.stat().st_size > 0
    before = stamps(tmp_path)
    assert_refused(path, recorder_factory(path), caplog, "not a spanflow store")
    assert stamps(tmp_path) == before


@pytest.fixture
def crashed_wal_db(tmp_path: Path) -> Path:
    """A foreign WAL database whose writer died: its rows only in the -wal, -shm beside it."""
    path = tmp_path / "app.db"
    code = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=WAL')\n"
        "c.execute('CREATE TABLE users (name TEXT)')\n"
        "c.execute(\"INSERT INTO users VALUES ('ada')\"); c.commit()\n"
        "os._exit(0)  # no close: the log is not checkpointed\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "app.db-shm", "app.db-wal"]
    return path


def test_a_foreign_wal_database_is_not_checkpointed(
    crashed_wal_db: Path,
    recorder_factory: Callable[..., Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = crashed_wal_db.parent
    before = stamps(directory)
    assert_refused(crashed_wal_db, recorder_factory(crashed_wal_db), caplog, "not a spanflow store")
    assert stamps(directory) == before
    # Still the owner's database, with its rows, once its owner opens it.
    with contextlib.closing(sqlite3.connect(crashed_wal_db)) as conn:
        assert conn.execute("SELECT name FROM users").fetchall() == [("ada",)]


def test_a_store_left_with_a_wal_by_a_killed_writer_is_still_ours(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    code = (
        "import os, sys\n"
        "from spanflow.exporters.store import Store\n"
        "from spanflow.exporters import schema\n"
        "conn = schema.open_for_writing(sys.argv[1])\n"
        f"conn.execute(\"INSERT INTO runs (id, started_ns) VALUES ('{'ab' * 16}', 1)\")\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=child_env(), timeout=60)
    assert schema.wal_path(path).exists()
    with Store.open(path) as store:
        assert [r.id for r in store.list_runs()] == ["ab" * 16]
    with Store.open(path, readonly=False) as store:
        assert store.count_runs() == 1


def damage(path: Path, start: int, end: int) -> None:
    data = bytearray(path.read_bytes())
    data[start:end] = b"\xff" * (end - start)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("start", "end", "detail"), [(100, 4096, "malformed"), (4096, 8192, "Page 2")]
)
def test_a_damaged_store_says_it_is_damaged(
    start: int,
    end: int,
    detail: str,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with recorder.run("pipeline"):
        pass
    recorder.close()
    damage(recorder.path, start, end)
    fresh = Recorder(recorder.path)
    try:
        assert_refused(recorder.path, fresh, caplog, "is a damaged spanflow store")
    finally:
        fresh.close()
    with pytest.raises(StoreError, match=f"integrity check: [^)]*{detail}"):
        Store.open(recorder.path)


def test_new_stores_carry_the_application_id(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    Store.open(path, readonly=False).close()
    assert schema.header_application_id(path) == schema.APPLICATION_ID


def without_override() -> list[str]:
    """A command prefix that makes root subject to file permissions, as any other user is.

    Root bypasses permission checks through CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: the child
    runs without them (real permissions, no mock). Other users need no prefix.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: cannot drop the override")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def test_a_read_only_folder_is_reported_as_a_permission_problem(tmp_path: Path) -> None:
    source = tmp_path / "traces.db"
    rec = Recorder(source)
    with rec.run("pipeline") as root:
        run_id = run_id_of(root)
    rec.close()
    export = cli("export", run_id, "--db", str(source), "--format", "otlp-json")
    assert export.returncode == 0, export.stderr
    trace_file = tmp_path / "run.json"
    trace_file.write_text(export.stdout)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        out = cli("import", str(trace_file), "--db", str(locked / "traces.db"), prefix=True)
    finally:
        locked.chmod(0o755)
    assert out.returncode == 2, out
    assert out.stderr.splitlines() == [
        f"spanflow: error: cannot write to {locked}: permission denied (a store needs write access to "
        "its folder for the database and its -wal/-shm files)"
    ]
    assert list(locked.iterdir()) == []


def test_an_unreadable_store_is_reported_as_a_permission_problem(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    Store.open(path, readonly=False).close()
    path.chmod(0o000)
    try:
        out = cli("runs", "--db", str(path), "--json", prefix=True)
    finally:
        path.chmod(0o600)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"spanflow: error: cannot read {path}: permission denied (needs read access)"
    ]
    assert json.loads(cli("runs", "--db", str(path), "--json").stdout) == []
