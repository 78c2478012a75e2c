"""spanflow's pytest plugin (a ``pytest11`` entry point, installed with spanflow).

Fixtures:
    spanflow_store: spanflow recording into a fresh store under the test's ``tmp_path``; the
        value is that store's reader, whose ``.runs()`` lists the runs the test made.
    spanflow_check: ``spanflow_check(path_or_run_id, reuse=None, db=None)`` does what
        ``spanflow check`` does and returns the workflow's result; a difference fails the test
        with the step-by-step diff as its message.

A failing test that used either names the runs it produced, with the command that shows each.
Nothing is imported from spanflow until a test asks for a fixture, so the plugin costs other
test suites nothing.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from spanflow.exporters.records import RunRecord
    from spanflow.exporters.store import Store

__all__ = ["spanflow_check", "spanflow_store"]

_DB_KEY = pytest.StashKey[Path]()
_SECTION = "spanflow runs"
_REPORT_WIDTH = 120  # a test report is read in a log more often than in an 80-column terminal


def _reader_class() -> type[Store]:
    from spanflow import runtime
    from spanflow.exporters.store import Store

    class TestStore(Store):
        """The test's store, read-only; ``runs()`` lists its runs, oldest first."""

        def runs(self) -> list[RunRecord]:
            runtime.flush()  # every span the test recorded so far is on disk
            return list(reversed(self.list_runs(limit=1_000_000)))

    return TestStore


@pytest.fixture
def spanflow_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """spanflow recording into ``tmp_path/spanflow/traces.db`` (subprocesses too, through
    ``$SPANFLOW_DB``); yields the store's reader with ``.runs()``."""
    import spanflow
    from spanflow import runtime
    from spanflow.exporters.store import Store

    db = tmp_path / "spanflow" / "traces.db"
    Store.open(db, readonly=False).close()  # created now, so the reader can open it
    monkeypatch.setenv("SPANFLOW_DB", str(db))
    request.node.stash[_DB_KEY] = db
    spanflow.configure(db=db)
    reader = _reader_class().open(db)
    try:
        yield reader
    finally:
        reader.close()
        runtime.reset_for_tests()  # the next test records wherever its own setup says


@pytest.fixture
def spanflow_check(request: pytest.FixtureRequest, spanflow_store: Store) -> Callable[..., Any]:
    """``spanflow_check(path_or_run_id, reuse=None, db=None)``: run the recorded workflow with
    today's code, serving the recorded outputs of the ``reuse`` kinds or steps (default: llm,
    tool, retriever, embedding), and fail the test with the diff if any step differs.

    A relative path is looked up beside the test file first, then in the current directory.
    Returns what the workflow returned (or raises what it raised, when the recording did too).
    """
    from spanflow.replayer.check import check

    here = Path(str(request.node.path)).parent

    def run_check(
        path_or_run_id: str | os.PathLike[str],
        reuse: Sequence[str] | None = None,
        db: str | os.PathLike[str] | None = None,
    ) -> Any:
        source: str | Path = os.fspath(path_or_run_id)
        candidate = Path(source)
        if not candidate.is_absolute() and (here / candidate).is_file():
            source = here / candidate
        result = check(source, db if db is not None else spanflow_store.path, reuse)
        if not result.passed:
            pytest.fail(result.report(_REPORT_WIDTH), pytrace=False)
        if result.error is not None:
            raise result.error
        return result.value

    return run_check


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    db = item.stash.get(_DB_KEY, None)
    if db is not None and report.failed:
        try:
            lines = _run_lines(db)
        except Exception as exc:  # a report must not fail because the store cannot be read
            lines = [f"(cannot list the runs in {db}: {type(exc).__name__}: {exc})"]
        report.sections.append((_SECTION, "\n".join(lines)))
    return report


def _run_lines(db: Path) -> list[str]:
    from spanflow import runtime
    from spanflow.exporters.store import Store

    runtime.flush()
    with Store.open(db) as store:
        runs = list(reversed(store.list_runs(limit=1_000_000)))
    if not runs:
        return [f"no runs recorded in {db}"]
    where = shlex.quote(str(db))
    return [
        f"{r.id} {r.workflow or '?'} {r.status}"
        + (f" ({r.error})" if r.error else "")
        + f"\n    spanflow show {r.id} --db {where}"
        for r in runs
    ]
