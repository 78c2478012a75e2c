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

import importlib as _importlib
from typing import TYPE_CHECKING
from typing import Any as _Any

from . import attributes
from .errors import (
    ConfigurationError,
    RemoteStepError,
    ReplayError,
    SpanflowError,
    StepTimeout,
    StoreError,
    UnknownRunError,
)

if TYPE_CHECKING:
    from .context import current_run_id, with_context
    from .decorators import step, workflow
    from .distributed.executors import RayExecutor
    from .fanout import map, map_sync, parallel, parallel_sync
    from .genai import record_llm_usage
    from .replayer.runner import replay
    from .routing import aroute, decision, route
    from .runtime import configure, flush, stats
    from .state import State

# The recording runtime (OpenTelemetry SDK, pydantic models, anyio) loads on first use, so tools
# that only read stores (the CLI, the web viewer) start fast and never import it.
_LAZY = {
    "current_run_id": ".context",
    "with_context": ".context",
    "step": ".decorators",
    "workflow": ".decorators",
    "RayExecutor": ".distributed.executors",
    "record_llm_usage": ".genai",
    "map": ".fanout",
    "map_sync": ".fanout",
    "parallel": ".fanout",
    "parallel_sync": ".fanout",
    "replay": ".replayer.runner",
    "decision": ".routing",
    "aroute": ".routing",
    "route": ".routing",
    "configure": ".runtime",
    "flush": ".runtime",
    "stats": ".runtime",
    "State": ".state",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spanflow' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "aroute",
    "attributes",
    "configure",
    "current_run_id",
    "decision",
    "flush",
    "map",
    "map_sync",
    "parallel",
    "parallel_sync",
    "record_llm_usage",
    "replay",
    "route",
    "stats",
    "step",
    "with_context",
    "workflow",
]
