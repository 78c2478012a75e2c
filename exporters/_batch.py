"""BatchWriter: puts batches of finished spans into an open store, a few statements per batch.

The sqlite3 module gives the GIL up around every statement it steps. Getting it back from an
application thread that is busy running Python takes up to the interpreter's switch interval
(5 ms), and every hand-over interrupts that thread. So a batch is written by a handful of
multi-row statements whatever it holds: one for the runs that started or ended, one for the
span counts of the other runs, a few for the spans (up to 1024 per statement), one each for
events and links. SQLite itself looks up each row's run and resource key inside those
statements: no Python code runs per span here, only per batch, run and event.
"""

from __future__ import annotations

import collections
import itertools
import json
import operator
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from . import schema as s

_RUN_COLUMNS: Final = (*s.RUN_ROW_COLUMNS, s.RUN_SPAN_COUNT, s.RUN_ERROR_COUNT)
_ADD_COUNTS: Final = (
    f"{s.RUN_SPAN_COUNT} = {s.RUN_SPAN_COUNT} + excluded.{s.RUN_SPAN_COUNT}, "
    f"{s.RUN_ERROR_COUNT} = {s.RUN_ERROR_COUNT} + excluded.{s.RUN_ERROR_COUNT}"
)
UPSERT_RUN_CONFLICT: Final = f"""ON CONFLICT({s.RUN_ID}) DO UPDATE SET {_ADD_COUNTS},
    {s.RUN_WORKFLOW} = coalesce(excluded.{s.RUN_WORKFLOW}, {s.RUN_WORKFLOW}),
    {s.RUN_ENTRYPOINT} = coalesce(excluded.{s.RUN_ENTRYPOINT}, {s.RUN_ENTRYPOINT}),
    {s.RUN_WORKFLOW_FILE} = coalesce(excluded.{s.RUN_WORKFLOW_FILE}, {s.RUN_WORKFLOW_FILE}),
    {s.RUN_STATUS} = CASE WHEN excluded.{s.RUN_STATUS} = '{s.STATUS_RUNNING}'
        THEN {s.RUN_STATUS} ELSE excluded.{s.RUN_STATUS} END,
    {s.RUN_ERROR} = CASE WHEN excluded.{s.RUN_STATUS} = '{s.STATUS_RUNNING}'
        THEN {s.RUN_ERROR} ELSE excluded.{s.RUN_ERROR} END,
    {s.RUN_STARTED_NS} = excluded.{s.RUN_STARTED_NS},
    {s.RUN_ENDED_NS} = coalesce(excluded.{s.RUN_ENDED_NS}, {s.RUN_ENDED_NS}),
    {s.RUN_DURATION_MS} = coalesce(excluded.{s.RUN_DURATION_MS}, {s.RUN_DURATION_MS}),
    {s.RUN_REPLAY_OF} = coalesce(excluded.{s.RUN_REPLAY_OF}, {s.RUN_REPLAY_OF}),
    {s.RUN_SERVICE} = coalesce(excluded.{s.RUN_SERVICE}, {s.RUN_SERVICE}),
    {s.RUN_HOST} = coalesce({s.RUN_HOST}, excluded.{s.RUN_HOST}),
    {s.RUN_PID} = coalesce({s.RUN_PID}, excluded.{s.RUN_PID}),
    {s.RUN_PROCESS_START} = coalesce({s.RUN_PROCESS_START}, excluded.{s.RUN_PROCESS_START}),
    {s.RUN_ATTRS_VERSION} = coalesce(excluded.{s.RUN_ATTRS_VERSION}, {s.RUN_ATTRS_VERSION})"""
"""How a run row meets the stored run: the spans counts add up, fields the row leaves empty keep
their stored values, and a finished status is never turned back to running."""

#: Position of the service name in a run row.
RUN_ROW_SERVICE: Final = s.RUN_ROW_COLUMNS.index(s.RUN_SERVICE)
#: Positions of the text columns whose None a run row may give as the int 0, as a span row does
#: for its parent id and status message (see ``_NULL_AS_ZERO``): a one-step run has four.
RUN_NULL_AS_ZERO: Final = frozenset(
    s.RUN_ROW_COLUMNS.index(c)
    for c in (s.RUN_ENTRYPOINT, s.RUN_WORKFLOW_FILE, s.RUN_ERROR, s.RUN_REPLAY_OF, s.RUN_SERVICE)
)

_WIDTH: Final = len(s.SPAN_COLUMNS)
_MAX_SPANS: Final = 1024  # rows per statement at most; 11 parameters each
_MAX_OTHERS: Final = 256  # events or links per statement at most
# Runs per statement at most: a loop of one-step runs queues a run row per span, and a batch of
# them took four times the statements (and GIL hand-overs) of its spans at 256.
_MAX_RUNS: Final = 1024
_MAX_VARIABLES_BEFORE_3_32: Final = 999
# Columns (parent_id, status_message) whose None a span row may give as the int 0: sqlite3 binds
# None through its adapter lookup, several times slower than an int. No text equals 0 in SQL.
_NULL_AS_ZERO: Final = (2, 6)

