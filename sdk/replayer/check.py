"""A regression check from a recording: today's code against what a run did.

The recorded workflow runs again as a replay whose plan serves only the selected steps (by
default the calls that leave the process: OpenInference kinds llm, tool, retriever, embedding)
and runs every other step live. A selected call that cannot be served (today's code calls the
model with another prompt) is refused: it does not execute, the run stops there, and the check
reports it. Then the new run is compared with the recording step by step (``replayer.diff``).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import attributes as attr
from .. import runtime
from ..config import db_from_env
from ..errors import ReplayError, StepRefused
from .diff import RunDiff, diff_spans
from .runner import load, run

__all__ = [
    "DEFAULT_REUSE",
    "CheckResult",
    "check",
    "check_reuse",
    "import_recording",
    "selection",
]

#: The OpenInference kinds whose calls leave the process: served from the recording by default.
DEFAULT_REUSE: tuple[str, ...] = ("llm", "tool", "retriever", "embedding")
_STEP_TYPES = (attr.STEP_TYPE_STEP, attr.STEP_TYPE_WORKFLOW)


@dataclass
class CheckResult:
    """What a check found: the recorded run, the new run and their diff."""

    recording: str
    run_id: str | None
    diff: RunDiff
    value: Any = None
    error: BaseException | None = None
    refused: list[StepRefused] = field(default_factory=list)
    served: list[str] = field(default_factory=list)
    """Paths of the calls served from the recording (not executed)."""
    live: list[str] = field(default_factory=list)
    """Paths of the calls that ran live (a refused one included)."""

    @property
    def passed(self) -> bool:
        """Every live step and the workflow's result equal the recording; nothing refused."""
        return not self.refused and not self.diff.differences()

    def lines(self, width: int = 80) -> list[tuple[str, str]]:
        """The report as ``(text, style)`` lines: the verdict, refusals, then the diff."""
        n = len(self.diff.differences())
        head = (
            f"check passed: run {self.run_id} matches recording {self.recording} "
            f"({_steps(len(self.served))} served, {len(self.live)} run live)"
            if self.passed
            else f"check failed: {n} step(s) differ from recording {self.recording}"
        )
        style = "bold green" if self.passed else "bold red"
        out = [(line, style) for line in textwrap.wrap(head, width, subsequent_indent="  ")]
        for refusal in self.refused:
            text = f"refused (not run live): {refusal.path}: {refusal.reason}"
            out.extend((line, "red") for line in textwrap.wrap(text, width, subsequent_indent="  "))
        out.extend(self.diff.lines(width, only_changes=True))
        return out

    def report(self, width: int = 80) -> str:
        return "\n".join(text for text, _ in self.lines(width))


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _kinds_and_names(reuse: Iterable[str] | None) -> tuple[frozenset[str], frozenset[str]]:
    """The ``reuse`` items that are OpenInference kinds (upper case) and the step names."""
    items = [x.strip() for x in (DEFAULT_REUSE if reuse is None else reuse) if x.strip()]
    kinds = frozenset(x.upper() for x in items if x.upper() in attr.SPAN_KINDS)
    return kinds, frozenset(x for x in items if x.upper() not in attr.SPAN_KINDS)


def selection(
    reuse: Iterable[str] | None, served: Iterable[str] = ()
) -> Callable[[str, str, str], bool]:
    """``(recorded path, step name, kind) -> True`` for the calls a check serves: items that are
    OpenInference kinds select by kind (any case), the others by step name; ``served`` adds
    recorded calls by path."""
    kinds, names = _kinds_and_names(reuse)
    paths = frozenset(served)

    def must_serve(path: str, name: str, kind: str) -> bool:
        return name in names or kind.upper() in kinds or path in paths

    return must_serve


def check_reuse(reuse: Iterable[str] | None, run_id: str, spans: Iterable[Any]) -> None:
    """Refuse a ``reuse`` item that is neither an OpenInference kind nor the name of a step the
    recording ``spans`` hold: it would select nothing, and the check would run that call live.

    Raises:
        ReplayError: naming the first such item and the recording's kinds and step names.
    """
    steps = [s for s in spans if s.attributes.get(attr.STEP_TYPE) in _STEP_TYPES]
    known = {str(s.attributes.get(attr.STEP_NAME) or s.name) for s in steps}
    unknown = sorted(_kinds_and_names(reuse)[1] - known)
    if unknown:
        kinds = sorted({str(s.attributes.get(attr.SPAN_KIND, "chain")).lower() for s in steps})
        raise ReplayError(
            f"cannot reuse {unknown[0]!r}: neither an OpenInference kind nor a step of recording "
            f"{run_id} (its kinds: {_listed(kinds)}; its steps: {_listed(sorted(known))})"
        )


