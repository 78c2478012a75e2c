"""The replay driver: read a run from the store, import its workflow, call it under a plan.

The recorded entrypoint is imported (never evaluated: it must be ``module:qualname`` of dotted
identifiers and, once imported, a spanflow workflow) and called with its recorded arguments,
rebuilt from JSON through the type hints, as a new run linked to the original; the plan
(``replayer.plan``) decides which step calls reuse their recorded outputs.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import typing
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from pydantic import TypeAdapter, ValidationError

from .. import attributes as attr
from .. import runtime
from ..config import db_from_env
from ..context import with_replay
from ..errors import ReplayError, SpanflowError
from ..recording.spec import spec_of
from ..values.serialize import encode
from .edits import edit_inputs, edit_outputs, parse_set
from .plan import ReplayPlan, build_plan

__all__ = [
    "ReplayJob",
    "ReplayResult",
    "check_entrypoint",
    "check_import",
    "load",
    "load_workflow",
    "parse_set",
    "replay",
    "run",
]

logger = logging.getLogger("spanflow")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LOSSY_MARKS = ("[REDACTED]", "…[+", '"__truncated__"', '"__bytes__"', '"__type__"', '"[cycle]"')


# -- resolving the entrypoint ----------------------------------------------------------------


def check_entrypoint(entrypoint: str) -> tuple[str, str]:
    """Split ``module:qualname``; refuse anything that is not dotted identifiers."""
    module, sep, qualname = entrypoint.partition(":")
    if not sep or not _IDENT.match(module) or not _IDENT.match(qualname):
        raise ReplayError(
            f"entrypoint {entrypoint!r} is not module:qualname of dotted identifiers; refusing to import it"
        )
    if "<locals>" in qualname:
        raise ReplayError(
            f"entrypoint {entrypoint!r} is defined inside a function and cannot be imported"
        )
    return module, qualname


def _under(path: str | os.PathLike[str], root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def _search_path(workflow_file: str | None) -> list[str]:
    """Where replay looks for the module first: the script's folder (only when it lies under the
    current directory: a recorded path is never trusted) and the current directory."""
    cwd = Path.cwd().resolve()
    first = [str(cwd)]
    if workflow_file and _under(Path(workflow_file).parent, cwd):
        first.insert(0, str(Path(workflow_file).resolve().parent))
    return first


def _allowed_by_name(module: str, allow: Iterable[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allow)


def check_import(
    entrypoint: str,
    workflow_file: str | None = None,
    allow: Iterable[str] = (),
    command: str = "replay",
) -> None:
    """Refuse a module replay must not import, deciding WITHOUT importing anything.

    Allowed: a module already imported in this process, one the user named (``allow``), or one
    whose files (each package on the way included) lie under the current directory. Where a
    module would load from is found with ``PathFinder`` part by part, each part searched in its
    parent's locations: ``importlib.util.find_spec`` of a dotted name would import the parents.
    ``command`` (``replay``, ``check``) names what refuses in the message; ``--allow`` is
    suggested only for a module found on the import path, outside the current directory.
    """
    module_name, _ = check_entrypoint(entrypoint)
    allow = tuple(allow)
    if module_name in sys.modules or _allowed_by_name(module_name, allow):
        return
    cwd = Path.cwd().resolve()
    top = module_name.split(".")[0]
    hint = (
        f"{command} imports only your own code: run it from the project's directory, or pass "
        f"--allow {top} (Python API: allow=[{top!r}]) if you trust that module"
    )
    parts = module_name.split(".")
    locations: list[str] | None = [*_search_path(workflow_file), *sys.path]
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        loaded = sys.modules.get(name)
        if loaded is not None:  # already imported: importing it again runs nothing new
            locations = list(getattr(loaded, "__path__", None) or [])
            continue
        spec = PathFinder.find_spec(name, locations) if locations is not None else None
        if spec is None:
            where = (
                f"; the recorded file {workflow_file} is not under it: {command} from a "
                "directory that contains it"
                if workflow_file and not _under(workflow_file, cwd)
                else f"; run {command} from the project's directory (the one holding {top!r}), "
                "or add that directory to PYTHONPATH"
            )
            raise ReplayError(
                f"cannot import {module_name!r} for {entrypoint}: no module {name!r} under the "
                f"current directory {cwd} or on the import path{where}"
            )
        origins = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
        outside = [o for o in origins if not _under(o, cwd)]
        if outside or not origins:
            raise ReplayError(
                f"refusing to import {module_name!r} for {entrypoint}: it would load "
                f"{outside[0] if outside else name}, outside the current directory {cwd}; {hint}"
            )
        locations = list(spec.submodule_search_locations or []) or None


@contextmanager
def _import_paths(workflow_file: str | None) -> Iterator[None]:
    added = [p for p in _search_path(workflow_file) if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def load_workflow(
    entrypoint: str, workflow_file: str | None, allow: Iterable[str] = (), command: str = "replay"
) -> Any:
    """Import the recorded entrypoint (if :func:`check_import` allows it) and make sure it is a
    spanflow workflow."""
    module_name, qualname = check_entrypoint(entrypoint)
    check_import(entrypoint, workflow_file, allow, command)
    with _import_paths(workflow_file):
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:
            raise ReplayError(
                f"cannot import {module_name!r} for {entrypoint}: {type(exc).__name__}: {exc}"
            ) from exc
    for part in qualname.split("."):
        owner = obj
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ReplayError(
                f"{entrypoint}: {module_name} has no attribute path {qualname!r} today"
            ) from None
    if inspect.isclass(owner) and not isinstance(
        inspect.getattr_static(owner, qualname.rsplit(".", 1)[-1], None),
        staticmethod | classmethod,
    ):
        raise ReplayError(
            f"{entrypoint} is a method that needs an instance (self), which a recording cannot "
            "rebuild; to replay it make the workflow a module-level function, a @staticmethod "
            "or a @classmethod"
        )
    spec = spec_of(obj)
    if spec is None or not spec.is_workflow:
        raise ReplayError(f"{entrypoint} is not a @spanflow.workflow; refusing to call it")
    return obj


def rebuild_arguments(
    fn: Any, input_json: str | None, lossy: frozenset[str]
) -> tuple[list[Any], dict[str, Any]]:
    """The workflow's arguments from its recorded ``input.value``, validated by its type hints."""
    if input_json is None:
        raise ReplayError(
            "the run's inputs were not captured (capture= excluded them); it cannot be replayed"
        )
    recorded = json.loads(input_json)
    if not isinstance(recorded, dict):
        raise ReplayError("the run's recorded inputs are not an object of parameters")
    if attr.INPUT_VALUE in lossy:
        spoiled = [
            k
            for k, v in recorded.items()
            if any(m in json.dumps(v, ensure_ascii=False) for m in _LOSSY_MARKS)
        ]
        raise ReplayError(
            "the run's argument(s) "
            + ", ".join(repr(k) for k in spoiled or recorded)
            + " were truncated or redacted when recorded; replay cannot rebuild them"
        )
    target = inspect.unwrap(fn)
    signature = inspect.signature(target)
    _check_signature(signature, recorded)
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if name not in recorded:
            continue
        value = recorded[name]
        hint = hints.get(name)
        if hint is not None:
            try:
                if param.kind is param.VAR_POSITIONAL:
                    value = [TypeAdapter(hint).validate_python(v) for v in value]
                elif param.kind is param.VAR_KEYWORD:
                    value = {k: TypeAdapter(hint).validate_python(v) for k, v in value.items()}
                else:
                    value = TypeAdapter(hint).validate_python(value)
            except ValidationError as exc:
                raise ReplayError(
                    f"recorded argument {name!r} no longer fits {hint!r}: {exc.errors()[0]['msg']}"
                ) from None
        if param.kind is param.POSITIONAL_ONLY:
            args.append(value)
        elif param.kind is param.VAR_POSITIONAL:
            args.extend(value)
        elif param.kind is param.VAR_KEYWORD:
            kwargs.update(value)
        else:
            kwargs[name] = value
    return args, kwargs


