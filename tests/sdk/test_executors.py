"""Steps on process pools and Dask: one trace across processes, errors and spans travel back."""

from __future__ import annotations

import asyncio
import functools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import executor_checks as ec
import pytest
import spanflow
from opentelemetry.sdk.resources import PROCESS_PID
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from spanflow import attributes as attr
from spanflow import runtime
from spanflow.exporters.store import Store

from tests.conftest import Recorded

# Python 3.12+ warns when forking a process that has threads (the store writer has one); the
# fork start method is what this suite means to exercise, inherited processors and all.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


@pytest.fixture
def fork_pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool


@pytest.fixture
def spawn_pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@spanflow.workflow
async def fan_out(step: Any, items: list[Any], executor: Any) -> list[Any]:
    return await spanflow.map(step, items, executor=executor)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- process pools -----------------------------------------------------------------------------


def test_map_on_forked_pool_is_one_trace_under_the_caller(
    recorded_with_store: tuple[Recorded, Path], fork_pool: ProcessPoolExecutor
) -> None:
    recorded, db = recorded_with_store
    assert run(fan_out(ec.square, list(range(8)), fork_pool)) == [x * 10 + x * x for x in range(8)]
    spanflow.flush()
    run_id, spans = ec.only_run(db)
    workers = ec.check_fan_out(spans, step="square", count=8, caller_pid=os.getpid())
    assert len({w.resource[PROCESS_PID] for w in workers.values()}) >= 1
    assert len(spans) == 1 + 8 * 4  # workflow; per item: step, worker span, leaf, library span
    # The application's own processor (its in-memory exporter) got the worker spans too: they
    # came back to this process, rather than workers writing to the store behind our back.
    worker_ids = ec.worker_span_ids(spans)
    assert len(worker_ids) == 8 * 3
    assert worker_ids <= ec.hex_ids(recorded.spans)
    assert {format(s.context.trace_id, "032x") for s in recorded.spans} == {run_id}
    leafs = [s for s in spans if s.name == "leaf"]
    assert all(s.attributes[attr.RUN_ID] == run_id for s in leafs)
    assert sorted(json_value(s.attributes[attr.OUTPUT_VALUE]) for s in leafs) == [
        x * 10 for x in range(8)
    ]


def json_value(text: Any) -> Any:
    assert isinstance(text, str)
    return json.loads(text)


