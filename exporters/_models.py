"""The pydantic models of stored runs and spans, shared by the writer, the web viewer and
importers (they validate what they are given). Import them from ``spanflow.exporters.records``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, computed_field

__all__ = [
    "EventRecord",
    "GcResult",
    "LinkRecord",
    "RunRecord",
    "RunStatus",
    "SpanIdHex",
    "SpanRecord",
    "SpanStatus",
    "TraceIdHex",
]

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
    incomplete: bool = False


class GcResult(BaseModel):
    """What :meth:`Store.gc` removed and how big the store was before and after."""

    model_config = ConfigDict(frozen=True)

    runs_deleted: int
    spans_deleted: int
    runs_kept: int
    bytes_before: int
    bytes_after: int
