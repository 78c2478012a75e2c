"""Store: reads runs and spans out of a spanflow SQLite store (and imports or prunes them).

Opened read-only (the default) a store is never created or modified: the file is opened through
a ``mode=ro`` URI, and while no writer has a write-ahead log next to it the connection is also
``immutable`` so SQLite creates no ``-wal``/``-shm`` files of its own. A run whose writer process
died before the run ended reads ``crashed``; that is computed here, nothing is written back.

Every read has two forms: the ``*_data`` methods return the plain ``RunData``/``SpanData``
records and need nothing beyond the standard library (the ``spanflow`` command uses them to
start fast); ``list_runs``, ``get_run``, ``replays_of``, ``latest_replay`` and ``spans`` return
the validated pydantic records built from those.
"""

from __future__ import annotations

import _thread  # threading's RLock itself, without importing threading (~0.7 ms)
import contextlib
import datetime as _dt
import json
import math
import os
import pathlib
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from spanflow.attributes import (
    REPLAY_CHECK,
    REPLAY_OF,
    RUN_ID,
    RUN_UNFINISHED,
    STEP_NAME,
    WORKFLOW_ENTRYPOINT,
    WORKFLOW_FILE,
)
from spanflow.errors import StoreError, UnknownRunError

from . import schema as s
from .records import (
    RUN_FIELDS,
    AnySpan,
    EventData,
    LinkData,
    RunData,
    SpanData,
    datetime_to_ns,
    error_text,
    host_name,
    ns_to_datetime,
    process_is_alive,
)

if TYPE_CHECKING:
    from spanflow.values.redact import Redactor  # loaded by writes only: readers start faster

    from ._models import GcResult, RunRecord, SpanRecord

#: The OpenTelemetry resource attribute (``opentelemetry.sdk.resources.SERVICE_NAME``); spelled
#: here so reading a store never loads the OTel SDK.
SERVICE_NAME: Final = "service.name"
_SPAN_STATUSES: Final = ("UNSET", "OK", "ERROR")

_RUN_COLUMNS: Final = (*s.RUN_ROW_COLUMNS, s.RUN_SPAN_COUNT, s.RUN_ERROR_COUNT, s.RUN_PK)
_SELECT_RUNS: Final = f"SELECT {', '.join(_RUN_COLUMNS)} FROM {s.RUNS}"
_SELECT_SPANS: Final = (
    f"SELECT {s.SPAN_ID}, {s.SPAN_PARENT_ID}, {s.SPAN_NAME}, {s.SPAN_KIND}, {s.SPAN_STATUS}, "
    f"{s.SPAN_STATUS_MESSAGE}, {s.SPAN_START_NS}, {s.SPAN_END_NS}, {s.SPAN_ATTRIBUTES}, "
    f"{s.SPAN_RESOURCE_PK} FROM {s.SPANS} WHERE {s.SPAN_RUN_PK} = ? ORDER BY {s.SPAN_START_NS}"
)
_T = TypeVar("_T")
_HEX_PREFIX: Final = re.compile(r"[0-9a-f]{4,32}")
_DELETE_CHUNK: Final = 500


