"""How a failure is recorded on a span, the same way for a step, an attempt, a workflow and a
remote worker: an OTel ``exception`` event, ``error.type`` and an ERROR status, all redacted
before they are cut to size, and a traceback that leaves out spanflow's own frames."""

from __future__ import annotations

import concurrent.futures
import traceback
from pathlib import Path

import tenacity
from opentelemetry.trace import Span, Status, StatusCode

from .. import attributes as attr
from ..values.redact import Redactor

__all__ = [
    "MAX_MESSAGE",
    "MAX_STATUS",
    "MAX_TRACEBACK",
    "format_user_traceback",
    "message_of",
    "record_exception",
    "record_failure",
    "type_name",
]

MAX_TRACEBACK = 16_000
MAX_MESSAGE = 4_000
MAX_STATUS = 1_000

# Frames of spanflow's wrappers and of tenacity's retry loop (plus the Future it re-raises from)
# explain nothing about the user's failure. Editable installs may reach spanflow through a link.
_SDK = Path(__file__).parent.parent
_HIDDEN_DIRS = tuple({str(_SDK), str(_SDK.resolve()), str(Path(tenacity.__file__).parent)})
_FUTURES_FILE = str(Path(concurrent.futures.__file__).parent / "_base.py")


def type_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``package.module.Error`` for the rest."""
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def message_of(exc: BaseException) -> str:
    """``str(exc)``, which user code may make raise: then a placeholder, never an exception."""
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def _visible(frames: traceback.StackSummary) -> list[traceback.FrameSummary]:
    kept: list[traceback.FrameSummary] = []
    previous_hidden = False
    for frame in frames:
        name = frame.filename or ""
        hidden = name.startswith(_HIDDEN_DIRS) or (previous_hidden and name == _FUTURES_FILE)
        if not hidden:
            kept.append(frame)
        previous_hidden = hidden
    return kept


def format_user_traceback(exc: BaseException) -> str:
    """The exception's traceback without spanflow's own wrapper frames; never raises."""
    try:
        te = traceback.TracebackException.from_exception(exc)
        seen: set[int] = set()
        pending = [te]
        while pending:
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            kept = _visible(current.stack)
            if kept:  # keep everything if the failure is inside spanflow itself
                current.stack = traceback.StackSummary.from_list(kept)
            pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
            pending.extend(current.exceptions or ())
        return "".join(te.format())
    except Exception:
        return f"{type(exc).__name__}: <traceback unavailable>"


def record_exception(
    span: Span, exc: BaseException, redactor: Redactor, *, escaped: bool = True
) -> None:
    """Add an OTel ``exception`` event for ``exc`` to ``span`` (a failure it may have absorbed)."""
    if not span.is_recording():
        return
    span.add_event(
        attr.EXCEPTION_EVENT,
        {
            attr.EXCEPTION_TYPE: type_name(exc),
            attr.EXCEPTION_MESSAGE: redactor.redact_cut(message_of(exc), MAX_MESSAGE),
            attr.EXCEPTION_STACKTRACE: redactor.redact_cut(
                format_user_traceback(exc), MAX_TRACEBACK, tail=True
            ),
            "exception.escaped": escaped,
        },
    )


def record_failure(span: Span, exc: BaseException, redactor: Redactor) -> None:
    """Record that ``exc`` ended ``span``: the event, ``error.type`` and the ERROR status."""
    if not span.is_recording():
        return
    record_exception(span, exc, redactor, escaped=True)
    span.set_attribute(attr.ERROR_TYPE, type_name(exc))
    status = redactor.redact_cut(f"{type(exc).__name__}: {message_of(exc)}", MAX_STATUS)
    span.set_status(Status(StatusCode.ERROR, status))