def recorded_json(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return json_value(span.attributes[key])


def test_failing_item_reraises_with_its_worker_spans(
    recorded_with_store: tuple[Recorded, Path], fork_pool: ProcessPoolExecutor
) -> None:
    recorded, db = recorded_with_store
    with pytest.raises(spanflow.RemoteStepError) as info:
        run(fan_out(ec.square_or_fail, [3], fork_pool))
    err = info.value
    assert err.type_name == "ValueError"
    assert err.remote_message == "item 3 is cursed"
    assert "square_or_fail" in err.remote_traceback
    assert 'raise ValueError(f"item {x} is cursed")' in err.remote_traceback
    assert "spanflow/remote.py" not in err.remote_traceback
    assert any("the worker's traceback" in note for note in err.__notes__)
    spanflow.flush()
    _, spans = ec.only_run(db)
    (step,) = ec.failed(spans, "square_or_fail")
    (worker,) = ec.failed(spans, "run/square_or_fail")
    assert worker.parent_id == step.span_id
    assert worker.attributes[attr.ERROR_TYPE] == "ValueError"
    (event,) = [e for e in worker.events if e.name == attr.EXCEPTION_EVENT]
    assert event.attributes[attr.EXCEPTION_MESSAGE] == "item 3 is cursed"
    # the nested step ran before the failure: its span arrived with the error
    (leaf,) = [s for s in spans if s.name == "leaf"]
    assert leaf.parent_id == worker.span_id
    assert leaf.status == "UNSET"
    assert ec.hex_ids(recorded.named("leaf")) == {leaf.span_id}


def test_spawned_workers_never_open_a_store(
    recorded_with_store: tuple[Recorded, Path],
    spawn_pool: ProcessPoolExecutor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, db = recorded_with_store
    elsewhere = tmp_path / "inherited" / "traces.db"
    monkeypatch.setenv("SPANFLOW_DB", str(elsewhere))  # what spawned workers inherit
    assert run(fan_out(ec.square, [1, 2, 3], spawn_pool)) == [11, 24, 39]
    spanflow.flush()
    _, spans = ec.only_run(db)
    ec.check_fan_out(spans, step="square", count=3, caller_pid=os.getpid())
    assert not elsewhere.parent.exists()


def test_step_option_runs_the_body_remotely(
    recorded: Recorded, fork_pool: ProcessPoolExecutor
) -> None:
    remote_square = spanflow.step(name="remote_square", executor=fork_pool)(ec.body(ec.square))

    @spanflow.workflow
    def flow() -> list[int]:
        return [remote_square(2), remote_square(3)]

    assert flow() == [24, 39]
    steps = recorded.named("remote_square")
    assert len(steps) == 2
    for step in steps:
        (worker,) = recorded.children(step)
        assert worker.name == "run/remote_square"
        assert worker.resource.attributes[PROCESS_PID] != os.getpid()
        assert [c.name for c in recorded.children(worker)] == ["leaf"]


def test_async_steps_run_remotely_and_time_out(
    recorded: Recorded, fork_pool: ProcessPoolExecutor
) -> None:
    remote = spanflow.step(name="remote_async", executor=fork_pool)(ec.body(ec.async_square))
    assert run(remote(5)) == 25
    (worker,) = recorded.children(recorded.one("remote_async"))
    assert [c.name for c in recorded.children(worker)] == ["leaf"]
    napping = spanflow.step(name="napping", executor=fork_pool, timeout=0.3)(ec.body(ec.async_nap))
    started = time.monotonic()
    with pytest.raises(spanflow.StepTimeout):
        run(napping(1.5))
    assert time.monotonic() - started < 1.2


def test_map_on_trio_waits_for_the_pool(recorded: Recorded, fork_pool: ProcessPoolExecutor) -> None:
    import trio

    assert trio.run(fan_out, ec.square, [1, 2, 3], fork_pool) == [11, 24, 39]
    assert len(recorded.named("run/square")) == 3


def test_parallel_ships_partials_and_plain_callables(
    recorded: Recorded, fork_pool: ProcessPoolExecutor
) -> None:
    @spanflow.workflow
    async def flow() -> list[int]:
        return await spanflow.parallel(
            functools.partial(ec.square, 2),
            functools.partial(ec.plain_triple, 2),
            executor=fork_pool,
        )

    assert run(flow()) == [24, 60]
    (root,) = recorded.named("flow")
    kids = sorted(recorded.children(root), key=lambda s: s.name)
    # the step keeps its span here; the plain function has only the worker's span
    assert [k.name for k in kids] == ["run/plain_triple", "square"]
    (leaf,) = recorded.children(kids[0])
    assert leaf.name == "leaf"
    assert leaf.attributes is not None and leaf.attributes[attr.RUN_ID] == format(
        root.context.trace_id, "032x"
    )


def test_parallel_refuses_what_cannot_be_shipped(fork_pool: ProcessPoolExecutor) -> None:
    @spanflow.step
    async def job() -> int:
        return 1

    with pytest.raises(spanflow.ConfigurationError, match=r"functools\.partial"):
        run(spanflow.parallel(job(), executor=fork_pool))
    # a lambda does not pickle with the standard library: the error says what would
    with pytest.raises(Exception, match="pickle") as info:
        run(spanflow.parallel(lambda: 1, executor=fork_pool))
    assert any("<lambda> is a lambda or a local function" in n for n in info.value.__notes__)


def test_thread_pool_runs_in_process_with_the_same_tree(recorded: Recorded) -> None:
    with ThreadPoolExecutor(2) as pool:
        assert run(fan_out(ec.square, [1, 2], pool)) == [11, 24]
        with pytest.raises(spanflow.RemoteStepError) as info:
            run(fan_out(ec.square_or_fail, [3], pool))
    assert isinstance(info.value.__cause__, ValueError)  # in-process: the original is kept too
    for step in recorded.named("square"):
        (worker,) = recorded.children(step)
        assert worker.name == "run/square"
        assert [c.name for c in recorded.children(worker)] == ["leaf"]
    (worker,) = recorded.named("run/square_or_fail")
    assert worker.status.status_code is StatusCode.ERROR


def test_retries_resubmit_and_timeouts_abandon_the_task(
    recorded: Recorded, fork_pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    slow = spanflow.step(name="slow", executor=fork_pool, timeout=0.3)(ec.body(ec.nap))
    with pytest.raises(spanflow.StepTimeout, match=r"'slow' timed out after 0\.3s"):
        slow(1.0)
    # the abandoned task still finishes; its worker span arrives when it does
    deadline = time.monotonic() + 10
    while not recorded.named("run/slow") and time.monotonic() < deadline:
        time.sleep(0.05)
    (worker,) = recorded.named("run/slow")
    assert worker.parent is not None
    assert worker.parent.span_id == recorded.one("slow").context.span_id

    flaky = spanflow.step(name="flaky", executor=fork_pool, retries=2, retry=_no_wait())(
        ec.body(ec.square_or_fail)
    )
    with pytest.raises(spanflow.RemoteStepError):
        flaky(3)
    attempts = [s for s in recorded.spans if s.name.startswith("flaky #")]
    assert len(attempts) == 3
    assert len(recorded.named("run/flaky")) == 3  # every attempt was sent again


def _no_wait() -> Any:
    import tenacity

    return tenacity.wait_none()


def test_state_changes_come_back_from_the_worker(
    recorded: Recorded, fork_pool: ProcessPoolExecutor
) -> None:
    remote_bump = spanflow.step(name="remote_bump", executor=fork_pool)(ec.body(ec.bump))
    state = ec.Counter()
    assert remote_bump(state, 5) == 5
    assert remote_bump(state, 2) == 7
    assert state.count == 7 and state.seen == [5, 2]
    diffs = [recorded_json(s, attr.STATE_DIFF) for s in recorded.named("remote_bump")]
    assert {"op": "replace", "path": "/count", "value": 7} in diffs[1]


def test_token_usage_reaches_the_run_totals(
    recorded: Recorded, fork_pool: ProcessPoolExecutor
) -> None:
    assert run(fan_out(ec.usage, [1, 2, 3], fork_pool)) == [1, 2, 3]
    root = recorded.one("fan_out")
    assert root.attributes is not None
    assert root.attributes[attr.GEN_AI_INPUT_TOKENS] == 6
    assert root.attributes[attr.GEN_AI_OUTPUT_TOKENS] == 12


def test_workers_redact_with_the_callers_settings(
    tmp_path: Path, fork_pool: ProcessPoolExecutor
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spanflow.configure(tracer_provider=provider, db=False, redact_keys=["ssn"])
    try:
        assert run(fan_out(ec.tell_secret, ["123-45-6789"], fork_pool)) == ["done"]
    finally:
        runtime.reset_for_tests()
        provider.shutdown()
    (nested,) = [s for s in exporter.get_finished_spans() if s.name == "secret"]
    assert nested.attributes is not None
    text = str(nested.attributes[attr.INPUT_VALUE])
    assert "123-45-6789" not in text and "sk-abcdef" not in text
    assert text.count("[REDACTED]") == 2


def test_recording_off_still_runs_remotely(fork_pool: ProcessPoolExecutor) -> None:
    spanflow.configure(enabled=False)
    try:
        assert run(fan_out(ec.square, [1, 2], fork_pool)) == [11, 24]
        with pytest.raises(spanflow.RemoteStepError, match="item 3 is cursed"):
            run(fan_out(ec.square_or_fail, [3], fork_pool))
    finally:
        runtime.reset_for_tests()


def test_workers_export_otlp_themselves_when_asked(
    tmp_path: Path, fork_pool: ProcessPoolExecutor
) -> None:
    receiver = ec.OtlpReceiver()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with receiver.running():
        spanflow.configure(
            tracer_provider=provider,
            db=tmp_path / "t.db",
            otlp_endpoint=receiver.endpoint,
            worker_otlp=True,
        )
        try:
            with pytest.raises(BrokenProcessPool):
                run(fan_out(ec.leaf_then_die, [4], fork_pool))
            spanflow.flush()
        finally:
            runtime.reset_for_tests()
            provider.shutdown()
    # the worker died mid-task, so nothing came back; what it exported itself survived
    assert "leaf" in receiver.names and "library.call" in receiver.names
    assert not [s for s in exporter.get_finished_spans() if s.name == "leaf"]


def test_script_steps_ship_by_value_and_by_reference(tmp_path: Path) -> None:
    script = tmp_path / "pipeline.py"
    script.write_text(
        "import asyncio, multiprocessing, sys\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "import spanflow\n\n"
        "@spanflow.step(retries=1)\n"
        "def inner(x: int) -> int:\n"
        "    return x + 1\n\n"
        "@spanflow.step\n"
        "def outer(x: int) -> int:\n"
        "    return inner(x) * 2\n\n"
        "@spanflow.workflow\n"
        "async def flow(method: str) -> list[int]:\n"
        "    ctx = multiprocessing.get_context(method)\n"
        "    with ProcessPoolExecutor(1, mp_context=ctx) as pool:\n"
        "        return await spanflow.map(outer, [1, 2], executor=pool)\n\n"
        "if __name__ == '__main__':\n"
        "    print(asyncio.run(flow(sys.argv[1])))\n"
        "    spanflow.flush()\n"
    )
    import subprocess

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPANFLOW_", "OTEL_"))}
    for method in ("fork", "spawn"):
        db = tmp_path / f"{method}.db"
        proc = subprocess.run(
            [sys.executable, "-W", "ignore::DeprecationWarning", str(script), method],
            cwd=tmp_path,
            env={**clean, "SPANFLOW_DB": str(db)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "[4, 6]"
        _, spans = ec.only_run(db)
        ec.check_fan_out(spans, step="outer", count=2, nested=("inner",))
        # the forked workers inherited the script's store processor: nothing was written twice
        assert len(spans) == len({s.span_id for s in spans}) == 1 + 2 * 4


@spanflow.workflow
async def squares_on_a_pool(items: list[int]) -> list[int]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        return await spanflow.map(ec.square_or_fail, items, executor=pool, limit=1)


def test_replay_reuses_remote_steps_that_succeeded(
    recorded_with_store: tuple[Recorded, Path],
) -> None:
    recorded, db = recorded_with_store
    with pytest.raises(spanflow.RemoteStepError):
        run(squares_on_a_pool([1, 2, 3]))
    spanflow.flush()
    original, _ = ec.only_run(db)
    recorded.clear()
    with pytest.raises(spanflow.RemoteStepError, match="cursed"):
        spanflow.replay(original, db=db)
    steps = recorded.named("square_or_fail")
    cached = [s for s in steps if s.attributes and s.attributes.get(attr.REPLAY_CACHED)]
    assert len(steps) == 3 and len(cached) == 2
    assert all(recorded.children(s) == [] for s in cached)  # reused: nothing was sent
    (worker,) = recorded.named("run/square_or_fail")  # only the failed item ran again
    assert worker.status.status_code is StatusCode.ERROR


# -- Dask ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
    )
    client = distributed.Client(cluster)
    try:
        yield client.get_executor()
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_dask_workers_join_the_trace(
    recorded_with_store: tuple[Recorded, Path], dask_executor: Any
) -> None:
    recorded, db = recorded_with_store
    results = run(fan_out(ec.pid_of, list(range(6)), dask_executor))
    assert [x for x, _ in results] == list(range(6))
    assert os.getpid() not in {pid for _, pid in results}
    spanflow.flush()
    _, spans = ec.only_run(db)
    ec.check_fan_out(spans, step="pid_of", count=6, caller_pid=os.getpid())
    assert ec.worker_span_ids(spans) <= ec.hex_ids(recorded.spans)
    with pytest.raises(spanflow.RemoteStepError, match="cursed"):
        run(fan_out(ec.square_or_fail, [3], dask_executor))
    assert recorded.named("run/square_or_fail")[0].status.status_code is StatusCode.ERROR


def test_store_reads_the_worker_resource(
    recorded_with_store: tuple[Recorded, Path], fork_pool: ProcessPoolExecutor
) -> None:
    _, db = recorded_with_store
    results = run(fan_out(ec.pid_of, [1, 2, 3, 4], fork_pool))
    worker_pids = {pid for _, pid in results}
    spanflow.flush()
    with Store.open(db) as store:
        (rec,) = store.list_runs()
        spans = store.spans(rec.id)
    assert {s.resource[PROCESS_PID] for s in spans if s.name == "run/pid_of"} == worker_pids
    assert rec.status == "ok" and rec.span_count == len(spans)


def test_executor_options_are_checked_early(fork_pool: ProcessPoolExecutor) -> None:
    with pytest.raises(spanflow.ConfigurationError, match="is not an executor"):
        spanflow.step(executor="ray")(ec.body(ec.square))  # type: ignore[call-overload]
    with pytest.raises(spanflow.ConfigurationError, match="resources= must be a mapping"):
        spanflow.step(executor=fork_pool, resources=["gpu"])(ec.body(ec.square))  # type: ignore[call-overload]

    def numbers(n: int) -> Iterator[int]:
        yield n

    with pytest.raises(spanflow.ConfigurationError, match="generator cannot run on an executor"):
        spanflow.step(executor=fork_pool)(numbers)
    with pytest.raises(spanflow.ConfigurationError, match="cannot run on an executor"):
        run(spanflow.map(spanflow.step(numbers), [1], executor=fork_pool))
