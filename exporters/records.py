"""Records of the store: the pydantic models the writer, the reader and the viewer share.

Also the small amount of process identity a run needs so a reader can tell a run whose process
died (``crashed``) from one that is still going: host name, pid and the process start time.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, computed_field
from spanflow.attributes import ERROR_TYPE, EXCEPTION_EVENT, EXCEPTION_MESSAGE, EXCEPTION_TYPE

TraceIdHex = Annotated[str, StringConstraints(to_lower=True, pattern=r"^[0-9a-fA-F]{32}$")]
SpanIdHex = Annotated[str, StringConstraints(to_lower=True, pattern=r"^[0-9a-fA-F]{16}$")]
RunStatus = Literal["running", "ok", "failed", "crashed"]
SpanStatus = Literal["UNSET", "OK", "ERROR"]


class EventRecord(BaseModel):
    """A span event: an exception, a log line, a state note."""

    model_config = ConfigDict(frozen=True)

    name: str
    time_ns: int
    attributes: dict[str, Any] = {}


class LinkRecord(BaseModel):
    """A link from a span to a span of another (or the same) trace."""

    model_config = ConfigDict(frozen=True)

    trace_id: TraceIdHex
    span_id: SpanIdHex
    attributes: dict[str, Any] = {}


class SpanRecord(BaseModel):
    """One finished span of a run, as stored."""

    model_config = ConfigDict(frozen=True)

    run_id: TraceIdHex
    span_id: SpanIdHex
    parent_id: SpanIdHex | None = None
    name: str
    kind: str = "INTERNAL"
    status: SpanStatus = "UNSET"
    status_message: str | None = None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = {}
    events: list[EventRecord] = []
    links: list[LinkRecord] = []
    resource: dict[str, Any] = {}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_ms(self) -> float:
        """Wall time of the span in milliseconds."""
        return (self.end_ns - self.start_ns) / 1e6


class RunRecord(BaseModel):
    """One run (a trace whose root is a spanflow workflow or a lone step)."""

    model_config = ConfigDict(frozen=True)

    id: TraceIdHex
    workflow: str | None = None
    entrypoint: str | None = None
    workflow_file: str | None = None
    status: RunStatus
    started_at: _dt.datetime
    ended_at: _dt.datetime | None = None
    duration_ms: float | None = None
    error: str | None = None
    replay_of: str | None = None
    service: str | None = None
    host: str | None = None
    pid: int | None = None
    process_start: int | None = None
    span_count: int = 0
    error_count: int = 0
    attrs_version: int | None = None


class GcResult(BaseModel):
    """What :meth:`Store.gc` removed and how big the store was before and after."""

    model_config = ConfigDict(frozen=True)

    runs_deleted: int
    spans_deleted: int
    runs_kept: int
    bytes_before: int
    bytes_after: int


def error_text(
    description: str | None,
    attributes: Mapping[str, Any],
    events: Iterable[tuple[str, Mapping[str, Any]]] = (),
) -> str:
    """How a failed span's error reads: ``<ExceptionType>: <message>``.

    Taken from the last ``exception`` event, else from ``error.type`` and the status
    description. Like a traceback's last line, builtins and ``__main__`` types are unqualified.

    Args:
        description: the span status description.
        attributes: the span attributes.
        events: ``(name, attributes)`` of the span events, oldest first.
    """
    for name, ev in reversed(list(events)):
        if name == EXCEPTION_EVENT and ev.get(EXCEPTION_TYPE):
            etype = str(ev[EXCEPTION_TYPE]).removeprefix("builtins.").removeprefix("__main__.")
            return f"{etype}: {ev.get(EXCEPTION_MESSAGE, '')}"
    etype = str(attributes.get(ERROR_TYPE) or "")
    desc = description or ""
    if etype and not desc.startswith(f"{etype}:"):
        return f"{etype}: {desc}"
    return desc or "error"


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def ns_to_datetime(ns: int) -> _dt.datetime:
    """Nanoseconds since the epoch as an aware UTC datetime (microsecond precision)."""
    return _EPOCH + _dt.timedelta(microseconds=ns // 1000)


def datetime_to_ns(value: _dt.datetime) -> int:
    """An aware datetime (naive ones are taken as UTC) as nanoseconds since the epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


@functools.lru_cache(maxsize=1)
def host_name() -> str:
    """This machine's host name, as recorded on runs."""
    return socket.gethostname()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a Linux process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = raw.rpartition(")")[2].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """An opaque start time of process ``pid`` (Linux); None where it cannot be known."""
    stat = _proc_stat(pid) if sys.platform.startswith("linux") else None
    return stat[1] if stat else None


def process_is_alive(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` on this host is still the one that started at ``started``.

    A zombie, a missing pid or a pid reused by a later process (different start time) count as
    dead. Where liveness cannot be checked safely the process is assumed alive.
    """
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return started is None or stat[1] == started
    if sys.platform == "win32":
        # os.kill(pid, 0) would terminate the process on Windows.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
