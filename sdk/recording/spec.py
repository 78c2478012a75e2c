"""What is fixed when a function is decorated: its name, kind, retry policy, timeout, fallback,
default, capture, executor and argument binder (``StepSpec``), checked once by ``build_spec``."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import attributes as attr
from ..config import capture_set
from ..errors import ConfigurationError
from ..values.binding import Binder
from .retry import RetryPolicy, build_policy

__all__ = [
    "MISSING",
    "StepSpec",
    "build_spec",
    "check_executor",
    "default_name",
    "entrypoint_of",
    "spec_of",
]

#: ``default=`` not given (``None`` is a valid default).
MISSING: Any = object()


@dataclass(frozen=True, eq=False)
class StepSpec:
    """Everything about a decorated callable that does not change between calls."""

    fn: Any
    name: str
    step_type: str
    span_kind: str
    capture: frozenset[str]
    policy: RetryPolicy | None
    timeout: float | None
    fallback: Any
    default: Any
    binder: Binder
    static_attributes: dict[str, Any]
    executor: Executor | None = None
    resources: Mapping[str, Any] | None = None
    options: Mapping[str, Any] | None = None  # the decorator's own arguments, to rebuild it
    streams: bool = False  # a generator: its items are consumed as it runs, never replayed

    def __reduce__(self) -> tuple[Any, ...]:
        # A step pickled by value (a script's function shipped to a worker) is rebuilt there from
        # its function and options, without the executor: it runs where it lands.
        options = {
            k: v for k, v in (self.options or {}).items() if k not in ("executor", "resources")
        }
        return (_rebuild_spec, (self.fn, self.step_type, options))

    @property
    def is_workflow(self) -> bool:
        return self.step_type == attr.STEP_TYPE_WORKFLOW

    @property
    def handles_failure(self) -> bool:
        return self.fallback is not None or self.default is not MISSING


def _rebuild_spec(fn: Any, step_type: str, options: Mapping[str, Any]) -> StepSpec:
    return build_spec(fn, step_type, options)


def entrypoint_of(fn: Any) -> tuple[str, str | None]:
    """``module:qualname`` for replay; a script's functions are named after the file's stem."""
    module = getattr(fn, "__module__", None) or "__main__"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "unknown")
    if module == "__main__":
        # `python -m pkg.mod`: the module's real name, so replay imports it as part of its
        # package (relative imports intact) rather than as a loose file.
        main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        spec_name = getattr(main_spec, "name", None)
        if isinstance(spec_name, str) and spec_name and spec_name != "__main__":
            return f"{spec_name}:{qualname}", None
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file:
            path = Path(main_file).resolve()
            return f"{path.stem}:{qualname}", str(path)
    return f"{module}:{qualname}", None


def check_executor(executor: Any, *, where: str) -> None:
    """Raise ConfigurationError unless ``executor`` can take tasks (has ``submit``)."""
    if not callable(getattr(executor, "submit", None)):
        raise ConfigurationError(
            f"{where}: executor={executor!r} is not an executor; pass a "
            "concurrent.futures.Executor (ProcessPoolExecutor, Dask's client.get_executor()) "
            "or spanflow.RayExecutor()"
        )


def default_name(fn: Any) -> str:
    if isinstance(fn, functools.partial):
        return default_name(fn.func)
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) and name else type(fn).__name__


def build_spec(fn: Any, step_type: str, o: Mapping[str, Any]) -> StepSpec:
    """Check a decorator's options for ``fn`` and fix them in a ``StepSpec``."""
    name = o["name"] if o["name"] is not None else default_name(fn)
    where = f"@spanflow.{step_type}({name!r})"
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"@spanflow.{step_type}: name= must be a non-empty string")
    kind = o["kind"]
    span_kind = "CHAIN" if kind is None else str(kind).upper()
    if span_kind not in attr.SPAN_KINDS:
        raise ConfigurationError(
            f"{where}: kind={kind!r} is not an OpenInference span kind; use one of "
            + ", ".join(sorted(k.lower() for k in attr.SPAN_KINDS))
        )
    timeout = o["timeout"]
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ConfigurationError(f"{where}: timeout={timeout!r} must be a number of seconds > 0")
    fallback = o["fallback"]
    if fallback is not None and not callable(fallback):
        raise ConfigurationError(
            f"{where}: fallback= must be callable (it gets the step's arguments)"
        )
    policy = build_policy(o["retries"], o["retry"], where=where)
    is_gen = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    executor, resources = o.get("executor"), o.get("resources")
    if executor is not None:
        check_executor(executor, where=where)
        if is_gen:
            raise ConfigurationError(
                f"{where}: a generator cannot run on an executor (its items stream to the caller)"
            )
    if resources is not None and not isinstance(resources, Mapping):
        raise ConfigurationError(f"{where}: resources= must be a mapping such as {{'num_gpus': 1}}")
    if is_gen and (policy or timeout or fallback is not None or o["default"] is not MISSING):
        raise ConfigurationError(
            f"{where}: retries, timeout, fallback and default cannot apply to a generator (its "
            "items are already consumed when it fails); put them on the step that produces the data"
        )
    qualname = getattr(fn, "__qualname__", "") or ""
    parts = qualname.split(".")
    binder_probe = Binder(fn)
    first = next(iter(binder_probe.signature.parameters), None) if binder_probe.signature else None
    skip_first = len(parts) > 1 and parts[-2] != "<locals>" and first in ("self", "cls")
    static: dict[str, Any] = {
        attr.STEP_NAME: name,
        attr.STEP_TYPE: step_type,
        attr.SPAN_KIND: span_kind,
    }
    if step_type == attr.STEP_TYPE_WORKFLOW:
        entry, file = entrypoint_of(fn)
        static[attr.WORKFLOW_ENTRYPOINT] = entry
        if file:
            static[attr.WORKFLOW_FILE] = file
    if timeout is not None:
        static[attr.TIMEOUT_S] = float(timeout)
    if span_kind == "LLM":
        # What OTel's GenAI conventions (and Jaeger's GenAI view) key on; record_llm_usage may
        # name another operation.
        static[attr.GEN_AI_OPERATION_NAME] = attr.GEN_AI_OPERATION_CHAT
    return StepSpec(
        fn=fn,
        name=name,
        step_type=step_type,
        span_kind=span_kind,
        capture=capture_set(o["capture"], where=where),
        policy=policy,
        timeout=float(timeout) if timeout is not None else None,
        fallback=fallback,
        default=o["default"],
        binder=Binder(fn, skip_first=skip_first) if skip_first else binder_probe,
        static_attributes=static,
        executor=executor,
        resources=resources,
        options=dict(o),
        streams=is_gen,
    )


def spec_of(fn: Any) -> StepSpec | None:
    """The spec of a decorated callable, or None for anything else."""
    spec = getattr(fn, "__spanflow_spec__", None)
    return spec if isinstance(spec, StepSpec) else None
