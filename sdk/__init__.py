"""spanflow: observability-first orchestration for Python AI pipelines.

Decorate the functions you have; every call becomes an OpenTelemetry span with its inputs,
outputs, errors, retries and state changes, stored locally and replayable::

    import spanflow

    @spanflow.step
    def classify(text: str) -> str: ...

    @spanflow.workflow
    def support(text: str) -> str:
        return classify(text)
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import attributes
from .context import current_run_id, with_context
from .decorators import step, workflow
from .errors import (
    ConfigurationError,
    RemoteStepError,
    ReplayError,
    SpanflowError,
    StepTimeout,
    StoreError,
    UnknownRunError,
)
from .executors import RayExecutor
from .genai import record_llm_usage
from .parallel import map, parallel
from .replay import replay
from .routing import decision, route
from .runtime import configure, flush, stats
from .state import State

__all__ = [
    "ConfigurationError",
    "RayExecutor",
    "RemoteStepError",
    "ReplayError",
    "SpanflowError",
    "State",
    "StepTimeout",
    "StoreError",
    "UnknownRunError",
    "__version__",
    "attributes",
    "configure",
    "current_run_id",
    "decision",
    "flush",
    "map",
    "parallel",
    "record_llm_usage",
    "replay",
    "route",
    "stats",
    "step",
    "with_context",
    "workflow",
]
