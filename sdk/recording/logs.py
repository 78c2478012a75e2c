"""Log records emitted while a step runs become events on that step's span.

A failed step then shows the warnings that led to it, in ``spanflow show``, the viewer and Jaeger
alike. spanflow hooks the log record factory rather than adding a handler: a handler on the root
logger would silence Python's last-resort stderr output for applications that configure none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from .. import attributes as attr
from .._stats import count
from ..context import current_run

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["install_log_capture"]

_MAX_MESSAGE = 2000
_installed = False


def install_log_capture(settings: Callable[[], Settings | None]) -> None:
    """Chain spanflow's hook in front of the current log record factory (once per process).

    ``settings`` gives the live settings at each record (None while recording is off).
    """
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            _attach(record, settings())
        except Exception:  # never let telemetry break logging
            logging.getLogger("spanflow").debug("spanflow: log capture failed", exc_info=True)
        return record

    logging.setLogRecordFactory(factory)


def _attach(record: logging.LogRecord, settings: Settings | None) -> None:
    if settings is None:
        return
    level = settings.log_level
    if level is None or record.levelno < level or record.name.startswith("spanflow"):
        return
    if current_run() is None:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    message = settings.redactor.redact_cut(record.getMessage(), _MAX_MESSAGE)
    attrs: dict[str, str | int] = {
        attr.LOG_LEVEL: record.levelname,
        attr.LOG_LOGGER: record.name,
        attr.LOG_MESSAGE: message,
        "code.lineno": record.lineno,
        "code.filepath": record.pathname,
    }
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        attrs[attr.EXCEPTION_TYPE] = type(exc).__name__
    span.add_event(attr.LOG_EVENT, attrs)
    count("log_events")
