"""SQLiteSpanProcessor: records every span of every spanflow run into the local store.

``on_start``/``on_end`` only turn spans into tuples (``_span_rows``) and append them to a bounded
queue; one daemon thread per process owns the SQLite connection and, every ``flush_interval``
seconds, commits everything queued in one transaction of a few multi-row statements
(``_batch``). So a finished span is on disk within half a second even while the application keeps
the GIL busy, and a SIGKILL loses only spans that had not ended. Nothing here raises into the
application: problems are logged once per kind on the ``spanflow`` logger and counted in
:meth:`SQLiteSpanProcessor.stats`.

Which spans are stored: every span of a trace that is a run. A trace becomes a run when a span
carrying ``spanflow.run.id`` starts or ends in it; spans of other instrumentation in that trace
are kept, spans of traces that never become runs are ignored.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import operator
import os
import pathlib
import random
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext
from spanflow.attributes import REPLAY_OF, RUN_ID, STEP_NAME, WORKFLOW_ENTRYPOINT, WORKFLOW_FILE
from spanflow.errors import ConfigurationError, StoreError
from spanflow.values.redact import Redactor

from . import schema as s
from ._batch import RUN_ROW_SERVICE, BatchWriter
from ._span_rows import (
    SDK_SPANS,
    RowMaker,
    attributes,
    ended_run_rows,
    events,
    links,
    run_row,
    span_extra,
    span_row,
    start_row,
)

__all__ = ["SQLiteSpanProcessor", "run_row", "span_extra", "span_row"]


class Scrubber(Protocol):
    """What the writer needs of a ``Redactor``: attributes with their secrets replaced."""

    def scrub_attributes(self, attributes: Mapping[str, Any]) -> dict[str, object] | None: ...


logger = logging.getLogger("spanflow")

_BATCH: Final = 32_768  # items per transaction at most: one transaction per round in practice
_WAKE_AT: Final = 8192  # queue length at which the writer starts before its interval is up
_RECENT_RUNS: Final = 10_000  # ended runs remembered so their late child spans are still kept
_MAX_PENDING: Final = 10_000
_REOPEN_DELAY_S: Final = 1.0
_SHUTDOWN_JOIN_S: Final = 10.0
_GIVE_UP_MARGIN_S: Final = 1.0  # at shutdown, busy retries stop this long before the join does
_RETRY_FIRST_S: Final = 0.05  # backoff after a busy store: doubles up to _RETRY_MOST_S, jittered
_RETRY_MOST_S: Final = 2.0
# The run row is upserted first in the same transaction, so its pk is there to refer to.
_INSERT_START: Final = (
    f"INSERT OR IGNORE INTO {s.RUN_STARTS} ({s.SPAN_RUN_PK}, {s.SPAN_ID}, {s.SPAN_NAME}, "
    f"{s.SPAN_START_NS}, {s.SPAN_ATTRIBUTES}) "
    f"SELECT {s.RUN_PK}, ?, ?, ?, ? FROM {s.RUNS} WHERE {s.RUN_ID} = ?"
)
_ABANDONED: list[sqlite3.Connection] = []  # inherited over fork: closing them would hurt the parent


class _Extra(tuple[Any, ...]):
    """A ``schema.SpanExtra`` in the queue (its own type: rows are the queue's plain tuples)."""

    __slots__ = ()


class _RunStart:
    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span


# The end of a run whose root finished without error, events or links is queued as a plain
# tuple: its span row and the four attributes its run row needs (``_span_rows.ended_run_rows``),
# from which the writer makes that row. Strings and ints only, like a span row, so the garbage
# collector stops tracking it: a span, a dict or a tuple subclass per queued run would have every
# collection of the application walk them all.
_RUN_END_WIDTH: Final = 5


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def _call_if_alive(ref: weakref.WeakMethod[Callable[[], None]]) -> Callable[[], None]:
    def call() -> None:
        method = ref()
        if method is not None:
            method()

    return call


_CREATING_SWITCH_INTERVAL: Final = 0.0002
# While stores are being created: how many, the interval to put back after the last and the one
# set (as the interpreter keeps it, in whole microseconds).
_creating_lock = threading.Lock()
_creating = 0
_lowered: tuple[float, float] | None = None


@contextlib.contextmanager
def _prompt_gil_turns() -> Iterator[None]:
    """Ask for the GIL back sooner while the writer creates a store.

    Each of the statements that create a store gives the GIL up and, while the application runs
    Python, waits up to the interpreter's switch interval (5 ms) to get it back: a hundred and
    more of them made the first spans of a new store reach the disk seconds late. For those few
    milliseconds the interval is shortened, then put back unless someone else changed it.
    """
    global _creating, _lowered
    with _creating_lock:
        _creating += 1
        if _creating == 1:
            before = sys.getswitchinterval()
            sys.setswitchinterval(min(before, _CREATING_SWITCH_INTERVAL))
            _lowered = (before, sys.getswitchinterval())
    try:
        yield
    finally:
        with _creating_lock:
            _creating -= 1
            if _creating == 0:
                _restore_switch_interval()


def _restore_switch_interval() -> None:
    global _lowered
    lowered, _lowered = _lowered, None
    if lowered is not None and sys.getswitchinterval() == lowered[1]:
        sys.setswitchinterval(lowered[0])


def _after_fork_in_child() -> None:
    # A child forked while a store was being created has no writer thread to put it back.
    global _creating, _creating_lock
    _creating_lock = threading.Lock()
    _creating = 0
    _restore_switch_interval()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _needs_schema_work(path: pathlib.Path) -> bool:
    """Whether opening ``path`` for writing will create or migrate a store (or may: when in
    doubt, yes). Reads the file's version without locking or creating anything."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return True
        conn = sqlite3.connect(s.ro_uri(path, immutable=True), uri=True)
        try:
            return s.version_of(conn) != s.SCHEMA_VERSION
        finally:
            conn.close()
    except (sqlite3.Error, OSError, ValueError):
        return True


class SQLiteSpanProcessor(SpanProcessor):
    """Writes the spans of spanflow runs into a SQLite store from a background thread.

    Args:
        path: the store file; created with its parent directories when the first run starts.
        flush_interval: longest wait, in seconds, before queued spans are committed (<= 0.5).
        max_queue: spans held in memory at most; beyond it new spans are dropped and counted
            (a dropped root span still queues its run row, so the run does not read crashed).
        service_name: recorded on runs whose resource has no ``service.name``.
        busy_timeout: seconds one write waits for another process's lock before it is retried
            (with backoff, for as long as the process lives: a busy store loses nothing).
    """

    #: ``on_start`` and ``on_end`` contain their own failures: spanflow calls them directly.
    never_raises: Final = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        service_name: str | None = None,
        redactor: Scrubber | None = None,
        busy_timeout: float = s.BUSY_TIMEOUT_S,
    ) -> None:
        if not 0 < flush_interval <= 0.5:
            raise ConfigurationError(
                "flush_interval must be in (0, 0.5] seconds so every finished span reaches "
                f"the store within half a second; got {flush_interval!r}"
            )
        if max_queue < 1:
            raise ConfigurationError(f"max_queue must be at least 1; got {max_queue!r}")
        if not busy_timeout > 0:
            raise ConfigurationError(f"busy_timeout must be positive seconds; got {busy_timeout!r}")
        self._busy_timeout = busy_timeout
        self._path = pathlib.Path(path)
        self._redactor: Scrubber = redactor or Redactor()
        self._interval = flush_interval
        self._max_queue = max_queue
        self._service = service_name
        self._closed = False
        self._disabled = False
        if _needs_schema_work(self._path):
            # The writer creates or migrates the store when the first run starts: load
            # sqlite-utils (and numpy under it, ~100 ms) now, so its import does not eat into
            # the half second a finished span has to reach the disk. A current store never
            # loads it.
            import sqlite_utils  # noqa: F401
        self._reset_process_state()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=_call_if_alive(ref))

    def _reset_process_state(self) -> None:
        self._stats = dict.fromkeys(
            (
                "spans_written",
                "spans_dropped",
                "spans_failed",
                "write_errors",
                "write_retries",
                "runs_written",
            ),
            0,
        )
        self._queue: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._writer = BatchWriter()
        self._rows = RowMaker()
        self._active: dict[int, None] = {}  # runs whose root started here and has not ended
        # Other known runs, oldest first, capped. An OrderedDict: a plain dict's oldest key is
        # found by skipping every slot its deletions left, which grows with the run rate.
        self._recent: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._pending: dict[int, Span] = {}  # parentless spans that may yet become run roots
        self._dropping = False
        self._stopping = self._closed
        self._logged: set[str] = set()
        self._next_open = 0.0
        self._held: list[Any] = []  # a batch the store was too busy for, written first
        self._retry_at = 0.0
        self._backoff = 0.0
        self._give_up_at = float("inf")

    def _after_fork(self) -> None:
        # The child has no writer thread and must not use the parent's connection; the spans
        # still queued are the parent's to write.
        if self._conn is not None:
            _ABANDONED.append(self._conn)
        self._reset_process_state()

    @property
    def path(self) -> pathlib.Path:
        """The store file this processor writes to."""
        return self._path

    def stats(self) -> dict[str, int]:
        """Counters of this process.

        ``spans_written``, ``runs_written``; ``spans_dropped`` (queue full); ``spans_failed``
        (spans lost to database errors that waiting cannot cure: full disk, read-only or damaged
        file, or a store still locked when shutdown ran out of time); ``write_errors`` (write
        attempts that failed, busy or not); ``write_retries`` (batches written again later
        because another process held the store longer than ``busy_timeout``);
        ``queue_size`` (including a batch waiting for its retry); ``disabled`` (1 when the file
        at ``path`` was refused).
        """
        with self._lock:
            counters = dict(self._stats)
        queued = len(self._queue) + len(self._held)
        return {**counters, "queue_size": queued, "disabled": int(self._disabled)}

    # -- application threads -------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Queue the run row of a run's root span so the run is listed while it runs."""
        if self._closed or self._disabled:
            return
        try:
            if type(span) in SDK_SPANS:  # fields, not properties: see _span_rows
                ctx, parent, raw = span._context, span._parent, span._attributes
                attrs = raw._dict if type(raw) is BoundedAttributes else attributes(span)
                if ctx is None:
                    return
                tid, top = ctx[0], parent is None or parent[2]
            else:
                ctx, parent, attrs = span.get_span_context(), span.parent, attributes(span)
                if ctx is None:
                    return
                tid, top = ctx.trace_id, parent is None or parent.is_remote
            if RUN_ID in attrs:
                if parent is None:
                    self._active[tid] = None
                    self._enqueue_start(span)
                else:
                    self._remember(tid)
            elif top and tid not in self._pending and len(self._pending) < _MAX_PENDING:
                # The run id is often set just after start: the writer looks again shortly.
                self._pending[tid] = span
        except Exception:
            self._log_once("on_start", "spanflow store: cannot register a span", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished span of a run; spans of traces that are not runs are ignored."""
        if self._closed:
            return
        try:
            if type(span) in SDK_SPANS:  # fields, not properties: see _span_rows
                ctx, parent, raw = span._context, span._parent, span._attributes
                attrs = raw._dict if type(raw) is BoundedAttributes else attributes(span)
                if ctx is None:
                    return
                tid, top = ctx[0], parent is None or parent[2]
            else:
                ctx, parent, attrs = span.context, span.parent, attributes(span)
                if ctx is None:
                    return
                tid, top = ctx.trace_id, parent is None or parent.is_remote
            root = False
            if RUN_ID in attrs:
                root = parent is None
                if root:
                    self._active.pop(tid, None)
                if tid not in self._active and tid not in self._recent:
                    self._remember(tid)
            elif tid not in self._active and tid not in self._recent and not self._adopt(tid):
                if top and tid in self._pending:
                    self._forget_pending(tid, ctx)
                return
            if top and tid in self._pending:
                self._forget_pending(tid, ctx)
            if self._disabled:
                self._count("spans_failed")
            elif len(self._queue) >= self._max_queue:
                self._drop()
                if root:
                    # The span is lost but not its run's end: without it the run reads crashed.
                    self._enqueue(_Extra((tid, "", None, None, run_row(span, attrs, ended=True))))
            else:
                row = self._rows.row(span, ctx, attrs)
                self._enqueue(row)
                evts = events(span)
                lnks = links(span)
                if root and not (evts or lnks) and row[5] != "ERROR":
                    # The run row (host, process, service) is the writer's to make.
                    get = attrs.get
                    name, entry = get(STEP_NAME), get(WORKFLOW_ENTRYPOINT)
                    self._queue.append((row, name, entry, get(WORKFLOW_FILE), get(REPLAY_OF)))
                elif evts or lnks or root:
                    self._queue.append(_Extra(span_extra(span, attrs, row, evts, lnks)))
        except Exception:
            self._log_once("on_end", "spanflow store: cannot queue a span", exc_info=True)

    def _enqueue(self, item: object) -> None:
        q = self._queue
        q.append(item)
        if self._thread is None:
            self._start_thread()
        elif len(q) >= _WAKE_AT and not self._wake.is_set():
            self._wake.set()

    def _enqueue_start(self, span: Span) -> None:
        if len(self._queue) < self._max_queue:  # else the root's end still writes the run
            self._enqueue(_RunStart(span))

    def _remember(self, tid: int) -> None:
        recent = self._recent
        if tid in recent:
            return
        # No lock: each OrderedDict call is atomic under the GIL, and threads trimming at the
        # same time at worst keep a few runs fewer.
        recent[tid] = None
        while len(recent) > _RECENT_RUNS:
            try:
                recent.popitem(last=False)
            except KeyError:
                break

    def _adopt(self, tid: int) -> bool:
        """Whether the trace's pending parentless span has meanwhile become part of a run."""
        cand = self._pending.get(tid)
        if cand is None or RUN_ID not in attributes(cand):
            return False
        self._promote(tid, cand)
        return True

    def _promote(self, tid: int, span: Span) -> None:
        # Known first, popped second: a concurrent on_end never finds the run in neither place.
        if span.parent is None:
            self._active[tid] = None
        else:
            self._remember(tid)
        if self._pending.pop(tid, None) is not None and span.parent is None:
            self._enqueue_start(span)

    def _promote_pending(self) -> None:
        for tid, span in list(self._pending.items()):
            if span.end_time is None and RUN_ID in attributes(span):
                self._promote(tid, span)

    def _forget_pending(self, tid: int, ctx: SpanContext) -> None:
        cand = self._pending.get(tid)
        # The ended copy of an SDK span shares the live span's context object.
        if cand is not None and (
            getattr(cand, "_context", None) is ctx or cand.get_span_context().span_id == ctx.span_id
        ):
            self._pending.pop(tid, None)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _drop(self) -> None:
        with self._lock:
            self._stats["spans_dropped"] += 1
            first, self._dropping = not self._dropping, True
        if first:
            logger.warning(
                "spanflow store: queue full (%d spans); dropping spans until %s catches up",
                self._max_queue,
                self._path,
            )

    def _log_once(self, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            logger.error(message, *args, exc_info=exc_info)

    # -- control -------------------------------------------------------------------------------

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(
                target=self._run, name="spanflow-sqlite-writer", daemon=True
            )
            self._thread.start()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Block until every span that ended before the call is committed or counted as lost.

        Returns:
            False if that did not happen within ``timeout_millis``.
        """
        if self._closed:
            return True
        self._promote_pending()
        if self._thread is None:
            return True
        marker = _Flush()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Write everything queued, stop the writer thread and close the connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = self._stopping = True
            self._give_up_at = time.monotonic() + _SHUTDOWN_JOIN_S - _GIVE_UP_MARGIN_S
            thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(_SHUTDOWN_JOIN_S)
            if thread.is_alive():
                logger.warning("spanflow store: %s still busy at shutdown", self._path)

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            began = time.monotonic()
            while True:
                # A round starts one interval after the previous one began, or at once if that
                # took longer: a span waits at most about an interval plus two rounds.
                due = max(began + self._interval, self._retry_at if self._held else 0.0)
                self._wake.wait(max(0.0, due - time.monotonic()))
                began = time.monotonic()
                self._wake.clear()
                stopping = self._stopping
                try:
                    if self._conn is None and not self._disabled:
                        self._open(final=stopping)
                    self._promote_pending()
                    if self._conn is not None or self._disabled or stopping:
                        self._drain()
                except Exception:
                    # A bug must not stop the thread: later spans would pile up unwritten.
                    self._log_once("writer", "spanflow store: writer failed", exc_info=True)
                if stopping and not self._held:
                    return
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _open(self, *, final: bool) -> None:
        if time.monotonic() < self._next_open and not final:
            return
        try:
            creating = not self._path.exists() or self._path.stat().st_size == 0
            with _prompt_gil_turns() if creating else contextlib.nullcontext():
                self._conn = s.open_for_writing(self._path, busy_timeout=self._busy_timeout)
        except (sqlite3.Error, OSError) as exc:
            # Possibly passing (locked, no space yet, directory not mounted): try again later.
            self._next_open = time.monotonic() + _REOPEN_DELAY_S
            self._log_once(
                f"open {getattr(exc, 'sqlite_errorname', '') or type(exc).__name__}",
                "spanflow store: cannot open %s (%s); retrying",
                self._path,
                exc,
            )
        except Exception as exc:
            self._disabled = True
            logger.error(
                "spanflow store disabled: %s", exc, exc_info=not isinstance(exc, StoreError)
            )
            if self._held:
                held, self._held = self._held, []
                self._process(held)

    def _drain(self) -> None:
        # Only what is queued now: spans arriving meanwhile wait for the next round (woken
        # early once _WAKE_AT are queued), so batches stay large under load and commits few.
        q = self._queue
        left = len(q) if not self._stopping else -1
        if self._held:
            if time.monotonic() < self._retry_at and not self._stopping:
                return
            # The held batch goes first, topped up with what arrived meanwhile: one transaction.
            n = min(len(q), max(0, _BATCH - len(self._held)))
            n = n if left < 0 else min(n, left)
            batch, self._held = self._held, []
            batch += map(operator.call, itertools.repeat(q.popleft, n))
            left = max(left - n, 0) if left > 0 else left
            if not self._process(batch):
                return
        while q and left != 0:
            # Only this thread pops, so len(q) items are there to take.
            n = min(len(q), _BATCH) if left < 0 else min(left, _BATCH)
            batch = list(map(operator.call, itertools.repeat(q.popleft, n)))
            left = max(left - n, 0) if left > 0 else left
            if not self._process(batch):
                return
        if self._dropping and not q:
            self._dropping = False
            logger.warning(
                "spanflow store: caught up; %d spans dropped so far", self._stats["spans_dropped"]
            )

    def _process(self, batch: list[Any]) -> bool:
        """Write one batch; False when the store was busy and the batch is held for a retry."""
        rows: list[s.SpanRow] = []
        extras: list[s.SpanExtra] = []
        runs: list[tuple[Any, ...]] = []
        starts: list[tuple[Any, ...]] = []
        ended_runs: list[tuple[Any, ...]] = []
        flushes: list[_Flush] = []
        done = True
        try:
            rows = [item for item in batch if type(item) is tuple]
            plain = len(rows)
            ended = [item for item in rows if len(item) == _RUN_END_WIDTH]
            if ended:
                rows = [item for item in rows if len(item) != _RUN_END_WIDTH]
                # Rows complete with their service: no further pass over them before the insert.
                ended_runs = ended_run_rows(ended, self._service)
            for item in batch if plain < len(batch) else ():
                # The rarer items: events and links, run starts, flush markers.
                kind = type(item)
                if kind is _Extra:
                    extras.append(item)
                elif kind is _RunStart:
                    # Read now, not at start: names are often set just after a span starts.
                    # The live span: what the application set since its start is not scrubbed yet,
                    # and it may set more while this thread reads, so the read is of a copy (one
                    # C call under the GIL; iterating the live dict could meet a change).
                    live = dict(attributes(item.span))
                    attrs = self._redactor.scrub_attributes(live) or live
                    runs.append(self._with_service(run_row(item.span, attrs, ended=False)))
                    starts.append(start_row(item.span, attrs))
                elif kind is _Flush:
                    flushes.append(item)
            runs += ended_runs  # after the starts: a run's end row wins over its start row
            if not (rows or extras or runs):
                return True
            if self._conn is None:
                self._count("spans_failed", len(rows))
                return True
            try:
                done = self._write(rows, extras, runs, starts)
            except Exception:
                self._count("spans_failed", len(rows))
                raise
            if not done:
                self._hold(batch)
            return done
        finally:
            # A flush waits for the spans queued before it: held with them, set once written.
            for marker in flushes if done else ():
                marker.done.set()

    def _hold(self, batch: list[Any]) -> None:
        self._held = batch
        self._backoff = min(_RETRY_MOST_S, max(_RETRY_FIRST_S, self._backoff * 2))
        # Jitter, so writers that met at the lock do not all come back at the same moment.
        self._retry_at = time.monotonic() + self._backoff * random.uniform(0.5, 1.5)
        self._count("write_retries")

    def _write(
        self,
        rows: list[s.SpanRow],
        extras: list[s.SpanExtra],
        runs: list[tuple[Any, ...]],
        starts: Sequence[tuple[Any, ...]] = (),
    ) -> bool:
        """Commit one batch; False if the store stayed busy (nothing lost: try again later)."""
        conn = self._conn
        assert conn is not None
        if self._service is not None:  # the runs come with theirs (see _process)
            extras = [e if e[4] is None else (*e[:4], self._with_service(e[4])) for e in extras]
        for attempt in range(2):
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    written = self._writer.write(conn, rows, extras, runs)
                    if starts:
                        conn.executemany(_INSERT_START, [(*st[1:], st[0]) for st in starts])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    self._writer.forget()
                    raise
                self._count("spans_written", len(rows))
                self._count("runs_written", written)
                self._backoff = 0.0
                return True
            except (UnicodeError, sqlite3.InterfaceError, OverflowError) as exc:
                # A value SQLite cannot bind (a lone surrogate, say): repair the batch once.
                rows = [(row[0], *(_clean(v) for v in row[1:10]), row[10]) for row in rows]
                extras = [(e[0], e[1], *(_clean(v) for v in e[2:])) for e in extras]
                runs = [tuple(_clean(v) for v in run) for run in runs]
                starts = [tuple(_clean(v) for v in st) for st in starts]
                kind, detail, retry = "unbindable value", repr(exc), attempt == 0
            except sqlite3.Error as exc:
                # Locked or busy passes: the batch waits for a later round. Full, read-only,
                # corrupt do not: the spans are counted as lost.
                kind = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
                detail = str(exc)
                if _is_busy(kind, detail) and time.monotonic() < self._give_up_at:
                    self._count("write_errors")
                    self._log_once(
                        "busy",
                        "spanflow store: %s is busy (%s: %s); retrying with backoff, "
                        "nothing is dropped",
                        self._path,
                        kind,
                        detail,
                    )
                    return False
                retry = False
            self._count("write_errors")
            self._log_once(
                kind, "spanflow store: writing to %s failed (%s: %s)", self._path, kind, detail
            )
            if not retry:
                break
        self._count("spans_failed", len(rows))
        return True

    def _with_service(self, run: tuple[Any, ...]) -> tuple[Any, ...]:
        i = RUN_ROW_SERVICE
        if self._service is None or run[i] is not None:
            return run
        return (*run[:i], self._service, *run[i + 1 :])


def _is_busy(kind: str, detail: str) -> bool:
    return kind.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in detail


def _clean(value: Any) -> Any:
    """``value`` made bindable: lone surrogates replaced, huge ints as text, tuples recursed."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return str(value)
    if isinstance(value, tuple):
        return tuple(_clean(v) for v in value)
    return value