_trace: Final[Callable[[Sequence[Any]], Any]] = operator.itemgetter(0)
_status: Final[Callable[[Sequence[Any]], Any]] = operator.itemgetter(5)
_start: Final[Callable[[Sequence[Any]], Any]] = operator.itemgetter(7)
_resource: Final[Callable[[Sequence[Any]], Any]] = operator.itemgetter(10)
_is_error: Final[Callable[[object], bool]] = "ERROR".__eq__
_TEXT_OR_NONE: Final = frozenset({str, type(None)})


def _values(rows: int, width: int) -> str:
    row = f"({', '.join('?' * width)})"
    return ", ".join([row] * rows)


def _run_key(column: str) -> str:
    return f"(SELECT {s.RUN_PK} FROM {s.RUNS} WHERE {s.RUN_ID} = {column})"


def insert_spans_sql(n: int) -> str:
    """The statement inserting ``n`` canonical span rows (``n * 11`` parameters).

    Each row's run key is found by its run id and its resource key by the resource text, both
    through unique indexes, so the parameters are the rows themselves, flattened.
    """
    values = [f"column{i}" for i in range(2, _WIDTH)]
    for i in _NULL_AS_ZERO:
        values[i - 1] = f"nullif(column{i + 1}, 0)"
    return (
        f"INSERT INTO {s.SPANS} ({', '.join(s.SPAN_COLUMNS)}) "
        f"SELECT {_run_key('column1')}, {', '.join(values)}, "
        f"(SELECT pk FROM {s.RESOURCES} WHERE {s.SPAN_ATTRIBUTES} = column{_WIDTH}) "
        f"FROM (VALUES {_values(n, _WIDTH)}) WHERE column1 != 0"
    )


def _upsert_runs_sql(n: int) -> str:
    columns = ", ".join(
        f"nullif(column{i}, 0)" if i - 1 in RUN_NULL_AS_ZERO else f"column{i}"
        for i in range(1, len(_RUN_COLUMNS) + 1)
    )
    return (
        f"INSERT INTO {s.RUNS} ({', '.join(_RUN_COLUMNS)}) SELECT {columns} "
        f"FROM (VALUES {_values(n, len(_RUN_COLUMNS))}) WHERE column1 != 0 {UPSERT_RUN_CONFLICT}"
    )


def _count_runs_sql(n: int) -> str:
    # Runs that only gain spans: created running from their first span if they are new.
    return (
        f"INSERT INTO {s.RUNS} ({s.RUN_ID}, {s.RUN_STATUS}, {s.RUN_STARTED_NS}, "
        f"{s.RUN_SPAN_COUNT}, {s.RUN_ERROR_COUNT}) "
        f"SELECT column1, '{s.STATUS_RUNNING}', column2, column3, column4 "
        f"FROM (VALUES {_values(n, 4)}) WHERE column1 != 0 "
        f"ON CONFLICT({s.RUN_ID}) DO UPDATE SET {_ADD_COUNTS}"
    )


def _insert_keyed_sql(table: str, columns: Sequence[str]) -> Callable[[int], str]:
    # Events and links: the first column is the run id, turned into the run key.
    def sql(n: int) -> str:
        rest = ", ".join(f"column{i}" for i in range(2, len(columns) + 1))
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {_run_key('column1')}, {rest} "
            f"FROM (VALUES {_values(n, len(columns))}) WHERE column1 != 0"
        )

    return sql


