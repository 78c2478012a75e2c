"""Replay through the Python API: matching, reuse, live steps, refusals."""

from __future__ import annotations

import importlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import spanflow
from pydantic import BaseModel, field_validator
from spanflow import attributes as attr
from spanflow.exporters.records import SpanRecord
from spanflow.exporters.store import Store
from spanflow.replayer.plan import ReplayPlan, build_plan
from spanflow.replayer.runner import check_entrypoint, load_workflow
from spanflow.values.serialize import encode

PIPELINE = """
from __future__ import annotations
import os, pathlib
import spanflow

CALLS = pathlib.Path(os.environ["CALLS_FILE"])

class Doc(spanflow.State):
    query: str
    hits: list[str] = []
    answer: str | None = None

def _mark(name: str) -> None:
    with CALLS.open("a") as f:
        f.write(name + "\\n")

@spanflow.step
def search(query: str) -> list[str]:
    _mark("search")
    return [query + "-1", query + "-2"]

@spanflow.step
def enrich(doc: Doc) -> None:
    _mark("enrich")
    doc.hits = search(doc.query)

@spanflow.step
def untyped(x):
    _mark("untyped")
    return x

@spanflow.step
def answer(doc: Doc) -> str:
    _mark("answer")
    if os.environ.get("FIXED") != "1":
        raise RuntimeError("answer model crashed")
    doc.answer = doc.hits[0].upper()
    return doc.answer

@spanflow.workflow
def pipeline(doc: Doc, shout: bool = False) -> str:
    enrich(doc)
    untyped(1)
    return answer(doc)

if __name__ == "__main__":
    pipeline(Doc(query="q"))
"""


@pytest.fixture
def failed_run(tmp_path: Path) -> tuple[Path, str, Path]:
    """A real failed run of a script-defined workflow, recorded by a separate process."""
    script = tmp_path / "proj" / "mypipe.py"
    script.parent.mkdir()
    script.write_text(PIPELINE)
    db = tmp_path / "traces.db"
    calls = tmp_path / "calls.txt"
    env = {"SPANFLOW_DB": str(db), "CALLS_FILE": str(calls), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 1 and "answer model crashed" in proc.stderr, proc.stderr[-3000:]
    assert "spanflow replay" in proc.stderr  # the note names the command
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("select id from runs").fetchone()
        assert row is not None, proc.stderr[-3000:]
        (run_id,) = row
    conn.close()
    calls.write_text("")
    return db, run_id, calls


StoredModule = Callable[[str, str], tuple[Any, Path]]


@pytest.fixture
def stored_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoredModule]:
    """Import a module written from source text, spanflow recording into a store at a tmp path."""
    names: list[str] = []
    db = tmp_path / "t.db"
    monkeypatch.syspath_prepend(str(tmp_path))
    spanflow.configure(db=db)

    def load(name: str, source: str) -> tuple[Any, Path]:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return importlib.import_module(name), db

    yield load
    for name in names:
        sys.modules.pop(name, None)
    spanflow.runtime.reset_for_tests()


def newest_run(db: Path) -> str:
    spanflow.flush()
    with Store.open(db) as store:
        return store.list_runs()[0].id


