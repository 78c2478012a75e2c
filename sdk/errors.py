"""All spanflow exceptions.

    Exception
     └── SpanflowError
          ├── ConfigurationError     a mistake in configure() or a decorator's options
          ├── StepTimeout            (also a TimeoutError) an attempt ran past timeout=
          ├── StoreError             a database that cannot be opened, read or is not ours
          │    └── UnknownRunError   no run with that id in the store
          ├── ReplayError            a run that cannot be replayed (entrypoint, arguments)
          └── RemoteStepError        a step that failed in another process or on another node
    BaseException
     └── StepRefused                a check may only serve this call from the recording, and cannot

Telemetry problems (a dead exporter, a full disk, an unserialisable value) are never raised:
they are logged on the ``spanflow`` logger and counted (``spanflow.stats()``).
"""

from __future__ import annotations


class SpanflowError(Exception):
    """Base class of every exception spanflow raises itself."""


class ConfigurationError(SpanflowError, ValueError):
    """A configuration mistake; the message says how to fix it."""


class StepTimeout(SpanflowError, TimeoutError):
    """An attempt of a step ran longer than its ``timeout=``."""


class StoreError(SpanflowError):
    """The store cannot be used: missing, not a spanflow store, newer schema, unreadable."""


class UnknownRunError(StoreError, LookupError):
    """No run with that id (or id prefix) in the store."""


class ReplayError(SpanflowError):
    """The run cannot be replayed: its entrypoint or its arguments cannot be rebuilt."""


class RemoteStepError(SpanflowError):
    """A step failed in a worker; carries the remote exception's type, message and traceback."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback


class StepRefused(BaseException):
    """``spanflow check`` may serve this step call only from the recording and cannot: today's
    code calls it with other inputs (a prompt that changed), or its recorded call failed.

    The call is not executed. Not an ``Exception`` on purpose: application code that catches
    ``Exception``, retries and fallbacks must not turn the refusal into a live model call.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