class _MultiRow:
    """One multi-row statement, prepared for a few row counts (powers of 4 up to ``most``).

    ``n`` rows go in by ``ceil(n / largest)`` statements: the last one is padded to the next
    prepared size with rows of zeros, which its ``WHERE column1 != 0`` drops (no id is 0).
    Padding binds cheap ints; each further statement would cost a GIL hand-over, and each
    further size a prepared statement (about 2 MB per 1000 rows) kept by the connection.
    """

    def __init__(self, sql: Callable[[int], str], width: int, most: int) -> None:
        self._sql = sql
        self._width = width
        self._most = most
        self._texts: dict[int, str] = {}
        self._sizes: tuple[int, ...] = ()

    def run(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` by as few statements as the library's parameter limit allows."""
        if not self._sizes:
            self._sizes = chunk_sizes(conn, self._width, self._most)
        largest = self._sizes[0]
        for done in range(0, len(rows), largest):
            chunk = rows[done : done + largest]
            size = min(n for n in self._sizes if n >= len(chunk))
            params = list(itertools.chain.from_iterable(chunk))
            if size > len(chunk):
                params.extend(itertools.repeat(0, (size - len(chunk)) * self._width))
            text = self._texts.get(size)
            if text is None:
                text = self._texts[size] = self._sql(size)
            conn.execute(text, params)


def chunk_sizes(conn: sqlite3.Connection, width: int, most: int) -> tuple[int, ...]:
    """Rows per statement, largest first: powers of 4 up to ``most`` and to what the library
    binds at once (``width`` parameters a row)."""
    try:
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except (AttributeError, sqlite3.Error):
        limit = _MAX_VARIABLES_BEFORE_3_32
    largest = max(1, min(most, limit // width))
    return tuple(4**i for i in reversed(range(largest.bit_length() // 2 + 1)) if 4**i <= largest)


def resource_json(resource: object) -> str | None:
    """The ``resources.attributes`` text of a resource (or a mapping of its attributes)."""
    if resource is None:
        return None
    attrs: Any = getattr(resource, "attributes", resource)
    return json.dumps(dict(attrs), sort_keys=True, default=repr)


def canonical_rows(rows: Sequence[s.SpanRow]) -> Sequence[s.SpanRow]:
    """``rows`` with 32-hex trace ids and resource texts, as :meth:`BatchWriter.write` binds
    them; rows already in that form are returned as they are, without a copy."""
    if (
        set(map(type, map(_trace, rows))) <= {str}
        and set(map(type, map(_resource, rows))) <= _TEXT_OR_NONE
    ):
        return rows
    texts: dict[int, tuple[object, str | None]] = {}

    def text(resource: object) -> str | None:
        if resource is None or type(resource) is str:
            return resource
        cached = texts.get(id(resource))
        if cached is None or cached[0] is not resource:
            cached = texts[id(resource)] = (resource, resource_json(resource))
        return cached[1]

    return [
        (r[0] if type(r[0]) is str else s.hex_trace_id(r[0]), *r[1:10], text(r[10])) for r in rows
    ]


def _hex_id(trace_id: Any) -> str:
    return trace_id if type(trace_id) is str else s.hex_trace_id(trace_id)


class BatchWriter:
    """Writes batches of spans into an open store, remembering which resources it stored.

    The caller owns the transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) and must call
    :meth:`forget` after a rollback.
    """

    def __init__(self) -> None:
        self._resources: set[str] = set()
        self._upsert_runs = _MultiRow(_upsert_runs_sql, len(_RUN_COLUMNS), _MAX_RUNS)
        self._count_runs = _MultiRow(_count_runs_sql, 4, _MAX_RUNS)
        self._spans = _MultiRow(insert_spans_sql, _WIDTH, _MAX_SPANS)
        self._events = _MultiRow(
            _insert_keyed_sql(s.EVENTS, s.EVENT_COLUMNS), len(s.EVENT_COLUMNS), _MAX_OTHERS
        )
        self._links = _MultiRow(
            _insert_keyed_sql(s.LINKS, s.LINK_COLUMNS), len(s.LINK_COLUMNS), _MAX_OTHERS
        )

    def forget(self) -> None:
        """Drop what it remembers (a rolled-back transaction may have created it)."""
        self._resources.clear()

    def write(
        self,
        conn: sqlite3.Connection,
        rows: Sequence[s.SpanRow],
        extras: Sequence[s.SpanExtra] = (),
        runs: Sequence[tuple[Any, ...]] = (),
    ) -> int:
        """Insert ``rows`` and ``extras``; upsert ``runs`` (run rows of roots that started) and
        the runs the spans belong to, with their span counts. Nothing passed in is modified.

        Returns:
            The number of run rows inserted or updated from a root span.
        """
        rows = canonical_rows(rows)
        extras = [(_hex_id(ex[0]), *ex[1:]) for ex in extras]
        latest: dict[str, tuple[Any, ...]] = {r[0]: r for r in runs}
        latest.update((ex[4][0], ex[4]) for ex in extras if ex[4] is not None)
        ids = list(map(_trace, rows))
        spans = collections.Counter(ids)
        errors = collections.Counter(itertools.compress(ids, map(_is_error, map(_status, rows))))
        self._upsert_runs.run(
            conn,
            [(*run, spans.pop(hex_id, 0), errors.get(hex_id, 0)) for hex_id, run in latest.items()],
        )
        counted: list[tuple[Any, ...]] = []
        if spans:
            backwards = rows[::-1]  # so each run's first listed span start wins
            first = dict(zip(map(_trace, backwards), map(_start, backwards), strict=True))
            counted = [(h, first[h], n, errors.get(h, 0)) for h, n in spans.items()]
        now = time.time_ns()
        counted += [
            (ex[0], now, 0, 0) for ex in extras if ex[0] not in spans and ex[0] not in latest
        ]
        self._count_runs.run(conn, counted)
        for text in set(map(_resource, rows)) - self._resources - {None}:
            conn.execute(
                f"INSERT OR IGNORE INTO {s.RESOURCES} ({s.SPAN_ATTRIBUTES}) VALUES (?)", (text,)
            )
            self._resources.add(text)
        if len(self._resources) > 1000:
            self._resources.clear()
        self._spans.run(conn, rows)
        if extras:
            self._events.run(
                conn,
                [(ex[0], ex[1], i, *e) for ex in extras if ex[2] for i, e in enumerate(ex[2])],
            )
            self._links.run(
                conn,
                [(ex[0], ex[1], i, *k) for ex in extras if ex[3] for i, k in enumerate(ex[3])],
            )
        return len(latest)