def _check_signature(signature: inspect.Signature, recorded: dict[str, Any]) -> None:
    """Refuse, naming the parameter, recorded arguments today's signature cannot take."""
    params = signature.parameters
    kinds = {p.kind for p in params.values()}
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        unknown = [k for k in recorded if k not in params]
        if unknown:
            raise ReplayError(
                f"the run recorded argument {unknown[0]!r}, which today's workflow has no "
                f"parameter for (renamed or removed? its parameters are {', '.join(params)})"
            )
    for name, p in params.items():
        if (
            p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and name not in recorded
        ):
            raise ReplayError(
                f"today's workflow requires parameter {name!r}, which the run did not record "
                "(added or renamed since?); give it a default to replay old runs"
            )


# -- the public entry point ------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayJob:
    """A recorded run, read from the store and ready to be replayed (nothing imported yet)."""

    run_id: str
    entrypoint: str
    workflow_file: str | None
    db: Path
    plan: ReplayPlan
    input_json: str | None
    lossy: frozenset[str]
    async_library: str = "asyncio"  # an async workflow runs on the event loop it was recorded on
    service: str | None = None  # the original's ``service.name``, which the replay keeps


@dataclass
class ReplayResult:
    """What a replay did, for the CLI's summary."""

    plan: ReplayPlan
    run_id: str | None = None
    value: Any = None
    error: BaseException | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def diverged(self) -> list[dict[str, str]]:
        """Calls today's code no longer makes (``removed``) and calls with no recording
        (``added``), as ``{"path", "kind"}``."""
        return self.plan.divergence()


