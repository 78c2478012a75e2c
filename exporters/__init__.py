"""Where spans go: the local SQLite store (writer and reader) and its records."""

from __future__ import annotations

from .records import EventRecord, GcResult, LinkRecord, RunRecord, SpanRecord
from .schema import SCHEMA_VERSION
from .sqlite_store import SQLiteSpanProcessor
from .store import Store

__all__ = [
    "SCHEMA_VERSION",
    "EventRecord",
    "GcResult",
    "LinkRecord",
    "RunRecord",
    "SQLiteSpanProcessor",
    "SpanRecord",
    "Store",
]