def test_replay_reuses_succeeded_steps(
    failed_run: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, run_id, calls = failed_run
    monkeypatch.setenv("CALLS_FILE", str(calls))
    monkeypatch.setenv("FIXED", "1")
    monkeypatch.chdir(db.parent)  # the script lies under the current directory: the user's code
    try:
        result = spanflow.replay(run_id[:8], db=db)
        spanflow.flush()
    finally:
        sys.modules.pop("mypipe", None)
        spanflow.runtime.reset_for_tests()
    assert result == "Q-1"
    # enrich (and so search) reused with its state change re-applied; untyped has no annotation
    assert calls.read_text().split() == ["untyped", "answer"]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("select id, status, replay_of from runs order by started_ns").fetchall()
    conn.close()
    assert rows[0][1] == "failed" and rows[1][1:] == ("ok", run_id)


def test_replay_failing_again_raises_with_a_new_run(
    failed_run: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, run_id, calls = failed_run
    monkeypatch.setenv("CALLS_FILE", str(calls))
    monkeypatch.chdir(db.parent)
    try:
        with pytest.raises(RuntimeError, match="answer model crashed") as info:
            spanflow.replay(run_id, db=db, from_step="enrich")
    finally:
        sys.modules.pop("mypipe", None)
        spanflow.runtime.reset_for_tests()
    assert calls.read_text().split() == [
        "enrich",
        "search",
        "untyped",
        "answer",
    ]  # --from: all live
    assert any("spanflow show" in n for n in info.value.__notes__)


def test_unknown_from_step_lists_the_steps(failed_run: tuple[Path, str, Path]) -> None:
    db, run_id, _ = failed_run
    with pytest.raises(spanflow.ReplayError, match="no such step"):
        spanflow.replay(run_id, db=db, from_step="nope")


def test_entrypoints_are_checked_before_import() -> None:
    for bad in ["os.system", "os:system()", "__import__('os'):x", "a b:c", "m:<locals>.f", ":x"]:
        with pytest.raises(spanflow.ReplayError):
            check_entrypoint(bad)
            load_workflow(bad, None)
    with pytest.raises(spanflow.ReplayError, match=r"not a @spanflow\.workflow"):
        load_workflow("os:system", None)
    with pytest.raises(spanflow.ReplayError, match=r"not a @spanflow\.workflow"):
        load_workflow("json:dumps", None)


def test_redacted_workflow_argument_stops_replay(stored_module: StoredModule) -> None:
    secretpipe, db = stored_module(
        "secretpipe",
        """
        import spanflow

        @spanflow.workflow
        def login(user: str, password: str) -> str:
            raise ValueError("denied")
        """,
    )
    with pytest.raises(ValueError):
        secretpipe.login("ada", "hunter2")
    run_id = newest_run(db)
    with Store.open(db) as store:
        root = store.spans(run_id)[0]
    assert "hunter2" not in json.dumps(root.attributes)
    assert attr.INPUT_VALUE in root.attributes[attr.LOSSY]
    with pytest.raises(spanflow.ReplayError, match="'password'"):
        spanflow.replay(run_id, db=db)


def test_plan_paths_skip_attempt_spans() -> None:
    rid = "ab" * 16

    def span(sid: str, parent: str | None, name: str, kind: str, **extra: object) -> SpanRecord:
        attrs = {attr.STEP_NAME: name, attr.STEP_TYPE: kind, **extra}
        return SpanRecord(
            run_id=rid,
            span_id=sid * 16,
            parent_id=parent * 16 if parent else None,
            name=name,
            start_ns=int(sid, 16),
            end_ns=int(sid, 16) + 1,
            attributes=attrs,
        )

    spans = [
        span("1", None, "wf", "workflow"),
        span("2", "1", "flaky", "step"),
        span("3", "2", "flaky #1", "attempt"),
        span("4", "3", "inner", "step"),
        span("5", "2", "flaky #2", "attempt"),
        span("6", "5", "inner", "step", **{attr.STEP_OCCURRENCE: 1}),
    ]
    plan, root = build_plan(rid, spans, None)
    assert root.span_id == "1" * 16
    assert set(plan.calls) == {"wf", "wf/flaky[0]", "wf/flaky[0]/inner[0]", "wf/flaky[0]/inner[1]"}


def test_replay_reruns_steps_whose_value_came_from_a_default_and_never_reuses_generators(
    stored_module: StoredModule,
) -> None:
    degraded, db = stored_module(
        "degraded",
        """
        from collections.abc import Callable, Iterator
        import spanflow

        BROKEN = True
        CALLS: list[str] = []

        class S(spanflow.State):
            seen: list[int] = []

        @spanflow.step(default="N/A")
        def summarize(text: str) -> str:
            CALLS.append("summarize")
            if BROKEN:
                raise ConnectionError("LLM down")
            return text.upper()

        @spanflow.step
        def produce(s: S, n: int) -> Iterator[int]:
            CALLS.append("produce")
            for i in range(n):
                s.seen.append(i)
                yield i

        @spanflow.step
        def publish(summary: str) -> str:
            if summary == "N/A":
                raise ValueError("nothing to publish")
            return "published " + summary

        @spanflow.workflow
        def wf(text: str) -> list[object]:
            s = S()
            total = sum(produce(s, 3))
            return [publish(summarize(text)), total, s.seen]
        """,
    )
    with pytest.raises(ValueError):
        degraded.wf("hello")
    run_id = newest_run(db)
    degraded.BROKEN = False
    degraded.CALLS.clear()
    assert spanflow.replay(run_id, db=db) == ["published HELLO", 3, [0, 1, 2]]
    assert sorted(degraded.CALLS) == ["produce", "summarize"]


FANPIPE = """
import anyio
import spanflow
from spanflow.recording.call import running_async_library

ORDER = list(range(8))
BROKEN = True
CALLS: list[str] = []
LOOPS: list[str | None] = []

@spanflow.step
async def fetch(i: int) -> int:
    CALLS.append(f"fetch {i}")
    await anyio.sleep(0.001 * (i % 3))
    return i * 10

@spanflow.step
def lookup(i: int) -> int:  # parallel() runs it in a worker thread
    CALLS.append(f"lookup {i}")
    return -i

@spanflow.step
def finish(total: int) -> int:
    CALLS.append("finish")
    if BROKEN:
        raise ValueError("not fixed yet")
    return total

@spanflow.step
async def wrap(i: int):  # no return annotation: runs live on replay, its own calls are reused
    return await fetch(100 + i)

@spanflow.workflow
async def wf(n: int) -> int:
    LOOPS.append(running_async_library())
    fetched = await spanflow.parallel(*(fetch(i) for i in ORDER[:n]))
    looked = await spanflow.parallel(*(lambda i=i: lookup(i) for i in ORDER[:n]), limit=3)
    wrapped = await spanflow.parallel(*(wrap(i) for i in ORDER[:n]))
    return finish(sum(fetched) + sum(looked) + sum(wrapped))
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_replay_reuses_concurrent_steps_whatever_order_they_start_in(
    backend: str, stored_module: StoredModule
) -> None:
    import anyio

    fanpipe, db = stored_module("fanpipe", FANPIPE)
    with pytest.raises(ValueError):
        anyio.run(fanpipe.wf, 8, backend=backend)
    run_id = newest_run(db)
    with Store.open(db) as store:
        root = next(s for s in store.spans(run_id) if s.parent_id is None)
    assert root.attributes[attr.WORKFLOW_ASYNC_LIBRARY] == backend
    fanpipe.BROKEN = False
    # Concurrent siblings may start in any order (trio schedules new tasks at random, threads
    # race); here the order is also reversed outright, so every position holds other inputs.
    for order in (list(range(8)), list(reversed(range(8)))) * 2:
        fanpipe.ORDER[:] = order
        fanpipe.CALLS.clear()
        assert spanflow.replay(run_id, db=db) == sum(i * 10 - i + (100 + i) * 10 for i in range(8))
        assert fanpipe.CALLS == ["finish"], order
    # Every replay ran on the event loop the run was recorded on.
    assert fanpipe.LOOPS.count(backend) == len(fanpipe.LOOPS) == 5


RID = "cd" * 16


def _span(sid: int, name: str, parent: int | None, **extra: object) -> SpanRecord:
    return SpanRecord(
        run_id=RID,
        span_id=f"{sid:016x}",
        parent_id=f"{parent:016x}" if parent else None,
        name=name,
        start_ns=sid,
        end_ns=sid + 1,
        attributes={attr.STEP_NAME: name, attr.STEP_TYPE: "step", **extra},
    )


def _siblings(root: str, inputs: list[int]) -> ReplayPlan:
    """A run whose root ``root`` called ``get(i)`` for each of ``inputs`` (output ``i * 10``)."""
    spans = [_span(1, root, None, **{attr.STEP_TYPE: "workflow"})]
    for n, i in enumerate(inputs):
        extra = {attr.INPUT_VALUE: json.dumps({"i": i}), attr.OUTPUT_VALUE: f'{{"v": {i * 10}}}'}
        spans.append(_span(n + 2, "get", 1, **extra, **{attr.STEP_OCCURRENCE: n}))
    return build_plan(RID, spans, None)[0]


class Out(BaseModel):
    v: int

    @field_validator("v")
    @classmethod
    def _nap(cls, v: int) -> int:
        time.sleep(0.001)  # rebuilding a recorded output takes a while: threads overlap here
        return v


def get(i: int) -> Out:
    return Out(v=i)


def _replay_calls(plan: ReplayPlan, root: str, inputs: list[int]) -> list[tuple[bool, Any]]:
    results = []
    for n, i in enumerate(inputs):
        hit, value, _ = plan.reuse(f"{root}/get[{n}]", root, "get", get, encode({"i": i}), [])
        results.append((hit, value.v if hit else value))
    return results


def test_a_call_whose_position_holds_other_inputs_takes_an_untaken_sibling() -> None:
    plan = _siblings("wf", [7, 8, 7])
    # Position 0 holds i=7 but the call has i=8: it takes the recorded i=8 call; both i=7 calls
    # are reused once each; a third i=7 call (its position taken) and an unrecorded input run live.
    assert _replay_calls(plan, "wf", [8, 7, 7, 7, 9]) == [
        (True, 80),
        (True, 70),
        (True, 70),
        (False, None),
        (False, None),
    ]
    assert plan.executed == ["wf/get[3]", "wf/get[4]"]


def test_a_recorded_call_is_never_reused_twice() -> None:
    # Recorded get(1), get(2); today's code calls get(2) twice: the first takes position 1 by its
    # inputs, so the second (at position 1, now taken) runs live.
    assert _replay_calls(_siblings("wf", [1, 2]), "wf", [2, 2]) == [(True, 20), (False, None)]


def test_a_sequential_run_keeps_matching_by_position() -> None:
    plan = _siblings("wf", [1, 2, 3])
    assert _replay_calls(plan, "wf", [1, 5, 3]) == [(True, 10), (False, None), (True, 30)]
    assert plan.notes == ["wf/get[1]: runs live: its inputs changed"]


def test_step_names_with_brackets_and_slashes() -> None:
    plan = _siblings("eval[v2]/nightly", [1, 2])
    assert _replay_calls(plan, "eval[v2]/nightly", [2, 1]) == [(True, 20), (True, 10)]


def _race(plan: ReplayPlan, inputs: list[int]) -> list[Any]:
    """Call ``get(i)`` for each of ``inputs``, each from its own thread, all at once."""
    hits: list[Any] = []
    barrier = threading.Barrier(len(inputs))

    def call(n: int) -> None:
        barrier.wait()
        hit, value, _ = plan.reuse(f"wf/get[{n}]", "wf", "get", get, encode({"i": inputs[n]}), [])
        if hit:
            hits.append(value.v)

    started = [threading.Thread(target=call, args=(n,)) for n in range(len(inputs))]
    for t in started:
        t.start()
    for t in started:
        t.join()
    return hits


def test_threads_racing_for_the_same_recorded_calls_take_each_once() -> None:
    recorded = [1, 2] * 6
    # The first six calls all pass 2: three find it at their own position, three look for
    # recorded siblings, the very calls later positions match exactly. Nine calls want the six
    # recorded get(2) outputs: each is handed out once, three calls run live.
    today = [2] * 6 + recorded[6:]
    for _ in range(5):
        assert sorted(_race(_siblings("wf", recorded), today)) == [10] * 3 + [20] * 6


REORDER = """
import spanflow
from pydantic import model_validator

ORDER = [1, 2]
CALLS: list[str] = []
BROKEN = True


class S(spanflow.State):
    docs: list[str] = []
    scores: list[int] = []

    @model_validator(mode="after")
    def _aligned(self) -> "S":
        if len(self.docs) != len(self.scores):
            raise ValueError("docs and scores must stay aligned")
        return self


@spanflow.step
def child(i: int) -> int:
    CALLS.append(f"child {i}")
    return i * 10


@spanflow.step
def extra() -> str:
    CALLS.append("extra")
    return "x"


@spanflow.step
def record(s: S, doc: str) -> int:
    CALLS.append("record")
    s.docs.append(doc)  # in place: the pair is only checked when the model is validated
    s.scores.append(len(doc))
    return len(s.docs)


@spanflow.step
def parent(i: int) -> int:
    CALLS.append(f"parent {i}")
    if i == 2:
        extra()
    value = child(i)
    if BROKEN and i == 2:
        raise ValueError("not fixed yet")
    return value


@spanflow.workflow
def wf() -> list[object]:
    s = S()
    record(s, "a")
    return [sum(parent(i) for i in ORDER), s.docs, s.scores]
"""


@pytest.fixture
def reorder(stored_module: StoredModule) -> tuple[Any, str, Path]:
    """A recorded run whose ``parent(2)`` failed after calling ``extra()`` and ``child(2)``."""
    mod, db = stored_module("reorder", REORDER)
    with pytest.raises(ValueError):
        mod.wf()
    run_id = newest_run(db)
    mod.BROKEN = False
    return mod, run_id, db


@pytest.mark.parametrize("order", [[1, 2], [2, 1]])
def test_a_reordered_failed_step_keeps_its_own_calls_reused(
    reorder: tuple[Any, str, Path], order: list[int]
) -> None:
    mod, run_id, db = reorder
    mod.ORDER[:] = order
    mod.CALLS.clear()
    # parent(1) reused; parent(2), the failed step, runs live and its calls are matched under
    # the recorded parent(2), wherever it now comes.
    assert spanflow.replay(run_id, db=db) == [30, ["a"], [1]]
    assert mod.CALLS == ["parent 2"]


@pytest.mark.parametrize("order", [[1, 2], [2, 1]])
def test_from_step_runs_the_calls_after_it_live_whatever_the_order(
    reorder: tuple[Any, str, Path], order: list[int]
) -> None:
    mod, run_id, db = reorder
    mod.ORDER[:] = order
    mod.CALLS.clear()
    spanflow.replay(run_id, db=db, from_step="extra")
    assert sorted(mod.CALLS) == ["child 2", "extra", "parent 2"]


def test_a_call_matching_no_recorded_call_runs_its_own_calls_live(
    reorder: tuple[Any, str, Path],
) -> None:
    mod, run_id, db = reorder
    # parent(9) first: it matches nothing recorded (its position holds parent(1)); its calls
    # run live rather than compete with parent(1)'s, which is then matched by its inputs.
    mod.ORDER[:] = [9, 1]
    mod.CALLS.clear()
    spanflow.replay(run_id, db=db)
    assert mod.CALLS == ["parent 9", "child 9"]


def test_a_reused_state_change_is_applied_whole(reorder: tuple[Any, str, Path]) -> None:
    mod, run_id, db = reorder
    mod.CALLS.clear()
    # record() appended to both lists at once. Re-applied field by field, the model's validator
    # would see one list longer than the other in between.
    assert spanflow.replay(run_id, db=db) == [30, ["a"], [1]]
    assert mod.CALLS == ["parent 2"]


@pytest.mark.timeout(10)
def test_a_plan_is_built_whatever_the_parent_graph() -> None:
    # A hostile or damaged store: a parent cycle among steps, one through a foreign span, a step
    # that is its own parent, and a chain far deeper than Python's recursion limit.
    spans = [_span(1, "wf", None, **{attr.STEP_TYPE: "workflow"}), _span(2, "ok", 1)]
    spans += [_span(10, "a", 11), _span(11, "b", 10)]
    spans += [_span(20, "c", 21), _span(21, "http", 20, **{attr.STEP_TYPE: "other"})]
    spans += [_span(30, "self", 30)]
    spans += [_span(100 + i, "deep", 100 + i - 1 if i else 1) for i in range(5000)]
    plan = build_plan(RID, spans, None)[0]
    assert "wf/ok[0]" in plan.calls
    assert not any(c.name in ("a", "b", "c", "self") for c in plan.calls.values())
    assert sum(c.name == "deep" for c in plan.calls.values()) == 5000
