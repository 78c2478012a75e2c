"""What recording into a store loads: sqlite-utils (and numpy under it) only to create or
migrate a store, never to write into a current one."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from spanflow.exporters import schema

CHILD = """
import json, sys
import spanflow

spanflow.configure(db=sys.argv[1])
loaded_after_configure = "sqlite_utils" in sys.modules

@spanflow.step
def answer(q: str) -> str:
    return q.upper()

answer("refund please")
spanflow.flush()
print(json.dumps({
    "after_configure": loaded_after_configure,
    "sqlite_utils": "sqlite_utils" in sys.modules,
    "numpy": "numpy" in sys.modules,
}))
"""


def _record_one_run(db: Path) -> dict[str, bool]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: dict[str, bool] = json.loads(proc.stdout.strip().splitlines()[-1])
    return loaded


def _runs(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM runs").fetchone()
    conn.close()
    return int(n)


def test_recording_into_an_existing_store_loads_neither_sqlite_utils_nor_numpy(
    tmp_path: Path,
) -> None:
    db = tmp_path / "traces.db"
    created = _record_one_run(db)
    # Creating the store needs sqlite-utils; it is loaded when the store is configured, before
    # the first span, so its import never delays a span's way to the disk.
    assert created["after_configure"] is True
    assert _runs(db) == 1
    again = _record_one_run(db)
    assert again == {"after_configure": False, "sqlite_utils": False, "numpy": False}
    assert _runs(db) == 2


def test_an_older_store_is_still_migrated(tmp_path: Path) -> None:
    db = tmp_path / "traces.db"
    _record_one_run(db)
    with sqlite3.connect(db) as conn:  # as a version-1 store was: no run_starts table
        conn.execute(f"DROP TABLE {schema.RUN_STARTS}")
        conn.execute(f"DELETE FROM {schema.VERSION_TABLE} WHERE version = 2")
    conn.close()
    migrated = _record_one_run(db)
    assert migrated["after_configure"] is True
    assert _runs(db) == 2
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute(f"SELECT max(version) FROM {schema.VERSION_TABLE}").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert version == 2 and "run_starts" in tables
