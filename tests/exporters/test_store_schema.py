"""The on-disk format: versions, migrations, concurrent creation, indexes the queries use."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from spanflow.errors import StoreError
from spanflow.exporters import records, schema
from spanflow.exporters.records import RunRecord
from spanflow.exporters.store import Store

from tests.exporters.conftest import Recorder, query, run_id_of


def make_v0(path: Path) -> None:
    """A store as a version-0 spanflow left it: marked, versioned, no tables yet."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        schema.bootstrap(sqlite_utils.Database(conn, execute_plugins=False))
        conn.execute("COMMIT")


def test_fresh_store_is_marked_and_at_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "traces.db"
    Store.open(path, readonly=False).close()
    assert query(path, "SELECT key, value FROM meta WHERE key = 'format'") == [
        ("format", "spanflow")
    ]
    assert query(path, "SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(schema.SCHEMA_VERSION + 1)
    ]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    tables = {r[0] for r in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {schema.RUNS, schema.SPANS, schema.EVENTS, schema.LINKS, schema.RESOURCES} <= tables


def test_an_old_store_is_migrated_forward_by_the_writer(
    tmp_path: Path, recorder_factory: Callable[..., Recorder]
) -> None:
    path = tmp_path / "traces.db"
    make_v0(path)
    with pytest.raises(StoreError, match=r"schema version 0.*upgrade"):
        Store.open(path)
    rec = recorder_factory(path)
    with rec.run("pipeline") as root:
        run_id = run_id_of(root)
    rec.flush()
    assert query(path, "SELECT max(version) FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    with Store.open(path) as store:
        assert store.get_run(run_id).status == "ok"


def add_priority(db: sqlite_utils.Database) -> None:
    db.table(schema.RUNS).add_column("priority", int)


def test_a_registered_migration_runs_once_and_newer_code_is_required_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "traces.db"
    Store.open(path, readonly=False).close()
    upgraded = [*schema.MIGRATIONS, add_priority]
    for _ in range(2):  # the second open finds nothing to do
        schema.open_for_writing(path, migrations=upgraded).close()
    assert query(path, "SELECT max(version), count(*) FROM schema_version") == [
        (schema.SCHEMA_VERSION + 1, schema.SCHEMA_VERSION + 2)
    ]
    columns = {r[1] for r in query(path, "PRAGMA table_info(runs)")}
    assert "priority" in columns
    with pytest.raises(StoreError, match="newer spanflow"):
        schema.open_for_writing(path)


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    Store.open(path, readonly=False).close()

    def broken(db: sqlite_utils.Database) -> None:
        add_priority(db)
        raise RuntimeError("migration bug")

    with pytest.raises(RuntimeError, match="migration bug"):
        schema.open_for_writing(path, migrations=[*schema.MIGRATIONS, broken])
    assert query(path, "SELECT max(version) FROM schema_version") == [(schema.SCHEMA_VERSION,)]
    assert "priority" not in {r[1] for r in query(path, "PRAGMA table_info(runs)")}


def test_concurrent_creation_is_race_free(tmp_path: Path) -> None:
    path = tmp_path / "new" / "traces.db"
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def create() -> None:
        barrier.wait()
        try:
            schema.open_for_writing(path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert query(path, "SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(schema.SCHEMA_VERSION + 1)
    ]
    assert query(path, "SELECT count(*) FROM meta WHERE key = 'format'") == [(1,)]


QUERIES = {
    "run list": ("SELECT * FROM runs ORDER BY started_ns DESC LIMIT 50", ()),
    "by status": (
        "SELECT * FROM runs WHERE status = ? ORDER BY started_ns DESC LIMIT 50",
        ("failed",),
    ),
    "by workflow": (
        "SELECT * FROM runs WHERE workflow = ? ORDER BY started_ns DESC LIMIT 50",
        ("x",),
    ),
    "since": ("SELECT * FROM runs WHERE started_ns >= ? ORDER BY started_ns DESC LIMIT 50", (1,)),
    "one run's spans": ("SELECT * FROM spans WHERE run_pk = ? ORDER BY start_ns", (1,)),
    "replays": ("SELECT * FROM runs WHERE replay_of = ?", ("ab" * 16,)),
    "prefix": ("SELECT * FROM runs WHERE id >= ? AND id < ?", ("abcd", "abcdg")),
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_queries_use_an_index_and_never_sort_or_scan(tmp_path: Path, name: str) -> None:
    path = tmp_path / "traces.db"
    Store.open(path, readonly=False).close()
    sql, params = QUERIES[name]
    plan = " | ".join(r[-1] for r in query(path, "EXPLAIN QUERY PLAN " + sql, params))
    assert "USING" in plan and "INDEX" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_attribute_json_never_raises() -> None:
    assert schema.dumps({"a": 1, "b": (1, 2), "c": "é\ud800"}) == (
        '{"a":1,"b":[1,2],"c":"\\u00e9\\ud800"}'
    )
    odd: dict[Any, Any] = {"obj": object(), 3: "x"}
    assert schema.dumps(odd).startswith('{"obj": "<object object')


def test_sqlite_version_supports_upsert() -> None:
    assert sqlite3.sqlite_version_info >= (3, 24, 0)


def test_run_columns_match_the_run_record_fields() -> None:
    columns = {r[1] for r in _columns_of_a_fresh_store("runs")}
    fields = set(RunRecord.model_fields)
    # "incomplete" is read from the row (no workflow: no root span stored), not stored.
    computed = {"started_at", "ended_at", "incomplete"}
    assert fields == columns - {"pk", "started_ns", "ended_ns"} | computed


@pytest.mark.parametrize("name", ["Event", "Link", "Span", "Run"])
def test_read_records_carry_the_models_fields_in_order(name: str) -> None:
    # The readers' light records and the pydantic models are written out twice (the readers
    # must not import pydantic): they must not drift apart.
    data, model = getattr(records, f"{name}Data"), getattr(records, f"{name}Record")
    assert data._fields == tuple(model.model_fields)
    assert all(hasattr(data, computed) for computed in model.model_computed_fields)


def _columns_of_a_fresh_store(table: str) -> list[Any]:
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        conn.execute("BEGIN")
        db = sqlite_utils.Database(conn, execute_plugins=False)
        schema.bootstrap(db)
        schema.migrate(db)
        conn.execute("COMMIT")
        return conn.execute(f"PRAGMA table_info({table})").fetchall()


def test_public_names_live_in_their_modules() -> None:
    # The package imports nothing itself (a reader must not load the writer): names are
    # imported from the module that defines them.
    import spanflow.exporters as exporters
    from spanflow.exporters.records import RunRecord, SpanRecord
    from spanflow.exporters.sqlite_store import SQLiteSpanProcessor
    from spanflow.exporters.store import Store

    assert not hasattr(exporters, "Store")
    assert all(x is not None for x in (RunRecord, SpanRecord, SQLiteSpanProcessor, Store))
