"""``@spanflow.step(executor=pool)`` used as a decorator, in scripts and modules, on every start
method; and the note a pickling failure gets names what is really at fault."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import executor_checks as ec
import pytest
import spanflow

from tests.conftest import Recorded

pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

METHODS = ("fork", "spawn", "forkserver")

# The decorator form as README's "Scaling out" shows it: a pool made at import, the step decorated.
PIPELINE = """\
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import spanflow

pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(os.environ["METHOD"]))


@spanflow.step
def leaf(x: int) -> int:
    return x * 10


@spanflow.step(executor=pool)
def embed(x: int) -> list[int]:
    return [leaf(x), os.getpid()]


@spanflow.workflow
def index(items: list[int]) -> list[list[int]]:
    return [embed(x) for x in items]


if __name__ == "__main__":
    try:
        results = index([1, 2])
    finally:
        pool.shutdown()
    assert all(pid != os.getpid() for _, pid in results), results
    print([value for value, _ in results])
    spanflow.flush()
"""


def _run(args: list[str], cwd: Path, db: Path, method: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPANFLOW_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", *args],
        cwd=cwd,
        env={**clean, "SPANFLOW_DB": str(db), "METHOD": method},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _check(proc: subprocess.CompletedProcess[str], db: Path) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[10, 20]"
    assert "PicklingError" not in proc.stderr
    _, spans = ec.only_run(db)
    ec.check_fan_out(spans, step="embed", count=2, nested=("leaf",))


@pytest.mark.parametrize("method", METHODS)
def test_decorated_step_of_a_script_runs_on_the_pool(tmp_path: Path, method: str) -> None:
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    db = tmp_path / "traces.db"
    _check(_run(["pipeline.py"], tmp_path, db, method), db)


@pytest.mark.parametrize("method", METHODS)
def test_decorated_step_of_a_module_runs_on_the_pool(tmp_path: Path, method: str) -> None:
    package = tmp_path / "jobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "steps.py").write_text(PIPELINE.split("@spanflow.workflow")[0])
    (package / "main.py").write_text(
        "from jobs.steps import embed, pool\n"
        "import os\nimport spanflow\n\n"
        + "@spanflow.workflow"
        + PIPELINE.split("@spanflow.workflow")[1]
    )
    db = tmp_path / "traces.db"
    _check(_run(["-m", "jobs.main"], tmp_path, db, method), db)
    # and the module run as ``python -m`` itself (its steps live in ``__main__``)
    (package / "alone.py").write_text(PIPELINE)
    db = tmp_path / "alone.db"
    _check(_run(["-m", "jobs.alone"], tmp_path, db, method), db)


# -- the note on pickling failures -------------------------------------------------------------


@pytest.fixture
def spawn_pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def _notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", []))


def test_a_local_function_is_named_as_the_culprit(
    recorded: Recorded, spawn_pool: ProcessPoolExecutor
) -> None:
    @spanflow.step(executor=spawn_pool)
    def local(x: int) -> int:
        return x

    with pytest.raises(Exception, match=r"(?i)pickl") as caught:
        local(1)
    assert "local function" in _notes(caught.value)
    assert "test_a_local_function_is_named_as_the_culprit.<locals>.local" in _notes(caught.value)


def test_an_unpicklable_argument_is_named_not_the_function(
    recorded: Recorded, spawn_pool: ProcessPoolExecutor
) -> None:
    step = spanflow.step(executor=spawn_pool)(ec.body(ec.square))
    with pytest.raises(Exception, match=r"(?i)pickl") as caught:
        step(threading.Lock())
    notes = _notes(caught.value)
    assert "positional argument 0 (lock) cannot be pickled" in notes
    assert "lambda" not in notes and "local function" not in notes
