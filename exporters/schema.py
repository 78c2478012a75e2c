"""The on-disk format of a spanflow store: tables, columns, versions and migrations.

A store is one SQLite file in WAL mode. It is recognised by a ``meta`` row
(``format = spanflow``) and a ``schema_version`` table (stores created since 0.2 also carry
``APPLICATION_ID`` in the file header); anything else at the path is someone else's file and is
never written to, nor opened in a way that could checkpoint or rewrite its ``-wal``/``-shm``.
A new store's folders are created 0700 and its files 0600, whatever the umask. ``MIGRATIONS[i]`` upgrades a store from version ``i`` to
``i + 1``; a fresh store is bootstrapped at version 0 and migrated forward like any other.

Tables (version 1)::

    runs       one row per run (trace); its own table so listing runs never scans spans
    spans      one row per finished span, attributes as one JSON text column
    events     span events (exceptions, logs), keyed by (run_pk, span_id)
    links      span links, keyed by (run_pk, span_id)
    resources  distinct resource attribute sets, referenced by spans.resource_pk

Version 2 adds::

    run_starts  a run's root span as it started (id, name, start, attributes): what replay and
                the viewers need of a run whose process died before the root span ended

Writing spans into these tables is ``_batch.BatchWriter``'s job.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import json.encoder
import os
import pathlib
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from spanflow.errors import StoreError

if TYPE_CHECKING:
    # Only creating and migrating a store needs sqlite-utils; readers never load it.
    import sqlite_utils

SCHEMA_VERSION: Final = 2
FORMAT_NAME: Final = "spanflow"
#: ``PRAGMA application_id`` of stores created since 0.2 ("SPNF"): a damaged store is still ours.
APPLICATION_ID: Final = 0x53504E46
BUSY_TIMEOUT_S: Final = 5.0

# Table names.
META: Final = "meta"
VERSION_TABLE: Final = "schema_version"
RUNS: Final = "runs"
SPANS: Final = "spans"
EVENTS: Final = "events"
LINKS: Final = "links"
RESOURCES: Final = "resources"
RUN_STARTS: Final = "run_starts"

# meta keys.
META_FORMAT: Final = "format"
META_CREATED_AT: Final = "created_at"

# runs columns.
RUN_PK: Final = "pk"
RUN_ID: Final = "id"
RUN_WORKFLOW: Final = "workflow"
RUN_ENTRYPOINT: Final = "entrypoint"
RUN_WORKFLOW_FILE: Final = "workflow_file"
RUN_STATUS: Final = "status"
RUN_ERROR: Final = "error"
RUN_STARTED_NS: Final = "started_ns"
RUN_ENDED_NS: Final = "ended_ns"
RUN_DURATION_MS: Final = "duration_ms"
RUN_REPLAY_OF: Final = "replay_of"
RUN_SERVICE: Final = "service"
RUN_HOST: Final = "host"
RUN_PID: Final = "pid"
RUN_PROCESS_START: Final = "process_start"
RUN_SPAN_COUNT: Final = "span_count"
RUN_ERROR_COUNT: Final = "error_count"
RUN_ATTRS_VERSION: Final = "attrs_version"
#: A run row as the writer makes it (``_span_rows.run_row``), column by column.
RUN_ROW_COLUMNS: Final = (
    RUN_ID,
    RUN_WORKFLOW,
    RUN_ENTRYPOINT,
    RUN_WORKFLOW_FILE,
    RUN_STATUS,
    RUN_ERROR,
    RUN_STARTED_NS,
    RUN_ENDED_NS,
    RUN_DURATION_MS,
    RUN_REPLAY_OF,
    RUN_SERVICE,
    RUN_HOST,
    RUN_PID,
    RUN_PROCESS_START,
    RUN_ATTRS_VERSION,
)

# spans columns (run_pk refers to runs.pk: a small integer keeps the span index compact and
# append-mostly, which is what makes 100k inserts/s possible with random trace ids).
SPAN_RUN_PK: Final = "run_pk"
SPAN_ID: Final = "span_id"
SPAN_PARENT_ID: Final = "parent_id"
SPAN_NAME: Final = "name"
SPAN_KIND: Final = "kind"
SPAN_STATUS: Final = "status"
SPAN_STATUS_MESSAGE: Final = "status_message"
SPAN_START_NS: Final = "start_ns"
SPAN_END_NS: Final = "end_ns"
SPAN_ATTRIBUTES: Final = "attributes"
SPAN_RESOURCE_PK: Final = "resource_pk"

# events / links columns (besides run_pk, span_id and attributes).
EVENT_SEQ: Final = "seq"
EVENT_NAME: Final = "name"
EVENT_TIME_NS: Final = "time_ns"
LINK_SEQ: Final = "seq"
LINK_TRACE_ID: Final = "trace_id"
LINK_SPAN_ID: Final = "linked_span_id"

# Run statuses; "crashed" is never stored, the reader derives it from a dead writer process.
STATUS_RUNNING: Final = "running"
STATUS_OK: Final = "ok"
STATUS_FAILED: Final = "failed"
STATUS_CRASHED: Final = "crashed"
RUN_STATUSES: Final = (STATUS_RUNNING, STATUS_OK, STATUS_FAILED, STATUS_CRASHED)

SPAN_COLUMNS: Final = (
    SPAN_RUN_PK,
    SPAN_ID,
    SPAN_PARENT_ID,
    SPAN_NAME,
    SPAN_KIND,
    SPAN_STATUS,
    SPAN_STATUS_MESSAGE,
    SPAN_START_NS,
    SPAN_END_NS,
    SPAN_ATTRIBUTES,
    SPAN_RESOURCE_PK,
)
EVENT_COLUMNS: Final = (SPAN_RUN_PK, SPAN_ID, EVENT_SEQ, EVENT_NAME, EVENT_TIME_NS, SPAN_ATTRIBUTES)
LINK_COLUMNS: Final = (
    SPAN_RUN_PK,
    SPAN_ID,
    LINK_SEQ,
    LINK_TRACE_ID,
    LINK_SPAN_ID,
    SPAN_ATTRIBUTES,
)

Migration = Callable[["sqlite_utils.Database"], None]


def _create_v1(db: sqlite_utils.Database) -> None:
    db.table(RUNS).create(
        {
            RUN_PK: int,
            RUN_ID: str,
            RUN_WORKFLOW: str,
            RUN_ENTRYPOINT: str,
            RUN_WORKFLOW_FILE: str,
            RUN_STATUS: str,
            RUN_ERROR: str,
            RUN_STARTED_NS: int,
            RUN_ENDED_NS: int,
            RUN_DURATION_MS: float,
            RUN_REPLAY_OF: str,
            RUN_SERVICE: str,
            RUN_HOST: str,
            RUN_PID: int,
            RUN_PROCESS_START: int,
            RUN_SPAN_COUNT: int,
            RUN_ERROR_COUNT: int,
            RUN_ATTRS_VERSION: int,
        },
        pk=RUN_PK,
        not_null=[RUN_ID, RUN_STATUS, RUN_STARTED_NS, RUN_SPAN_COUNT, RUN_ERROR_COUNT],
        defaults={RUN_STATUS: STATUS_RUNNING, RUN_SPAN_COUNT: 0, RUN_ERROR_COUNT: 0},
    )
    runs = db.table(RUNS)
    runs.create_index([RUN_ID], index_name="runs_id", unique=True)
    runs.create_index([RUN_STARTED_NS], index_name="runs_started")
    runs.create_index([RUN_STATUS, RUN_STARTED_NS], index_name="runs_status_started")
    runs.create_index([RUN_WORKFLOW, RUN_STARTED_NS], index_name="runs_workflow_started")
    # Partial: most runs are not replays, and their inserts should not pay for this index.
    db.execute(
        f"CREATE INDEX runs_replay_of ON {RUNS} ({RUN_REPLAY_OF}) WHERE {RUN_REPLAY_OF} IS NOT NULL"
    )
    db.table(RESOURCES).create(
        {"pk": int, SPAN_ATTRIBUTES: str}, pk="pk", not_null=[SPAN_ATTRIBUTES]
    )
    db.table(RESOURCES).create_index([SPAN_ATTRIBUTES], index_name="resources_attrs", unique=True)
    text_cols = {SPAN_ID, SPAN_PARENT_ID, SPAN_NAME, SPAN_KIND, SPAN_STATUS, SPAN_STATUS_MESSAGE}
    db.table(SPANS).create(
        {c: (str if c in text_cols or c == SPAN_ATTRIBUTES else int) for c in SPAN_COLUMNS},
        not_null=[
            c
            for c in SPAN_COLUMNS
            if c not in (SPAN_PARENT_ID, SPAN_STATUS_MESSAGE, SPAN_RESOURCE_PK)
        ],
        foreign_keys=[(SPAN_RUN_PK, RUNS, RUN_PK), (SPAN_RESOURCE_PK, RESOURCES, "pk")],
    )
    db.table(SPANS).create_index([SPAN_RUN_PK, SPAN_START_NS], index_name="spans_run_start")
    for table, columns in ((EVENTS, EVENT_COLUMNS), (LINKS, LINK_COLUMNS)):
        ints = {SPAN_RUN_PK, EVENT_SEQ, EVENT_TIME_NS}
        db.table(table).create(
            {c: (int if c in ints else str) for c in columns},
            not_null=[SPAN_RUN_PK, SPAN_ID],
            foreign_keys=[(SPAN_RUN_PK, RUNS, RUN_PK)],
        )
        db.table(table).create_index([SPAN_RUN_PK], index_name=f"{table}_run")


def _add_run_starts_v2(db: sqlite_utils.Database) -> None:
    # Its own table, one row per run, written once when the root starts: the runs row stays as
    # narrow as listing needs, and spans keep holding finished spans only.
    db.table(RUN_STARTS).create(
        {
            SPAN_RUN_PK: int,
            SPAN_ID: str,
            SPAN_NAME: str,
            SPAN_START_NS: int,
            SPAN_ATTRIBUTES: str,
        },
        pk=SPAN_RUN_PK,
        not_null=[SPAN_ID, SPAN_NAME, SPAN_START_NS, SPAN_ATTRIBUTES],
        foreign_keys=[(SPAN_RUN_PK, RUNS, RUN_PK)],
    )


#: ``MIGRATIONS[i]`` turns a version-``i`` store into a version-``i + 1`` store.
MIGRATIONS: Final[tuple[Migration, ...]] = (_create_v1, _add_run_starts_v2)
assert len(MIGRATIONS) == SCHEMA_VERSION


def bootstrap(db: sqlite_utils.Database) -> None:
    """Mark an empty database as a spanflow store at version 0 (inside the caller's transaction)."""
    db.table(META).create({"key": str, "value": str}, pk="key")
    db.table(VERSION_TABLE).create({"version": int, "applied_at": str}, pk="version")
    now = _dt.datetime.now(_dt.UTC).isoformat()
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(
        f"INSERT INTO {META} (key, value) VALUES (?, ?), (?, ?)",
        [META_FORMAT, FORMAT_NAME, META_CREATED_AT, now],
    )
    db.execute(f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES (0, ?)", [now])


def migrate(db: sqlite_utils.Database, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the pending migrations to a spanflow store, inside the caller's transaction.

    Returns:
        The version the store is at afterwards (``len(migrations)``).
    """
    current = version_of(db.conn)
    if current is None:
        raise StoreError("cannot migrate: the database is not a spanflow store")
    for version in range(current, len(migrations)):
        migrations[version](db)
        db.execute(
            f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES (?, ?)",
            [version + 1, _dt.datetime.now(_dt.UTC).isoformat()],
        )
    return max(current, len(migrations))


def version_of(conn: sqlite3.Connection) -> int | None:
    """The schema version of a spanflow store; -1 for an empty database; None if not ours.

    An empty database that carries someone else's ``application_id`` or a ``user_version`` (or
    any schema object) is not empty: someone made it for their own use.

    Raises:
        sqlite3.DatabaseError: the file is not an SQLite database or is damaged.
    """
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        (user_version,) = conn.execute("PRAGMA user_version").fetchone()
        blank = objects == 0 and app_id in (0, APPLICATION_ID) and user_version == 0
        return -1 if blank else None
    if VERSION_TABLE not in tables or META not in tables:
        return None
    marker = conn.execute(f"SELECT value FROM {META} WHERE key = ?", (META_FORMAT,)).fetchone()
    if marker is None or marker[0] != FORMAT_NAME:
        return None
    row = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def describe_problem(
    path: pathlib.Path, version: int | None, *, empty_ok: bool, known: int = SCHEMA_VERSION
) -> str | None:
    """One readable sentence saying why ``path`` cannot be used, or None if it can."""
    if version is None:
        return f"{path} is not a spanflow store (no spanflow tables); refusing to touch it"
    if version == -1 and not empty_ok:
        return f"{path} is an empty database, not a spanflow store"
    if version > known:
        return (
            f"{path} was written by a newer spanflow (schema version {version}, this one "
            f"knows {known}); upgrade spanflow to use it"
        )
    return None


def ro_uri(path: pathlib.Path, *, immutable: bool = False) -> str:
    """A ``file:`` URI opening ``path`` read-only; ``immutable`` also takes no locks and creates
    no -wal/-shm files (right only while nobody writes)."""
    return path.absolute().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")


def wal_path(path: pathlib.Path) -> pathlib.Path:
    """The write-ahead log next to a database file."""
    return path.with_name(path.name + "-wal")


def _peek_version(path: pathlib.Path) -> int | None:
    """Read the version without locking or creating anything (retries a half-written file).

    ``immutable=1`` reads the main file alone: no locks, no -wal/-shm opened or created, no
    recovery or checkpoint. (``mode=ro`` alone is not enough: it maps the -shm and writes its
    read marks there, and recovers a -wal left by a crashed writer.)
    """
    for attempt in range(4):
        conn = sqlite3.connect(ro_uri(path, immutable=True), uri=True)
        try:
            return version_of(conn)
        except sqlite3.DatabaseError:
            # Another process may be writing the first pages right now; only a file that stays
            # unreadable is foreign.
            if attempt == 3:
                raise
            time.sleep(0.1)
        finally:
            conn.close()
    raise AssertionError("unreachable")


def header_application_id(path: pathlib.Path) -> int | None:
    """The ``application_id`` in an SQLite file's header, or None if it has no SQLite header."""
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except OSError:
        return None
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return None
    return int.from_bytes(header[68:72], "big")


def _first_problem(path: pathlib.Path) -> str | None:
    """The first line ``PRAGMA integrity_check`` reports (read-only, immutable), or None."""
    try:
        with contextlib.closing(sqlite3.connect(ro_uri(path, immutable=True), uri=True)) as c:
            row = c.execute("PRAGMA integrity_check(1)").fetchone()
    except sqlite3.Error as exc:
        return str(exc)
    if row is None or row[0] == "ok":
        return None
    # Skip the "*** in database main ***" heading: the line after it names the damage.
    lines = [line for line in str(row[0]).splitlines() if not line.startswith("***")]
    return lines[0] if lines else str(row[0]).strip()


def _looks_like_ours(path: pathlib.Path) -> bool:
    if header_application_id(path) == APPLICATION_ID:
        return True
    try:
        with contextlib.closing(sqlite3.connect(ro_uri(path, immutable=True), uri=True)) as c:
            names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error:
        return False
    return {META, VERSION_TABLE} <= names


def unreadable_problem(path: pathlib.Path, exc: sqlite3.Error) -> str:
    """One sentence for a file SQLite could not read: a damaged store, or not a store at all."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if header_application_id(path) is not None and _looks_like_ours(path):
        found = _first_problem(path) or detail
        return (
            f"{path} is a damaged spanflow store (integrity check: {found}); "
            "move it aside or restore a backup"
        )
    return f"{path} is not a spanflow store ({detail}); refusing to touch it"


def _missing_access(path: pathlib.Path, *, writing: bool) -> str | None:
    """What permission the current user lacks to use ``path`` as a store, in one sentence."""
    if path.exists():
        if writing and not os.access(path, os.R_OK | os.W_OK):
            return f"cannot write to {path}: permission denied (needs read and write access)"
        if not writing and not os.access(path, os.R_OK):
            return f"cannot read {path}: permission denied (needs read access)"
    if not writing:
        return None
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"cannot write to {folder}: permission denied (a store needs write access to its "
            "folder for the database and its -wal/-shm files)"
        )
    return None


def check_path(path: pathlib.Path, *, known: int = SCHEMA_VERSION, writing: bool = True) -> None:
    """Refuse a path that is a directory, holds a file that is not a spanflow store, or that the
    user may not use; nothing is created, locked or modified by the check.

    Raises:
        StoreError: with one sentence naming the problem.
    """
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a spanflow store")
    problem = _missing_access(path, writing=writing)
    if problem:
        raise StoreError(problem)
    wal = wal_path(path).exists()
    if not path.exists() or (path.stat().st_size == 0 and not wal):
        return
    try:
        version = _peek_version(path) if path.stat().st_size else -1
    except sqlite3.DatabaseError as exc:
        raise StoreError(unreadable_problem(path, exc)) from exc
    if wal and version in (None, -1):
        # A store's tables are in its main file from its creation on (created before WAL is
        # switched on), whatever its -wal holds. Anything else with a -wal is someone's live
        # or crashed database: opening it normally would recover and checkpoint that log.
        raise StoreError(
            f"{path} is not a spanflow store (an SQLite database with a -wal log of its own); "
            "refusing to touch it"
        )
    problem = describe_problem(path, version, empty_ok=True, known=known)
    if problem:
        raise StoreError(problem)


def _make_private(path: pathlib.Path) -> None:
    """Create the store's missing folders 0700 and its file 0600 (existing ones are left be).

    SQLite creates the -wal and -shm with the database file's mode, so they are 0600 too.
    """
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it: theirs to set
        folder.chmod(0o700)  # the umask may have taken bits away
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def open_for_writing(
    path: str | os.PathLike[str],
    *,
    busy_timeout: float = BUSY_TIMEOUT_S,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> sqlite3.Connection:
    """Open (creating if needed) a spanflow store for writing and bring its schema up to date.

    The file is inspected before anything is written; creation and migration run under
    ``BEGIN IMMEDIATE`` so several processes may race to create the same store. The returned
    connection is in autocommit mode (``isolation_level=None``), WAL, ``synchronous=NORMAL``.

    Raises:
        StoreError: the path is a directory, a foreign or newer file, or cannot be opened.
        sqlite3.Error / OSError: environmental problems (locked, read-only, disk full).
    """
    p = pathlib.Path(path)
    target = len(migrations)
    check_path(p, known=target)
    _make_private(p)
    conn = sqlite3.connect(p, isolation_level=None, timeout=busy_timeout)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            version = version_of(conn)
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if _is_foreign_error(exc):
                raise StoreError(unreadable_problem(p, exc)) from exc
            raise
        problem = describe_problem(p, version, empty_ok=True, known=target)
        if problem:
            conn.execute("ROLLBACK")
            raise StoreError(problem)
        try:
            if version != target:
                import sqlite_utils  # ~130 ms of start-up: only to create or migrate a store

                db = sqlite_utils.Database(conn, execute_plugins=False)
                if version == -1:
                    bootstrap(db)
                migrate(db, migrations)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        _use_wal(conn, busy_timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL once; other processes doing the same may hold it meanwhile."""
    deadline = time.monotonic() + timeout
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            # The switch needs the file to itself and SQLite does not wait for that (it would
            # risk a deadlock), so wait here.
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _is_foreign_error(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in str(exc)


# -- row format ----------------------------------------------------------------------------------

_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
# Built once: json.dumps builds a new C encoder on every call, which is half its cost. ASCII
# output, so a lone surrogate in a value cannot make the row unbindable.
_ENCODE: Any = (
    _C_MAKE_ENCODER(
        None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
    if _C_MAKE_ENCODER is not None
    else None
)


def dumps(value: Mapping[str, Any]) -> str:
    """Attributes as the compact JSON text stored in ``attributes`` columns (never raises)."""
    try:
        if _ENCODE is not None:
            return "".join(_ENCODE(value, 0))
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        return json.dumps({str(k): v for k, v in value.items()}, default=repr)


# "%x" formatting is about twice as fast as format() or an f-string, and it runs for every span.
hex_trace_id: Final[Callable[[int], str]] = "%032x".__mod__
hex_span_id: Final[Callable[[int], str]] = "%016x".__mod__

SpanRow = Sequence[Any]
"""A span to insert: the ``SPAN_COLUMNS`` values, except that ``run_pk`` holds the run's trace
id (its 32-hex text, or the int) and ``resource_pk`` the resource: its ``resources.attributes``
text, or anything with ``.attributes``, a mapping, or None; ``parent_id`` and ``status_message``
may give None as the int 0. Rows are never modified."""

SpanExtra = tuple[Any, str, Any, Any, Any]
"""What a span has besides its row, when it has any: (trace id as in ``SpanRow``, span id,
events as ``(name, time_ns, attributes_json)`` tuples or None, links as ``(trace_id_hex,
span_id_hex, attributes_json)`` tuples or None, the run row if it ends its run or None)."""
