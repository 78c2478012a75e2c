"""What a remote step sends and gets back, and how its code and settings travel.

A :class:`Task` carries the function (by reference, or by value for a script's function), its
arguments, a W3C trace-context carrier with the run id and call path, and the caller's recording
settings (:class:`WorkerConfig`, sent as one cached blob). An :class:`Outcome` brings back the
value or the error as data (type, message, traceback), the worker's finished spans, token usage and
the State arguments as the step left them. Everything here pickles with the standard library.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import pickle
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..state import State
from ..values.redact import Redactor
from .wire import WireSpan

logger = logging.getLogger("spanflow")

PROPAGATOR = TraceContextTextMapPropagator()
# Carrier entries next to W3C traceparent/tracestate: without the run id, every step in a worker
# would start a run of its own; the call path numbers nested steps as in one process.
RUN_KEY = "spanflow-run-id"
PATH_KEY = "spanflow-call-path"
# A forked child keeps the nonce but not the pid: together they name one process.
_NONCE = os.urandom(8).hex()


def process_identity() -> tuple[int, str]:
    """This process, as tasks record their caller (pid alone repeats across machines)."""
    return (os.getpid(), _NONCE)


@dataclass(frozen=True)
class WorkerConfig:
    """The caller's recording settings, as the worker needs them."""

    key: str
    capture: frozenset[str]
    max_value_bytes: int
    max_state_bytes: int
    redactor: tuple[Any, ...]
    log_level: int | None
    resource: Mapping[str, Any]
    otlp: Mapping[str, Any] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent with every task: pickled once, and unpickled once per worker process.
        blob = _sent_configs.get(self.key)
        if blob is None:
            fields = tuple(getattr(self, f.name) for f in dataclasses.fields(self))
            blob = _sent_configs[self.key] = pickle.dumps(fields)
        return (_received_config, (self.key, blob))


_sent_configs: dict[str, bytes] = {}
_received_configs: dict[str, WorkerConfig] = {}


def _received_config(key: str, blob: bytes) -> WorkerConfig:
    config = _received_configs.get(key)
    if config is None:
        if len(_received_configs) >= 64:  # callers come and go; keep the recent ones
            _received_configs.clear()
        config = _received_configs[key] = WorkerConfig(*pickle.loads(blob))
    return config


@dataclass(eq=False)
class Task:
    """One call to run elsewhere; every field pickles (the caller's context stays home)."""

    target: Any
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    carrier: dict[str, str] | None
    config: WorkerConfig | None
    caller: tuple[int, str]
    context: Context | None = None
    id: str = field(default_factory=lambda: os.urandom(12).hex())

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (
            self.target,
            self.name,
            self.args,
            self.kwargs,
            self.carrier,
            self.config,
            self.caller,
        )
        return (Task, (*fields, None, self.id))

    def __dask_tokenize__(self) -> str:
        # Dask keys tasks by a hash of their arguments; ours is unique and free to compute.
        return self.id


@dataclass(eq=False)
class Outcome:
    """What a task sends back: the value or the error (as data), and the spans that ended."""

    value: Any = None
    error: tuple[str, str, str] | None = None
    spans: list[WireSpan] = field(default_factory=list)
    usage: tuple[int, int] = (0, 0)
    states: dict[int | str, State] | None = None
    worker: tuple[str, int] = ("", 0)
    # The exception itself, when the task ran in the caller's own process (never pickled).
    cause: BaseException | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (Outcome, (self.value, self.error, self.spans, self.usage, self.states, self.worker))


class FunctionRef:
    """A step's function named by module and qualname, resolved in the worker.

    The undecorated function of a step cannot be pickled by reference (its module attribute is the
    wrapper, "not the same object"), so it travels as this reference and the worker unwraps the
    step it imports. A script's function (``__main__``) travels by value with cloudpickle when
    ``by_value`` says the worker has no such module (Ray, Dask); pool processes started by
    ``multiprocessing`` have it (forked, or re-imported as ``__mp_main__``).
    """

    __slots__ = ("by_value", "fn", "module", "qualname")

    def __init__(
        self,
        module: str,
        qualname: str,
        fn: Callable[..., Any] | None = None,
        *,
        by_value: bool = False,
    ) -> None:
        self.module = module
        self.qualname = qualname
        self.fn = fn
        self.by_value = by_value

    def __reduce__(self) -> tuple[Any, ...]:
        if self.by_value and self.fn is not None:
            try:
                import cloudpickle  # type: ignore[import-untyped]
            except ImportError:  # the worker may still have the module: try the reference
                pass
            else:
                return (pickle.loads, (cloudpickle.dumps(self.fn),))
        return (FunctionRef, (self.module, self.qualname))

    def __repr__(self) -> str:
        return f"FunctionRef({self.module!r}, {self.qualname!r})"

    def resolve(self) -> Callable[..., Any]:
        """The undecorated function, imported in this process."""
        # import_module, not sys.modules: another thread may be importing it right now.
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        spec = getattr(obj, "__spanflow_spec__", None)
        return spec.fn if spec is not None else obj  # type: ignore[no-any-return]


def shippable(fn: Callable[..., Any], executor: Any = None) -> Any:
    """What to send for ``fn``: a :class:`FunctionRef` for a step's own function, else ``fn``.

    Call it when the task is sent, not when the step is decorated: until the decorator returns,
    the module's attribute is not yet the step, and the function would look unreachable.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not (isinstance(fn, FunctionType) and module and qualname) or "<" in qualname:
        return fn  # closures, lambdas, partials, callables: the executor's pickler decides
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is fn:
        return fn
    spec = getattr(obj, "__spanflow_spec__", None)
    if spec is not None and spec.fn is fn:
        by_value = module == "__main__" and not _has_main(executor)
        return FunctionRef(module, qualname, fn, by_value=by_value)
    return fn


def _has_main(executor: Any) -> bool:
    """Whether ``executor``'s workers have this script as ``__main__`` (a multiprocessing pool)."""
    if isinstance(executor, ThreadPoolExecutor):
        return True
    if not isinstance(executor, ProcessPoolExecutor):
        return False
    context = getattr(executor, "_mp_context", None)
    method = context.get_start_method() if context is not None else None
    if method == "fork":
        return True
    # spawn and forkserver re-import the main module from its file or its ``-m`` name.
    main = sys.modules.get("__main__")
    return bool(getattr(main, "__file__", None) or getattr(main, "__spec__", None))


# -- redaction settings travel as data ---------------------------------------------------------


def redactor_state(redactor: Redactor) -> tuple[Any, ...]:
    """The caller's Redactor as it travels to workers (it pickles by its arguments)."""
    return (redactor,)


def rebuild_redactor(state: tuple[Any, ...]) -> Redactor:
    """The Redactor sent by :func:`redactor_state` (the defaults if none came)."""
    return state[0] if state and isinstance(state[0], Redactor) else Redactor()
