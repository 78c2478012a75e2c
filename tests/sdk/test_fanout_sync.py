"""Fan-out from sync code (``parallel_sync``/``map_sync``), the async forms refusing sync callers,
``map`` of sync steps off the event loop, and ``aroute`` over mixed sync/async branches."""

from __future__ import annotations

import functools
import itertools
import threading
import time

import anyio
import pytest
import spanflow
import tenacity
from spanflow import attributes as attr

from tests.conftest import Recorded


class InFlight:
    """Counts the calls running at once and remembers the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.started: list[int] = []

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


class Cursed(Exception):
    pass


def _parents(recorded: Recorded, name: str) -> set[int]:
    return {s.parent.span_id for s in recorded.named(name) if s.parent is not None}


def _span_id(recorded: Recorded, name: str) -> int:
    context = recorded.one(name).context
    assert context is not None
    return int(context.span_id)


# -- parallel_sync / map_sync ----------------------------------------------------------------


def test_map_sync_respects_limit_and_spans_are_children_of_the_caller(
    recorded: Recorded,
) -> None:
    flight = InFlight()

    @spanflow.step
    def work(x: int) -> tuple[int, str]:
        with flight:
            time.sleep(0.05)
        return x * x, threading.current_thread().name

    @spanflow.workflow
    def flow(items: list[int]) -> list[tuple[int, str]]:
        return spanflow.map_sync(work, items, limit=3)

    results = flow(list(range(9)))
    assert [value for value, _ in results] == [x * x for x in range(9)]
    assert flight.peak == 3  # measured: never more than limit at once, and the limit was used
    assert {thread for _, thread in results} <= {f"spanflow-parallel-{n}" for n in range(3)}
    assert len(recorded.named("work")) == 9
    assert _parents(recorded, "work") == {_span_id(recorded, "flow")}


def test_parallel_sync_keeps_the_context_of_a_nested_step(recorded: Recorded) -> None:
    @spanflow.step
    def leaf(x: int) -> int:
        return x + 1

    @spanflow.step
    def branch() -> list[int]:
        return spanflow.parallel_sync(functools.partial(leaf, 1), lambda: leaf(2))

    @spanflow.workflow
    def flow() -> list[int]:
        return branch()

    assert flow() == [2, 3]
    assert _parents(recorded, "leaf") == {_span_id(recorded, "branch")}
    assert len({s.context.trace_id for s in recorded.spans if s.context}) == 1


def test_parallel_sync_first_failure_stops_the_rest_and_raises_its_own_exception(
    recorded: Recorded,
) -> None:
    ran: list[int] = []
    raised = Cursed("item 1")

    @spanflow.step
    def item(x: int) -> int:
        ran.append(x)
        if x == 1:
            raise raised
        time.sleep(0.05)
        return x

    @spanflow.workflow
    def flow() -> list[int]:
        return spanflow.map_sync(item, range(6), limit=2)

    with pytest.raises(Cursed) as caught:
        flow()
    assert caught.value is raised
    # 0 and 1 started together; 1 failed at once, so nothing after the running 0 started
    assert sorted(ran) == [0, 1]
    assert len(recorded.named("item")) == 2


def test_parallel_sync_refuses_coroutines_and_bad_limits(recorded: Recorded) -> None:
    @spanflow.step
    async def job(x: int = 1) -> int:
        return x

    coroutine = job()
    with pytest.raises(spanflow.ConfigurationError, match=r"await spanflow\.parallel"):
        spanflow.parallel_sync(coroutine)  # type: ignore[arg-type]
    with pytest.raises(spanflow.ConfigurationError, match=r"await spanflow\.parallel"):
        spanflow.map_sync(job, [1])
    with pytest.raises(spanflow.ConfigurationError, match="limit"):
        spanflow.parallel_sync(lambda: 1, limit=0)
    assert spanflow.parallel_sync() == []
    assert not recorded.spans


# -- the async forms called from sync code -----------------------------------------------------


def test_async_forms_refuse_a_sync_workflow_instead_of_running_nothing(
    recorded: Recorded,
) -> None:
    calls: list[int] = []

    @spanflow.step
    async def fetch(x: int) -> int:
        calls.append(x)
        return x

    @spanflow.workflow
    def sync_flow() -> object:
        return spanflow.parallel(fetch(1), fetch(2))

    @spanflow.workflow
    def sync_map() -> object:
        return spanflow.map(fetch, [1, 2])

    with pytest.raises(spanflow.ConfigurationError, match=r"spanflow\.parallel_sync\(\.\.\.\)"):
        sync_flow()
    with pytest.raises(spanflow.ConfigurationError, match=r"spanflow\.map_sync\(\.\.\.\)"):
        sync_map()
    assert calls == []  # and the coroutines were closed: no "never awaited" warning (an error)
    (span,) = recorded.named("sync_flow")
    assert span.attributes is not None and "output.value" not in span.attributes


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_sync_step_inside_an_async_workflow_is_refused_too(
    recorded: Recorded, anyio_backend: str
) -> None:
    @spanflow.step
    async def fetch(x: int) -> int:
        return x

    @spanflow.step
    def sync_step() -> object:
        return spanflow.parallel(fetch(1))

    @spanflow.workflow
    async def flow() -> object:
        return await anyio.to_thread.run_sync(sync_step)

    with pytest.raises(spanflow.ConfigurationError, match="parallel_sync"):
        await flow()


# -- map of a sync step in async code ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_map_of_a_sync_step_runs_in_threads_and_never_blocks_the_loop(
    recorded: Recorded, anyio_backend: str
) -> None:
    flight = InFlight()
    failed_once: set[int] = set()

    @spanflow.step(retry=(tenacity.stop_after_attempt(2), tenacity.wait_fixed(0.2)))
    def work(x: int) -> int:
        with flight:
            time.sleep(0.1)
        if x not in failed_once:
            failed_once.add(x)
            raise Cursed(f"first try of {x}")
        return x

    ticks: list[float] = []

    async def heartbeat() -> None:
        while True:
            ticks.append(time.monotonic())
            await anyio.sleep(0.02)

    @spanflow.workflow
    async def flow() -> list[int]:
        return await spanflow.map(work, range(4), limit=2)

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        started = time.monotonic()
        assert await flow() == [0, 1, 2, 3]
        elapsed = time.monotonic() - started
        tg.cancel_scope.cancel()
    assert flight.peak == 2
    # 4 items x (0.1 + 0.2 wait + 0.1), two at a time: ~0.8 s; one after another would be 1.6 s
    assert elapsed < 1.3, elapsed
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.15, max(gaps)  # the loop kept ticking through attempts and waits
    assert _parents(recorded, "work") == {_span_id(recorded, "flow")}


# -- one route form for mixed branches ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_aroute_awaits_async_branches_and_returns_sync_ones(
    recorded: Recorded, anyio_backend: str
) -> None:
    @spanflow.step
    def auto_reply(text: str) -> str:
        return f"auto:{text}"

    @spanflow.step
    async def escalate(text: str) -> str:
        await anyio.sleep(0)
        return f"human:{text}"

    @spanflow.workflow
    async def support(label: str, text: str) -> str:
        return await spanflow.aroute(
            label, {"auto": auto_reply, "urgent": escalate}, text, name="triage"
        )

    assert await support("auto", "hi") == "auto:hi"
    assert await support("urgent", "help") == "human:help"
    branches = [(s.attributes or {}).get(attr.ROUTE_BRANCH) for s in recorded.named("support")]
    assert branches == ["auto", "urgent"]
    with pytest.raises(LookupError):
        await spanflow.aroute("nope", {"auto": auto_reply}, "x")
