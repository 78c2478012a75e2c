"""Records of the store: what a reader gets back, and the pydantic models behind the writer.

Two shapes of the same records. ``RunData``/``SpanData`` (with ``EventData``/``LinkData``) are
plain read-only classes with ``__slots__`` built straight from the rows, for readers that must start fast (the
``spanflow`` command imports neither pydantic nor anything of the recording runtime).
``RunRecord``/``SpanRecord``/``EventRecord``/``LinkRecord``/``GcResult`` are the validating
pydantic models the writer, the web viewer and importers use; they live in ``_models`` and load
on first use from here, so ``from spanflow.exporters.records import RunRecord`` works as before.
Both shapes have the same field names: ``RUN_FIELDS`` names a run's, ``SPAN_FIELDS`` a span's.

Also the small amount of process identity a run needs so a reader can tell a run whose process
died (``crashed``) from one that is still going: host name, pid and the process start time.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import os
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias

from spanflow.attributes import ERROR_TYPE, EXCEPTION_EVENT, EXCEPTION_MESSAGE, EXCEPTION_TYPE

if TYPE_CHECKING:
    from ._models import (
        EventRecord as EventRecord,
    )
    from ._models import (
        GcResult as GcResult,
    )
    from ._models import (
        LinkRecord as LinkRecord,
    )
    from ._models import (
        RunRecord as RunRecord,
    )
    from ._models import (
        RunStatus as RunStatus,
    )
    from ._models import (
        SpanIdHex as SpanIdHex,
    )
    from ._models import (
        SpanRecord as SpanRecord,
    )
    from ._models import (
        SpanStatus as SpanStatus,
    )
    from ._models import (
        TraceIdHex as TraceIdHex,
    )

#: A run or a span as either reader gives it: the plain records and the pydantic ones have the
#: same fields, and the CLI draws both.
AnyRun: TypeAlias = "RunData | RunRecord"
AnySpan: TypeAlias = "SpanData | SpanRecord"

_MODEL_NAMES: Final = frozenset(
    (
        "EventRecord",
        "GcResult",
        "LinkRecord",
        "RunRecord",
        "RunStatus",
        "SpanIdHex",
        "SpanRecord",
        "SpanStatus",
        "TraceIdHex",
    )
)


def __getattr__(name: str) -> Any:
    # pydantic costs a reader ~60 ms of start-up: load the models only when someone asks.
    if name in _MODEL_NAMES:
        value = getattr(importlib.import_module("._models", __package__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Record:
    """A read-only record with ``__slots__``: set once in ``__init__``, compared by value.

    Plain classes rather than dataclasses: ``dataclasses`` (with ``inspect``) costs a reader
    ~10 ms of start-up. ``_fields`` names the fields in ``__init__`` order.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _init(self, *values: Any) -> None:
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())


class EventData(_Record):
    """A span event as read from the store (see ``EventRecord``)."""

    __slots__ = ("attributes", "name", "time_ns")
    _fields = ("name", "time_ns", "attributes")
    name: str
    time_ns: int
    attributes: dict[str, Any]

    def __init__(self, name: str, time_ns: int, attributes: dict[str, Any]) -> None:
        self._init(name, time_ns, attributes)


class LinkData(_Record):
    """A span link as read from the store (see ``LinkRecord``)."""

    __slots__ = ("attributes", "span_id", "trace_id")
    _fields = ("trace_id", "span_id", "attributes")
    trace_id: str
    span_id: str
    attributes: dict[str, Any]

    def __init__(self, trace_id: str, span_id: str, attributes: dict[str, Any]) -> None:
        self._init(trace_id, span_id, attributes)


class SpanData(_Record):
    """A stored span as read from the store (see ``SpanRecord``)."""

    __slots__ = (
        "attributes",
        "end_ns",
        "events",
        "kind",
        "links",
        "name",
        "parent_id",
        "resource",
        "run_id",
        "span_id",
        "start_ns",
        "status",
        "status_message",
    )
    _fields = (
        "run_id",
        "span_id",
        "parent_id",
        "name",
        "kind",
        "status",
        "status_message",
        "start_ns",
        "end_ns",
        "attributes",
        "events",
        "links",
        "resource",
    )
    run_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    status: str
    status_message: str | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: tuple[EventData, ...]
    links: tuple[LinkData, ...]
    resource: dict[str, Any]

    def __init__(
        self,
        run_id: str,
        span_id: str,
        parent_id: str | None,
        name: str,
        kind: str,
        status: str,
        status_message: str | None,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, Any],
        events: tuple[EventData, ...],
        links: tuple[LinkData, ...],
        resource: dict[str, Any],
    ) -> None:
        self._init(
            run_id,
            span_id,
            parent_id,
            name,
            kind,
            status,
            status_message,
            start_ns,
            end_ns,
            attributes,
            events,
            links,
            resource,
        )

    @property
    def duration_ms(self) -> float:
        """Wall time of the span in milliseconds."""
        return (self.end_ns - self.start_ns) / 1e6


class RunData(_Record):
    """A run as read from the store (see ``RunRecord``): the run row with its times as datetimes."""

    __slots__ = (
        "attrs_version",
        "duration_ms",
        "ended_at",
        "entrypoint",
        "error",
        "error_count",
        "host",
        "id",
        "incomplete",
        "pid",
        "process_start",
        "replay_of",
        "service",
        "span_count",
        "started_at",
        "status",
        "workflow",
        "workflow_file",
    )
    _fields = (
        "id",
        "workflow",
        "entrypoint",
        "workflow_file",
        "status",
        "started_at",
        "ended_at",
        "duration_ms",
        "error",
        "replay_of",
        "service",
        "host",
        "pid",
        "process_start",
        "span_count",
        "error_count",
        "attrs_version",
        "incomplete",
    )
    id: str
    workflow: str | None
    entrypoint: str | None
    workflow_file: str | None
    status: str
    started_at: _dt.datetime
    ended_at: _dt.datetime | None
    duration_ms: float | None
    error: str | None
    replay_of: str | None
    service: str | None
    host: str | None
    pid: int | None
    process_start: int | None
    span_count: int
    error_count: int
    attrs_version: int | None
    #: No root span of this trace is stored (yet): the run was assembled from its other spans,
    #: as ``spanflow serve`` does with a trace whose root has not arrived.
    incomplete: bool

    def __init__(
        self,
        id: str,
        workflow: str | None,
        entrypoint: str | None,
        workflow_file: str | None,
        status: str,
        started_at: _dt.datetime,
        ended_at: _dt.datetime | None,
        duration_ms: float | None,
        error: str | None,
        replay_of: str | None,
        service: str | None,
        host: str | None,
        pid: int | None,
        process_start: int | None,
        span_count: int,
        error_count: int,
        attrs_version: int | None,
        incomplete: bool = False,
    ) -> None:
        self._init(
            id,
            workflow,
            entrypoint,
            workflow_file,
            status,
            started_at,
            ended_at,
            duration_ms,
            error,
            replay_of,
            service,
            host,
            pid,
            process_start,
            span_count,
            error_count,
            attrs_version,
            incomplete,
        )


#: Field names of a run, in ``RunData`` order (``RunRecord`` has the same ones).
RUN_FIELDS: Final = RunData._fields
#: Field names of a span, in ``SpanData`` order (``SpanRecord`` has the same ones).
SPAN_FIELDS: Final = SpanData._fields


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
    import socket  # only when a stored run is still running: most reads never need it

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