def _listed(items: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(items[:most])
    return shown + (f", … {len(items) - most} more" if len(items) > most else "") or "none"


def import_recording(path: str | os.PathLike[str], db: str | os.PathLike[str]) -> str:
    """Store the run an OTLP/JSON file holds (spans already there are skipped); its run id.

    Raises:
        ReplayError: unreadable file, not OTLP/JSON, or not exactly one workflow run in it.
    """
    from spanflow.exporters.file_formats import parse_otlp_json
    from spanflow.exporters.store import Store

    source = Path(path)
    try:
        spans = parse_otlp_json(source.read_bytes())
    except OSError as exc:
        raise ReplayError(f"cannot read {source}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ReplayError(f"{source}: {exc}") from None
    roots = sorted(
        {
            s.run_id
            for s in spans
            if s.parent_id is None and s.attributes.get(attr.STEP_TYPE) == attr.STEP_TYPE_WORKFLOW
        }
    )
    if len(roots) != 1:
        raise ReplayError(
            f"{source} holds {len(roots)} workflow runs; a check needs a file with exactly one "
            "(spanflow export RUN --format otlp-json writes one)"
        )
    with Store.open(db, readonly=False) as store:
        store.write_spans([s for s in spans if s.run_id == roots[0]])
    return roots[0]


def check(
    run_or_file: str | os.PathLike[str],
    db: str | os.PathLike[str] | None = None,
    reuse: Sequence[str] | None = None,
    *,
    allow: Iterable[str] = (),
) -> CheckResult:
    """Re-run a recording with today's code and compare every step with it.

    Args:
        run_or_file: a run id (or unique prefix) in ``db``, or an OTLP/JSON file, imported
            into ``db`` first.
        db: the store (default: the configured one); the check's own run is recorded there.
        reuse: kinds and step names to serve from the recording (default ``DEFAULT_REUSE``).
        allow: modules it may import although they do not lie under the current directory
            (as ``replay``'s ``allow``).

    Raises:
        ReplayError, StoreError, UnknownRunError: as replay, or a ``reuse`` item that is
            neither a kind nor a recorded step's name; nothing was run.
    """
    store_path = Path(db) if db is not None else (runtime.store_path() or db_from_env())
    source = Path(run_or_file)
    if source.is_file():
        run_id = import_recording(source, store_path)
    elif isinstance(run_or_file, os.PathLike) or os.sep in str(run_or_file):
        raise ReplayError(f"{source} does not exist (give a run id or an OTLP/JSON file)")
    else:
        run_id = str(run_or_file)
    from spanflow.exporters.store import Store

    job = load(run_id, store_path)
    plan = job.plan
    with Store.open(store_path) as store:
        a_spans = store.spans(job.run_id)
    check_reuse(reuse, job.run_id, a_spans)
    # A recording that is itself a replay holds the output of each step it reused, but not the
    # calls inside (they ran in the original run): such a step can only be served whole.
    reused = {s.span_id for s in a_spans if s.attributes.get(attr.REPLAY_CACHED)}
    plan.must_serve = selection(reuse, (c.path for c in plan.calls.values() if c.span_id in reused))
    plan.root_attributes[attr.REPLAY_CHECK] = True
    value: Any = None
    error: BaseException | None = None
    try:
        outcome = run(job, allow=allow, command="check")
        value, error = outcome.value, outcome.error
    except StepRefused as exc:
        error = exc
    except BaseExceptionGroup as group:  # a refusal inside a task group
        if group.subgroup(StepRefused) is None:
            raise
        error = group
    if plan.new_run_id is None:
        raise ReplayError("the check's run was not recorded (is recording disabled?)")
    with Store.open(store_path) as store:
        b_spans = store.spans(plan.new_run_id)
    return CheckResult(
        recording=job.run_id,
        run_id=plan.new_run_id,
        diff=diff_spans(job.run_id, a_spans, plan.new_run_id, b_spans),
        value=value,
        error=error,
        refused=list(plan.refused),
        served=list(plan.reused),
        live=list(plan.executed),
    )
