"""Log records emitted while a step runs become events on that step's span.

A failed step then shows the warnings that led to it, in ``spanflow show``, the viewer and Jaeger
alike. spanflow hooks the log record factory rather than adding a handler: a handler on the root
logger would silence Python's last-resort stderr output for applications that configure none.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from . import attributes as attr
from .context import current_run

_MAX_MESSAGE = 2000
_installed = False


def install_log_capture() -> None:
    """Chain spanflow's hook in front of the current log record factory (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            _attach(record)
        except Exception:  # never let telemetry break logging
            logging.getLogger("spanflow").debug("spanflow: log capture failed", exc_info=True)
        return record

    logging.setLogRecordFactory(factory)


def _attach(record: logging.LogRecord) -> None:
    from .runtime import _runtime, count

    rt = _runtime
    if rt is None or not rt.enabled:
        return
    level = rt.settings.log_level
    if level is None or record.levelno < level or record.name.startswith("spanflow"):
        return
    if current_run() is None:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    message, _ = rt.settings.redactor.redact_text(record.getMessage()[:_MAX_MESSAGE])
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