def load(
    run_id: str, db: str | os.PathLike[str] | None = None, from_step: str | None = None
) -> ReplayJob:
    """Read the run and its recorded calls from the store; imports nothing."""
    from spanflow.exporters.store import Store

    path = Path(db) if db is not None else _default_db()
    with Store.open(path) as store:
        run_record = store.get_run(run_id)
        spans = store.spans(run_record.id)
    plan, root = build_plan(run_record.id, spans, from_step, complete=run_record.status == "ok")
    if root.attributes.get(attr.STEP_TYPE) != attr.STEP_TYPE_WORKFLOW:
        raise ReplayError(
            f"run {run_record.id} is a lone step call, not a workflow run; "
            "only workflows can be replayed"
        )
    entrypoint = root.attributes.get(attr.WORKFLOW_ENTRYPOINT)
    if not entrypoint:
        raise ReplayError(f"run {run_record.id} recorded no entrypoint")
    check_entrypoint(str(entrypoint))
    return ReplayJob(
        run_id=run_record.id,
        entrypoint=str(entrypoint),
        workflow_file=root.attributes.get(attr.WORKFLOW_FILE),
        db=path,
        plan=plan,
        input_json=root.attributes.get(attr.INPUT_VALUE),
        lossy=frozenset(x for x in str(root.attributes.get(attr.LOSSY, "")).split(",") if x),
        async_library=str(root.attributes.get(attr.WORKFLOW_ASYNC_LIBRARY) or "asyncio"),
        service=root.resource.get("service.name") or run_record.service,
    )


def _default_db() -> Path:
    return runtime.store_path() or db_from_env()