class Store:
    """A spanflow store file; open it with :meth:`Store.open`."""

    def __init__(self, path: pathlib.Path, conn: sqlite3.Connection | None = None) -> None:
        """Wrap a connection from ``schema.open_for_writing``, or connect read-only if None."""
        self._path = path
        self._readonly = conn is None
        self._lock = _thread.RLock()
        self._immutable = False
        self._stamp: tuple[int, int] | None = None
        self._resources: dict[int, dict[str, Any]] = {}
        self._conn = conn if conn is not None else self._connect_readonly()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, readonly: bool = True) -> Store:
        """Open the store at ``path``.

        Read-only (the default) the file must exist and is never modified. With
        ``readonly=False`` a missing store is created and an older schema is upgraded.

        Raises:
            StoreError: missing file, a directory, not a spanflow store, a newer schema, or an
                unreadable file; the message is one sentence naming the path and the problem.
        """
        p = pathlib.Path(path)
        if not readonly:
            try:
                return cls(p, s.open_for_writing(p))
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open {p} for writing: {exc}") from exc
        if p.is_dir():
            raise StoreError(f"{p} is a directory, not a spanflow store")
        if not p.exists():
            raise StoreError(f"{p} does not exist; no spanflow store there yet")
        # Before connecting: a mode=ro connection would write read marks into a foreign -shm.
        s.check_path(p, writing=False)
        try:
            store = cls(p)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {p}: {exc}") from exc
        try:
            with store._lock:
                version = s.version_of(store._db())
        except sqlite3.Error as exc:
            store.close()
            raise StoreError(s.unreadable_problem(p, exc)) from exc
        problem = s.describe_problem(p, version, empty_ok=False)
        if problem is None and version is not None and version < s.SCHEMA_VERSION:
            problem = (
                f"{p} has schema version {version}; record a run into it (or open it with "
                f"readonly=False) once to upgrade it to version {s.SCHEMA_VERSION}"
            )
        if problem:
            store.close()
            raise StoreError(problem)
        return store

    def _connect_readonly(self) -> sqlite3.Connection:
        self._immutable = not s.wal_path(self._path).exists()
        self._stamp = self._file_stamp() if self._immutable else None
        self._resources.clear()
        return sqlite3.connect(
            s.ro_uri(self._path, immutable=self._immutable), uri=True, check_same_thread=False
        )

    def _file_stamp(self) -> tuple[int, int]:
        st = self._path.stat()
        return st.st_mtime_ns, st.st_size

    def _db(self) -> sqlite3.Connection:
        # An immutable connection is only right while nobody writes: once a writer shows up
        # (a -wal appears, or the file changes) switch to a normal read-only connection.
        if (
            self._immutable
            and not self._conn.in_transaction
            and (s.wal_path(self._path).exists() or self._file_stamp() != self._stamp)
        ):
            self._conn.close()
            self._conn = self._connect_readonly()
        return self._conn

    @property
    def path(self) -> pathlib.Path:
        """The store file."""
        return self._path

    @property
    def readonly(self) -> bool:
        """Whether this store was opened read-only."""
        return self._readonly

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db().execute(sql, params).fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot read {self._path}: {exc}") from exc

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that see one state of the file, whatever writers commit meanwhile."""
        with self._lock:
            conn = self._db()
            began = not conn.in_transaction
            if began:
                conn.execute("BEGIN")
            try:
                yield
            finally:
                if began and conn.in_transaction:
                    conn.execute("COMMIT")

    # -- runs ----------------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        since: _dt.datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs newest first, optionally only those with ``status``, of ``workflow``, or
        started at or after ``since`` (a naive datetime is taken as UTC)."""
        found = self.list_run_data(
            status=status, workflow=workflow, since=since, limit=limit, offset=offset
        )
        return [_run_record(run) for run in found]

    def list_run_data(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        since: _dt.datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunData]:
        """:meth:`list_runs` as plain ``RunData``."""
        where, params = self._filters(status, workflow, since)
        order = f" ORDER BY {s.RUN_STARTED_NS} DESC"
        if status in (s.STATUS_RUNNING, s.STATUS_CRASHED):
            # "crashed" is stored as running: filter after computing it.
            runs = [r for r in self._runs(where + order, params) if r.status == status]
            return runs[offset : offset + limit]
        return self._runs(where + order + " LIMIT ? OFFSET ?", [*params, limit, offset])

    def count_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        since: _dt.datetime | None = None,
    ) -> int:
        """How many runs :meth:`list_runs` would list without a limit."""
        where, params = self._filters(status, workflow, since)
        if status in (s.STATUS_RUNNING, s.STATUS_CRASHED):
            return sum(1 for r in self._runs(where, params) if r.status == status)
        return int(self._query(f"SELECT count(*) FROM {s.RUNS}{where}", params)[0][0])

    def get_run(self, run_id_or_prefix: str) -> RunRecord:
        """The run with this id, or the only run whose id starts with this (>= 4 hex chars).

        Raises:
            UnknownRunError: no such run, or the prefix matches several runs.
        """
        return _run_record(self.get_run_data(run_id_or_prefix))

    def get_run_data(self, run_id_or_prefix: str) -> RunData:
        """:meth:`get_run` as plain ``RunData``."""
        return self._run_rows(run_id_or_prefix)[0]

    def unique_prefix_length(
        self, run_ids: Sequence[str], shortest: int = 12, step: int = 4
    ) -> int:
        """The shortest id prefix, ``shortest`` characters or more in steps of ``step``, that
        names each of ``run_ids`` alone in this store (at most the longest id).

        One statement whatever the store's size: each id is compared with its two neighbours
        in id order (two seeks in the id index), not looked up prefix after prefix.
        """
        ids = list(dict.fromkeys(run_ids))
        longest = max((len(i) for i in ids), default=0)
        need = shortest
        for chunk in _chunks(ids, _DELETE_CHUNK):
            values = ", ".join("(?)" for _ in chunk)
            rows = self._query(
                f"WITH listed(id) AS (VALUES {values}) SELECT listed.id, "
                f"(SELECT max({s.RUN_ID}) FROM {s.RUNS} WHERE {s.RUN_ID} < listed.id), "
                f"(SELECT min({s.RUN_ID}) FROM {s.RUNS} WHERE {s.RUN_ID} > listed.id) FROM listed",
                chunk,
            )
            for run_id, before, after in rows:
                shared = max(_common_prefix(run_id, before), _common_prefix(run_id, after))
                need = max(need, shared + 1)
        length = shortest
        while length < min(need, longest):
            length = min(longest, length + step)
        return length

    def replays_of(self, run_id: str) -> list[RunRecord]:
        """Runs that replayed ``run_id`` (id or unique prefix), newest first."""
        return [_run_record(run) for run in self.replay_data(run_id)]

    def replay_data(self, run_id: str) -> list[RunData]:
        """:meth:`replays_of` as plain ``RunData``."""
        original = self.get_run_data(run_id)
        return self._runs(
            f" WHERE {s.RUN_REPLAY_OF} = ? ORDER BY {s.RUN_STARTED_NS} DESC", [original.id]
        )

    def latest_replay(self, run_id: str) -> RunRecord | None:
        """The newest run that replayed ``run_id`` and is not a check (``spanflow.replay.check``
        on its root: a check tests today's code against a recording, it does not replay a fix);
        what ``spanflow diff`` and the viewer compare a run with by default. None if there is
        no such run."""
        data = self.latest_replay_data(run_id)
        return None if data is None else _run_record(data)

    def latest_replay_data(self, run_id: str) -> RunData | None:
        """:meth:`latest_replay` as plain ``RunData``."""
        original = self.get_run_data(run_id)
        with self._snapshot():
            rows = self._query(
                _SELECT_RUNS + f" WHERE {s.RUN_REPLAY_OF} = ? ORDER BY {s.RUN_STARTED_NS} DESC",
                [original.id],
            )
            for row in rows:
                if self._root_attributes(int(row[-1])).get(REPLAY_CHECK) is not True:
                    return self._run_data(row)
        return None

    def _root_attributes(self, pk: int) -> dict[str, Any]:
        """The attributes of run ``pk``'s root as it started, else of its first root span."""
        start = self._start_record(pk)
        if start is not None:
            return _loads(start[3])
        found = self._query(
            f"SELECT {s.SPAN_ATTRIBUTES} FROM {s.SPANS} WHERE {s.SPAN_RUN_PK} = ? AND "
            f"{s.SPAN_PARENT_ID} IS NULL ORDER BY {s.SPAN_START_NS} LIMIT 1",
            [pk],
        )
        return _loads(found[0][0]) if found else {}

    def _filters(
        self, status: str | None, workflow: str | None, since: _dt.datetime | None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            if status not in s.RUN_STATUSES:
                raise ValueError(
                    f"status must be one of {', '.join(s.RUN_STATUSES)}; got {status!r}"
                )
            clauses.append(f"{s.RUN_STATUS} = ?")
            params.append(s.STATUS_RUNNING if status == s.STATUS_CRASHED else status)
        if workflow is not None:
            clauses.append(f"{s.RUN_WORKFLOW} = ?")
            params.append(workflow)
        if since is not None:
            clauses.append(f"{s.RUN_STARTED_NS} >= ?")
            params.append(datetime_to_ns(since))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _runs(self, tail: str, params: Sequence[Any]) -> list[RunData]:
        return [self._run_data(row) for row in self._query(_SELECT_RUNS + tail, params)]

    def _run_rows(self, key: str) -> tuple[RunData, int]:
        """(record, pk) of the run named by a full id or unique prefix."""
        k = key.strip().lower()
        if not _HEX_PREFIX.fullmatch(k):
            raise UnknownRunError(
                f"{key!r} is not a run id: give the 32 hex characters of one, or at least "
                "the first 4"
            )
        if len(k) == 32:
            rows = self._query(_SELECT_RUNS + f" WHERE {s.RUN_ID} = ?", [k])
        else:
            # Hex ids sort below "g", so this range is exactly the ids with that prefix.
            rows = self._query(
                _SELECT_RUNS + f" WHERE {s.RUN_ID} >= ? AND {s.RUN_ID} < ? ORDER BY {s.RUN_ID} "
                "LIMIT 6",
                [k, k + "g"],
            )
        if not rows:
            raise UnknownRunError(f"no run {k} in {self._path}")
        if len(rows) > 1:
            ids = ", ".join(r[0] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise UnknownRunError(
                f"run id prefix {k} is ambiguous in {self._path} (matches {ids}); "
                "give more characters"
            )
        return self._run_data(rows[0]), int(rows[0][-1])

    @staticmethod
    def _run_data(row: Sequence[Any]) -> RunData:
        # Column names are the RunData field names, except the two timestamps.
        fields = dict(zip(_RUN_COLUMNS, row, strict=True))
        fields.pop(s.RUN_PK)
        started, ended = fields.pop(s.RUN_STARTED_NS), fields.pop(s.RUN_ENDED_NS)
        pid = fields[s.RUN_PID]
        if (
            fields[s.RUN_STATUS] == s.STATUS_RUNNING
            and pid is not None
            and fields[s.RUN_HOST] == host_name()
            and not process_is_alive(pid, fields[s.RUN_PROCESS_START])
        ):
            fields[s.RUN_STATUS] = s.STATUS_CRASHED
        fields["incomplete"] = fields[s.RUN_WORKFLOW] is None
        fields["started_at"] = ns_to_datetime(started)
        fields["ended_at"] = None if ended is None else ns_to_datetime(ended)
        # The checks a reader relies on; the pydantic records validate the rest.
        if not isinstance(fields[s.RUN_ID], str) or fields[s.RUN_STATUS] not in s.RUN_STATUSES:
            raise StoreError(
                f"malformed run row {fields[s.RUN_ID]!r}: status {fields[s.RUN_STATUS]!r}"
            )
        return RunData(**{name: fields[name] for name in RUN_FIELDS})

    # -- spans ---------------------------------------------------------------------------------

    def spans(self, run_id: str) -> list[SpanRecord]:
        """Every stored span of a run (id or unique prefix), ordered by start time."""
        found = self.span_data(run_id)
        from pydantic import ValidationError

        from ._models import SpanRecord

        try:
            return [SpanRecord.model_validate(span, from_attributes=True) for span in found]
        except ValidationError as exc:
            run = found[0].run_id if found else run_id
            raise StoreError(f"malformed span in run {run}: {exc}") from exc

    def span_data(self, run_id: str) -> list[SpanData]:
        """:meth:`spans` as plain ``SpanData``."""
        with self._snapshot():
            run, pk = self._run_rows(run_id)
            rows = self._query(_SELECT_SPANS, [pk])
            events: dict[str, list[EventData]] = {}
            for span_id, name, time_ns, attrs in self._query(
                f"SELECT {s.SPAN_ID}, {s.EVENT_NAME}, {s.EVENT_TIME_NS}, {s.SPAN_ATTRIBUTES} "
                f"FROM {s.EVENTS} WHERE {s.SPAN_RUN_PK} = ? ORDER BY rowid",
                [pk],
            ):
                events.setdefault(span_id, []).append(EventData(name, time_ns, _loads(attrs)))
            links: dict[str, list[LinkData]] = {}
            for span_id, trace_id, linked, attrs in self._query(
                f"SELECT {s.SPAN_ID}, {s.LINK_TRACE_ID}, {s.LINK_SPAN_ID}, {s.SPAN_ATTRIBUTES} "
                f"FROM {s.LINKS} WHERE {s.SPAN_RUN_PK} = ? ORDER BY rowid",
                [pk],
            ):
                links.setdefault(span_id, []).append(LinkData(trace_id, linked, _loads(attrs)))
            resources = self._resource_map({r[9] for r in rows if r[9] is not None})
            start = self._query(
                f"SELECT {s.SPAN_ID}, {s.SPAN_NAME}, {s.SPAN_START_NS}, {s.SPAN_ATTRIBUTES} "
                f"FROM {s.RUN_STARTS} WHERE {s.SPAN_RUN_PK} = ?",
                [pk],
            )
        spans = [_span_data(run.id, row, events, links, resources) for row in rows]
        if start and all(sp.span_id != start[0][0] for sp in spans):
            spans.insert(0, _unfinished_root(run, start[0], spans))
        elif run.incomplete and spans:
            missing = _missing_root_id([(sp.span_id, sp.parent_id, sp.start_ns) for sp in spans])
            if missing is not None:
                times = (min(sp.start_ns for sp in spans), max(sp.end_ns for sp in spans))
                spans.insert(0, _missing_root(run, missing, *times))
        return spans

    def span_outline(self, run_id: str) -> list[tuple[int, str, str | None, str, int]]:
        """``(row, span_id, parent_id, status, start_ns)`` of every span of a run, by start.

        Cheap even for a run of many thousand spans; :meth:`spans_at` reads the records of
        the rows a caller picked.
        """
        run, pk = self._run_rows(run_id)
        rows = [
            (int(r[0]), r[1], r[2], r[3], int(r[4]))
            for r in self._query(
                f"SELECT rowid, {s.SPAN_ID}, {s.SPAN_PARENT_ID}, {s.SPAN_STATUS}, "
                f"{s.SPAN_START_NS} FROM {s.SPANS} WHERE {s.SPAN_RUN_PK} = ? "
                f"ORDER BY {s.SPAN_START_NS}",
                [pk],
            )
        ]
        start = self._start_record(pk)
        if start is not None and all(r[1] != start[0] for r in rows):
            # A root that never ended, rebuilt from its start record (row -1, see spans_at).
            rows.insert(0, (_START_ROW, start[0], None, "UNSET", int(start[2])))
        elif start is None and run.incomplete and rows:
            missing = _missing_root_id([(r[1], r[2], r[4]) for r in rows])
            if missing is not None:
                rows.insert(0, (_MISSING_ROW, missing, None, "UNSET", min(r[4] for r in rows)))
        return rows

    def _start_record(self, pk: int) -> Sequence[Any] | None:
        found = self._query(
            f"SELECT {s.SPAN_ID}, {s.SPAN_NAME}, {s.SPAN_START_NS}, {s.SPAN_ATTRIBUTES} "
            f"FROM {s.RUN_STARTS} WHERE {s.SPAN_RUN_PK} = ?",
            [pk],
        )
        return found[0] if found else None

    def spans_at(self, run_id: str, rows: Sequence[int]) -> dict[int, SpanData]:
        """The spans of some rows of :meth:`span_outline`, by row."""
        out: dict[int, SpanData] = {}
        with self._snapshot():
            run, pk = self._run_rows(run_id)
            for chunk in _chunks(sorted(set(rows)), _DELETE_CHUNK):
                marks = ", ".join("?" * len(chunk))
                # By rowid alone: a term on run_pk would make SQLite walk the run's index.
                found = self._query(
                    _SELECT_SPANS.replace("SELECT ", "SELECT rowid, ", 1).replace(
                        f" WHERE {s.SPAN_RUN_PK} = ? ORDER BY {s.SPAN_START_NS}",
                        f" WHERE +{s.SPAN_RUN_PK} = ? AND rowid IN ({marks})",
                    ),
                    [pk, *chunk],
                )
                ids = sorted({r[1] for r in found})
                id_marks = ", ".join("?" * len(ids))
                events: dict[str, list[EventData]] = {}
                for span_id, name, time_ns, attrs in self._query(
                    f"SELECT {s.SPAN_ID}, {s.EVENT_NAME}, {s.EVENT_TIME_NS}, {s.SPAN_ATTRIBUTES} "
                    f"FROM {s.EVENTS} WHERE {s.SPAN_RUN_PK} = ? AND {s.SPAN_ID} IN ({id_marks}) "
                    "ORDER BY rowid",
                    [pk, *ids],
                ):
                    events.setdefault(span_id, []).append(EventData(name, time_ns, _loads(attrs)))
                links: dict[str, list[LinkData]] = {}
                for span_id, trace_id, linked, attrs in self._query(
                    f"SELECT {s.SPAN_ID}, {s.LINK_TRACE_ID}, {s.LINK_SPAN_ID}, "
                    f"{s.SPAN_ATTRIBUTES} FROM {s.LINKS} WHERE {s.SPAN_RUN_PK} = ? "
                    f"AND {s.SPAN_ID} IN ({id_marks}) ORDER BY rowid",
                    [pk, *ids],
                ):
                    links.setdefault(span_id, []).append(LinkData(trace_id, linked, _loads(attrs)))
                resources = self._resource_map({r[10] for r in found if r[10] is not None})
                for row in found:
                    out[int(row[0])] = _span_data(run.id, row[1:], events, links, resources)
            if _START_ROW in rows:
                start = self._start_record(pk)
                if start is not None:
                    out[_START_ROW] = _unfinished_root(run, start, list(out.values()))
            if _MISSING_ROW in rows:
                outline = self._query(
                    f"SELECT {s.SPAN_ID}, {s.SPAN_PARENT_ID}, {s.SPAN_START_NS} FROM {s.SPANS} "
                    f"WHERE {s.SPAN_RUN_PK} = ?",
                    [pk],
                )
                missing = _missing_root_id([(r[0], r[1], int(r[2])) for r in outline])
                first, last = self._query(
                    f"SELECT min({s.SPAN_START_NS}), max({s.SPAN_END_NS}) FROM {s.SPANS} "
                    f"WHERE {s.SPAN_RUN_PK} = ?",
                    [pk],
                )[0]
                if missing is not None and first is not None:
                    out[_MISSING_ROW] = _missing_root(run, missing, int(first), int(last))
        return out

    def rows_mentioning(self, run_id: str, needles: Sequence[str]) -> list[int]:
        """Rows of :meth:`span_outline` whose attributes' text holds any of ``needles``.

        A cheap first pass for a reader that wants a few spans out of many (``show`` totals
        the tokens of the spans that count any): the text is searched, not parsed.
        """
        if not needles:
            return []
        _, pk = self._run_rows(run_id)
        terms = " OR ".join(f"instr({s.SPAN_ATTRIBUTES}, ?) > 0" for _ in needles)
        return [
            int(r[0])
            for r in self._query(
                f"SELECT rowid FROM {s.SPANS} WHERE {s.SPAN_RUN_PK} = ? AND ({terms})",
                [pk, *needles],
            )
        ]

    def iter_spans(
        self, run_id: str, *, by_resource: bool = False, batch: int = 500
    ) -> Iterator[SpanData]:
        """The spans of a run, ``batch`` at a time, so a huge run never sits in memory whole.

        In start order, or with ``by_resource`` grouped by resource (then by start).
        """
        _, pk = self._run_rows(run_id)
        order = f"{s.SPAN_RESOURCE_PK}, {s.SPAN_START_NS}" if by_resource else s.SPAN_START_NS
        rows = [
            int(r[0])
            for r in self._query(
                f"SELECT rowid FROM {s.SPANS} WHERE {s.SPAN_RUN_PK} = ? ORDER BY {order}", [pk]
            )
        ]
        for chunk in _chunks(rows, batch):
            found = self.spans_at(run_id, chunk)
            yield from (found[row] for row in chunk if row in found)

    def copy_to(self, target: str | os.PathLike[str]) -> None:
        """Write a consistent copy of the store (its write-ahead log included) to ``target``.

        The store itself is only read (SQLite's online backup).
        """
        with self._lock:
            try:
                dest = sqlite3.connect(target)
                try:
                    self._db().backup(dest)
                finally:
                    dest.close()
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot copy {self._path} to {target}: {exc}") from exc

    def bytes_on_disk(self) -> int:
        """The file's size plus its write-ahead log's, after moving the log into the file
        (``wal_checkpoint(TRUNCATE)``) when the store is open for writing, so that another
        writer's pending log does not count."""
        with self._lock:
            try:
                if not self._readonly:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                return self._bytes_on_disk()
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot read {self._path}: {exc}") from exc

    def _resource_map(self, pks: set[int]) -> dict[int, dict[str, Any]]:
        missing = [pk for pk in pks if pk not in self._resources]
        if missing:
            marks = ", ".join("?" * len(missing))
            for pk, attrs in self._query(
                f"SELECT pk, {s.SPAN_ATTRIBUTES} FROM {s.RESOURCES} WHERE pk IN ({marks})", missing
            ):
                self._resources[pk] = _loads(attrs)
        return self._resources

    # -- writing -------------------------------------------------------------------------------

    def _writable(self) -> sqlite3.Connection:
        if self._readonly:
            raise StoreError(f"{self._path} is open read-only; open it with readonly=False")
        return self._conn

    def write_spans(
        self,
        spans: Iterable[AnySpan],
        *,
        service: str | None = None,
        redactor: Redactor | None = None,
        redacted: bool = False,
    ) -> int:
        """Insert spans (skipping ones already stored) and create or update their runs.

        The spans are ``SpanRecord`` or plain ``SpanData`` records (the same fields). They come
        from outside the recording runtime (an imported file, a received trace), so each is
        redacted first (``redactor``, default rules) as recorded spans are: its name, attributes,
        status message, event names and attributes, link and resource attributes. ``redacted``
        says the caller did exactly that already (``spanflow serve`` redacts while decoding).

        Everything happens in one transaction. A run's row comes from its root span (no parent,
        ``spanflow.run.id`` set); a run imported without its root is marked ``ok`` or
        ``failed`` from its spans. ``service`` is recorded on runs whose spans carry no
        ``service.name``.

        Returns:
            How many spans were inserted.
        """
        from ._batch import BatchWriter  # the writer, only for imports: readers start faster

        conn = self._writable()
        if not redacted:
            from spanflow.values.redact import Redactor

            spans = redact_spans(spans, redactor or Redactor())
        by_run: dict[str, dict[str, AnySpan]] = {}
        for span in spans:
            by_run.setdefault(span.run_id, {}).setdefault(span.span_id, span)
        with self._lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    rows, extras = self._new_rows(conn, by_run, service)
                    BatchWriter().write(conn, rows, extras)
                    self._finish_rootless(conn, by_run)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write to {self._path}: {exc}") from exc
        return len(rows)

    def _new_rows(
        self,
        conn: sqlite3.Connection,
        by_run: dict[str, dict[str, AnySpan]],
        service: str | None,
    ) -> tuple[list[s.SpanRow], list[s.SpanExtra]]:
        rows: list[s.SpanRow] = []
        extras: list[s.SpanExtra] = []
        resources: dict[str, dict[str, Any]] = {}
        last: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None)
        # Spans already stored are skipped: one query per few hundred runs, not one per run.
        stored: set[tuple[str, str]] = set()
        for chunk in _chunks(list(by_run), _DELETE_CHUNK):
            stored.update(
                conn.execute(
                    f"SELECT r.{s.RUN_ID}, sp.{s.SPAN_ID} FROM {s.RUNS} r JOIN {s.SPANS} sp "
                    f"ON sp.{s.SPAN_RUN_PK} = r.{s.RUN_PK} "
                    f"WHERE r.{s.RUN_ID} IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
            )
        for run_id, group in by_run.items():
            tid = int(run_id, 16)
            for span in group.values():
                if (run_id, span.span_id) in stored:
                    continue
                # One object per distinct resource, so the writer's key cache hits; spans of one
                # resource come together, so the last one found usually answers.
                resource = None
                if span.resource:
                    if span.resource == last[0]:
                        resource = last[1]
                    else:
                        resource = resources.setdefault(s.dumps(span.resource), span.resource)
                        last = (span.resource, resource)
                rows.append(
                    [
                        tid,
                        span.span_id,
                        span.parent_id,
                        span.name,
                        span.kind,
                        span.status,
                        span.status_message,
                        span.start_ns,
                        span.end_ns,
                        s.dumps(span.attributes),
                        resource,
                    ]
                )
                root = span.parent_id is None and RUN_ID in span.attributes
                if span.events or span.links or root:
                    extras.append(
                        (
                            tid,
                            span.span_id,
                            tuple((e.name, e.time_ns, s.dumps(e.attributes)) for e in span.events)
                            or None,
                            tuple(
                                (ln.trace_id, ln.span_id, s.dumps(ln.attributes))
                                for ln in span.links
                            )
                            or None,
                            _imported_run_row(span, service) if root else None,
                        )
                    )
        return rows, extras

    def _finish_rootless(
        self, conn: sqlite3.Connection, by_run: dict[str, dict[str, AnySpan]]
    ) -> None:
        # A run known only from spans other than its root (it has no workflow yet) spans what
        # arrived so far, whichever batch it came in, and names the service of its resource.
        rootless: set[str] = set()
        for chunk in _chunks(list(by_run), _DELETE_CHUNK):
            rootless.update(
                r[0]
                for r in conn.execute(
                    f"SELECT {s.RUN_ID} FROM {s.RUNS} WHERE {s.RUN_ID} IN "
                    f"({', '.join('?' * len(chunk))}) AND {s.RUN_PID} IS NULL AND "
                    f"({s.RUN_STATUS} = '{s.STATUS_RUNNING}' OR {s.RUN_WORKFLOW} IS NULL)",
                    chunk,
                )
            )
        for run_id in rootless:
            group = by_run[run_id]
            start = min(span.start_ns for span in group.values())
            end = max(span.end_ns for span in group.values())
            service = next(
                (
                    sp.resource[SERVICE_NAME]
                    for sp in group.values()
                    if sp.resource.get(SERVICE_NAME)
                ),
                None,
            )
            conn.execute(
                f"UPDATE {s.RUNS} SET {s.RUN_STATUS} = CASE WHEN {s.RUN_ERROR_COUNT} > 0 "
                f"THEN '{s.STATUS_FAILED}' ELSE '{s.STATUS_OK}' END, "
                f"{s.RUN_STARTED_NS} = min({s.RUN_STARTED_NS}, ?), "
                f"{s.RUN_ENDED_NS} = max(coalesce({s.RUN_ENDED_NS}, 0), ?), "
                f"{s.RUN_DURATION_MS} = (max(coalesce({s.RUN_ENDED_NS}, 0), ?) - "
                f"min({s.RUN_STARTED_NS}, ?)) / 1e6, "
                f"{s.RUN_SERVICE} = coalesce({s.RUN_SERVICE}, ?) "
                f"WHERE {s.RUN_ID} = ? AND {s.RUN_PID} IS NULL AND "
                f"({s.RUN_STATUS} = '{s.STATUS_RUNNING}' OR {s.RUN_WORKFLOW} IS NULL)",
                (start, end, end, start, service, run_id),
            )

    def gc(self, *, keep_days: float | None = None, max_bytes: int | None = None) -> GcResult:
        """Delete whole runs, oldest first, then VACUUM the file.

        Args:
            keep_days: delete runs that started more than this many days ago.
            max_bytes: then delete the oldest runs until the data fits in this many bytes.

        Runs still running in a live process are never deleted.
        """
        conn = self._writable()
        with self._lock:
            before = self._bytes_on_disk()
            runs_deleted = spans_deleted = 0
            try:
                if keep_days is not None:
                    cutoff = time.time_ns() - int(keep_days * 86_400e9)
                    victims = self._deletable(f" WHERE {s.RUN_STARTED_NS} < ?", [cutoff])
                    r, n = self._delete_runs(conn, victims)
                    runs_deleted, spans_deleted = runs_deleted + r, spans_deleted + n
                while max_bytes is not None:
                    used, total = self._used_bytes(conn), self._count(conn)
                    if used <= max_bytes or not total:
                        break
                    share = math.ceil(total * (used - max_bytes) / used)
                    victims = self._deletable(f" ORDER BY {s.RUN_STARTED_NS}", [])[:share]
                    if not victims:
                        break
                    r, n = self._delete_runs(conn, victims)
                    runs_deleted, spans_deleted = runs_deleted + r, spans_deleted + n
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                kept = self._count(conn)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot clean up {self._path}: {exc}") from exc
            from ._models import GcResult

            return GcResult(
                runs_deleted=runs_deleted,
                spans_deleted=spans_deleted,
                runs_kept=kept,
                bytes_before=before,
                bytes_after=self._bytes_on_disk(),
            )

    def _deletable(self, tail: str, params: Sequence[Any]) -> list[int]:
        """Keys of the selected runs, except those running in a live process on this host."""
        keep = []
        for row in self._query(_SELECT_RUNS + tail, params):
            run = self._run_data(row)
            live = (
                run.status == s.STATUS_RUNNING and run.pid is not None and run.host == host_name()
            )
            if not live:
                keep.append(int(row[-1]))
        return keep

    def _delete_runs(self, conn: sqlite3.Connection, pks: list[int]) -> tuple[int, int]:
        spans = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for chunk in _chunks(pks, _DELETE_CHUNK):
                marks = ", ".join("?" * len(chunk))
                for table in (s.EVENTS, s.LINKS, s.SPANS, s.RUN_STARTS):
                    cur = conn.execute(
                        f"DELETE FROM {table} WHERE {s.SPAN_RUN_PK} IN ({marks})", chunk
                    )
                    if table == s.SPANS:
                        spans += cur.rowcount
                conn.execute(f"DELETE FROM {s.RUNS} WHERE {s.RUN_PK} IN ({marks})", chunk)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return len(pks), spans

    @staticmethod
    def _used_bytes(conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * conn.execute("PRAGMA page_size").fetchone()[0])

    @staticmethod
    def _count(conn: sqlite3.Connection) -> int:
        return int(conn.execute(f"SELECT count(*) FROM {s.RUNS}").fetchone()[0])

    def _bytes_on_disk(self) -> int:
        wal = s.wal_path(self._path)
        return self._path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _imported_run_row(span: AnySpan, service: str | None) -> tuple[Any, ...]:
    attrs = span.attributes
    failed = span.status == "ERROR"
    events = [(e.name, e.attributes) for e in span.events]
    return (
        span.run_id,
        attrs.get(STEP_NAME) or span.name,
        attrs.get(WORKFLOW_ENTRYPOINT),
        attrs.get(WORKFLOW_FILE),
        s.STATUS_FAILED if failed else s.STATUS_OK,
        error_text(span.status_message, attrs, events) if failed else None,
        span.start_ns,
        span.end_ns,
        (span.end_ns - span.start_ns) / 1e6,
        attrs.get(REPLAY_OF),
        span.resource.get(SERVICE_NAME) or service,
        None,  # host, pid, process start: the importing process did not run it
        None,
        None,
        None,  # attributes version: unknown for spans made elsewhere
    )


def _run_record(run: RunData) -> RunRecord:
    from pydantic import ValidationError

    from ._models import RunRecord

    try:
        return RunRecord.model_validate(run, from_attributes=True)
    except ValidationError as exc:
        raise StoreError(f"malformed run row {run.id!r}: {exc}") from exc


def _span_data(
    run_id: str,
    row: Sequence[Any],
    events: dict[str, list[EventData]],
    links: dict[str, list[LinkData]],
    resources: dict[int, dict[str, Any]],
) -> SpanData:
    span_id, parent_id, name, kind, status, message, start, end, attrs, res_pk = row
    if status not in _SPAN_STATUSES or not isinstance(span_id, str):
        raise StoreError(f"malformed span {span_id!r} in run {run_id}: status {status!r}")
    return SpanData(
        run_id=run_id,
        span_id=span_id,
        parent_id=parent_id,
        name=name,
        kind=kind,
        status=status,
        status_message=message,
        start_ns=start,
        end_ns=end,
        attributes=_loads(attrs),
        events=tuple(events.get(span_id, ())),
        links=tuple(links.get(span_id, ())),
        # A copy: resources are cached and shared by many spans.
        resource=dict(resources[res_pk]) if res_pk in resources else {},
    )


_START_ROW: Final = -1  # span_outline's row of a root rebuilt from its start record


def _unfinished_root(run: RunData, start: Sequence[Any], spans: Sequence[SpanData]) -> SpanData:
    """The root of a run whose root span never ended (its process died, or it still runs), from
    the record written when it started; it lasts as far as the latest span that ended."""
    span_id, name, start_ns, attrs = start
    end = max([start_ns, *(sp.end_ns for sp in spans)])
    return SpanData(
        run_id=run.id,
        span_id=span_id,
        parent_id=None,
        name=name,
        kind="INTERNAL",
        status="UNSET",
        status_message=run.status,
        start_ns=start_ns,
        end_ns=end,
        attributes={**_loads(attrs), RUN_UNFINISHED: True},
        events=(),
        links=(),
        resource={SERVICE_NAME: run.service} if run.service else {},
    )


_MISSING_ROW: Final = -2  # span_outline's row of a root that was never received
#: How the placeholder of a root that was never received reads (its name and status).
MISSING_ROOT_NAME: Final = "(root span)"
_MISSING_ROOT_STATUS: Final = "not received"


def _missing_root_id(spans: Iterable[tuple[str, str | None, int]]) -> str | None:
    """The span id of the root of a run stored without it: of the parents that are not stored,
    the one most ``(span_id, parent_id, start_ns)`` spans name (the earliest child breaks a tie);
    None if every span's parent is stored or some span is a root."""
    listed = list(spans)
    ids = {span_id for span_id, _, _ in listed}
    named: dict[str, list[int]] = {}
    for _, parent, start in listed:
        if parent is None:
            return None
        if parent not in ids:
            named.setdefault(parent, []).append(start)
    if not named:
        return None
    return min(named, key=lambda p: (-len(named[p]), min(named[p]), p))


def _missing_root(run: RunData, span_id: str, start_ns: int, end_ns: int) -> SpanData:
    """A placeholder for the root of a run whose root span has not been received, so the spans
    that name it as their parent are drawn under it; it lasts as long as they do."""
    return SpanData(
        run_id=run.id,
        span_id=span_id,
        parent_id=None,
        name=MISSING_ROOT_NAME,
        kind="INTERNAL",
        status="UNSET",
        status_message=_MISSING_ROOT_STATUS,
        start_ns=start_ns,
        end_ns=end_ns,
        attributes={RUN_UNFINISHED: True},
        events=(),
        links=(),
        resource={SERVICE_NAME: run.service} if run.service else {},
    )


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"_unparsed": text}
    return value if isinstance(value, dict) else {"_value": value}


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _common_prefix(a: str, b: str | None) -> int:
    """How many leading characters ``a`` and ``b`` share (0 when there is no ``b``)."""
    if b is None:
        return 0
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def redact_spans(spans: Iterable[AnySpan], redactor: Redactor) -> Iterator[AnySpan]:
    """Each span, or a plain copy of it with every secret replaced (see :meth:`Store.write_spans`):
    name, attributes, status message, event names and attributes, link and resource attributes."""
    scrub, text = redactor.scrub_attributes, redactor.redact_text
    resources: dict[int, tuple[Any, dict[str, Any]]] = {}  # spans of a file share resources
    for span in spans:
        # SpanRecord's and SpanData's events and links have the same fields.
        span_events: Sequence[Any] = span.events
        span_links: Sequence[Any] = span.links
        name = text(span.name)[0]
        attributes = scrub(span.attributes)
        message = None if span.status_message is None else text(span.status_message)[0]
        events = [(text(e.name)[0], scrub(e.attributes)) for e in span_events]
        links = [scrub(link.attributes) for link in span_links]
        hit = resources.get(id(span.resource))
        if hit is None or hit[0] is not span.resource:
            hit = (span.resource, scrub(span.resource) or span.resource)
            resources[id(span.resource)] = hit
        unchanged = (
            name == span.name
            and attributes is None
            and message == span.status_message
            and all(
                n == e.name and a is None for (n, a), e in zip(events, span_events, strict=True)
            )
            and all(a is None for a in links)
            and hit[1] is span.resource
        )
        if unchanged:
            yield span
            continue
        yield SpanData(
            run_id=span.run_id,
            span_id=span.span_id,
            parent_id=span.parent_id,
            name=name,
            kind=span.kind,
            status=span.status,
            status_message=message,
            start_ns=span.start_ns,
            end_ns=span.end_ns,
            attributes=span.attributes if attributes is None else attributes,
            events=tuple(
                EventData(n, e.time_ns, e.attributes if a is None else a)
                for (n, a), e in zip(events, span_events, strict=True)
            ),
            links=tuple(
                LinkData(link.trace_id, link.span_id, link.attributes if a is None else a)
                for a, link in zip(links, span_links, strict=True)
            ),
            resource=hit[1],
        )