def run(
    job: ReplayJob,
    *,
    allow: Iterable[str] = (),
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    command: str = "replay",
) -> ReplayResult:
    """Import the workflow, rebuild its arguments and call it as a new run linked to the original.

    ``inputs`` replaces recorded arguments (``{"param": value}`` or ``{"param.key": value}`` for
    a field inside one) and ``outputs`` recorded step outputs (``{"wf/step[0]": value}``) before
    the replay; see :mod:`spanflow.replayer.edits`. ``command`` names the caller (``replay``,
    ``check``) in a refusal's hint.

    Raises ReplayError before anything is called when the entrypoint or the arguments cannot be
    rebuilt or an edit names nothing; the workflow's own exception is returned in the result.
    """
    edits: list[dict[str, Any]] = []
    plan = job.plan
    if outputs:
        plan, output_edits = edit_outputs(plan, outputs)
        edits.extend(output_edits)
    fn = load_workflow(job.entrypoint, job.workflow_file, allow, command)
    input_json, lossy = job.input_json, job.lossy
    if inputs:
        input_json, lossy, input_edits = edit_inputs(fn, input_json, lossy, inputs)
        edits[:0] = input_edits
    args, kwargs = rebuild_arguments(fn, input_json, lossy)
    is_async = inspect.iscoroutinefunction(fn)
    if is_async and (
        job.async_library not in ("asyncio", "trio")
        or importlib.util.find_spec(job.async_library) is None
    ):
        raise ReplayError(
            f"run {job.run_id} ran on the {job.async_library} event loop, which is not available here"
        )
    _record_into(job)
    if job.workflow_file:
        plan.root_attributes[attr.WORKFLOW_FILE] = job.workflow_file
    if edits:
        plan.root_attributes[attr.REPLAY_EDITS] = _edits_json(edits)
    result = ReplayResult(plan=plan, edits=edits)
    token = otel_context.attach(with_replay(otel_context.get_current(), plan))
    try:
        call = functools.partial(fn, *args, **kwargs)
        if is_async:
            import anyio

            result.value = anyio.run(_await, call, backend=job.async_library)
        else:
            result.value = call()
    except Exception as exc:
        result.error = exc
    finally:
        otel_context.detach(token)
        runtime.flush()
    result.run_id = plan.new_run_id
    return result


def _record_into(job: ReplayJob) -> None:
    """Record into the job's store, under the original run's service name when this process
    has not started recording yet (it then installs the provider, whose resource names the
    service). A process already recording keeps its own provider and so its service name."""
    if job.service and runtime.store_path() is None:
        try:
            runtime.configure(db=job.db, service_name=job.service)
            return
        except SpanflowError:
            logger.warning("spanflow: replay could not keep service %r", job.service, exc_info=True)
    runtime.use_store(job.db)


def _edits_json(edits: list[dict[str, Any]]) -> str:
    settings = runtime.get_runtime().settings
    return encode(edits, max_bytes=settings.max_value_bytes, redactor=settings.redactor).json


async def _await(call: Any) -> Any:
    return await call()


def replay(
    run_id: str,
    db: str | os.PathLike[str] | None = None,
    from_step: str | None = None,
    *,
    allow: Iterable[str] = (),
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
) -> Any:
    """Re-run a recorded run with today's code, reusing the outputs of steps that succeeded.

    Args:
        run_id: the run to replay (a unique prefix of at least 4 hex characters is enough).
        db: the store to read it from and record the replay in (default: the configured store).
        from_step: run this step and everything after it live, even where it succeeded.
        allow: modules (and their submodules) replay may import although they do not lie under
            the current directory, such as an installed package of yours.
        inputs: workflow arguments to replace, by parameter name, or ``"param.key"`` for a
            field inside one (a fork: "what if the ticket had said X").
        outputs: recorded step outputs to replace before they are reused, by the step path the
            replay summary prints (``"support/classify[0]"``).

    Returns:
        What the workflow returns. Raises what it raises (with a note naming the new run).

    Raises:
        ReplayError: the run cannot be replayed (entrypoint, arguments); StoreError /
            UnknownRunError: the store or the run cannot be read.
    """
    outcome = run(load(run_id, db, from_step), allow=allow, inputs=inputs, outputs=outputs)
    if outcome.error is not None:
        raise outcome.error
    return outcome.value
