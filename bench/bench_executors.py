"""What carrying one trace across processes costs, per task, on each engine; and a Ray fan-out.

    python bench/bench_executors.py [--quick] [--no-ray] [--no-dask]

For a process pool (fork), Dask (``LocalCluster``, processes) and Ray (a private local instance),
three ways of running the same trivial function one task after another:

* **bare**: ``executor.submit(fn, x).result()``, the engine's own round trip;
* **protocol**: the function through spanflow's remote call inside a run: trace context and run
  id sent with the task, a worker span, every worker span collected, sent back and re-created
  for the caller's processors (the SQLite store here);
* **step**: a ``@spanflow.step(executor=...)`` call: the protocol plus the caller's step span.

Then 40 I/O-bound steps of 0.2 s fanned out through Ray against local threads. Every figure is
the median of interleaved rounds (each case once per round), so noise lands on all cases alike.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import spanflow
from common import interleaved
from spanflow import runtime
from spanflow.distributed.caller import RemoteFunction

Row = tuple[str, str, str]


def noop(x: int) -> int:
    return x


@spanflow.step
def io_bound(x: int) -> int:
    time.sleep(0.2)
    return x


def per_task_ms(fn: Callable[[int], Any], n: int) -> Callable[[], float]:
    def case() -> float:
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        return (time.perf_counter() - start) / n * 1e3

    return case


def in_a_run(fn: Callable[[int], Any], n: int) -> Callable[[], float]:
    """n sequential calls inside one workflow run; milliseconds per call."""

    @spanflow.workflow(name="bench_run", capture="none")
    def run() -> None:
        for i in range(n):
            fn(i)

    def case() -> float:
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) / n * 1e3

    return case


def round_trips(name: str, executor: Executor, n: int, repeats: int) -> list[Row]:
    protocol = RemoteFunction(noop, executor, name="noop")
    step = spanflow.step(name="noop_step", executor=executor)(noop)
    for warm in range(20):  # start the workers, import spanflow there
        executor.submit(noop, warm).result()
        step(warm)
    cases = {
        "bare": per_task_ms(lambda x: executor.submit(noop, x).result(), n),
        "protocol": in_a_run(protocol, n),
        "step": in_a_run(step, n),
    }
    got = interleaved(cases, repeats)
    bare = got["bare"]
    return [
        (f"{name}: bare round trip", f"{bare:.3f} ms/task", "1.00x"),
        (
            f"{name}: trace protocol",
            f"{got['protocol']:.3f} ms/task (+{got['protocol'] - bare:.3f} ms)",
            f"{got['protocol'] / bare:.2f}x",
        ),
        (
            f"{name}: remote step (protocol + step span)",
            f"{got['step']:.3f} ms/task (+{got['step'] - bare:.3f} ms)",
            f"{got['step'] / bare:.2f}x",
        ),
    ]


def io_call(x: int) -> int:
    time.sleep(0.2)
    return x


def ray_fan_out(executor: spanflow.RayExecutor, repeats: int) -> list[Row]:
    io_executor = executor.options(num_cpus=0)  # I/O-bound: no CPU reserved, all 40 at once

    @spanflow.workflow(name="ray_fan_out")
    async def on_ray() -> list[int]:
        return await spanflow.map(io_bound, range(40), executor=io_executor)

    @spanflow.workflow(name="thread_fan_out")
    async def on_threads() -> list[int]:
        return await spanflow.map(io_bound, range(40))

    async def bare_ray() -> list[int]:
        futures = [io_executor.submit(io_call, x) for x in range(40)]
        return [f.result() for f in futures]

    def timed(flow: Callable[[], Any]) -> Callable[[], float]:
        def case() -> float:
            start = time.perf_counter()
            asyncio.run(flow())
            return time.perf_counter() - start

        return case

    timed(on_ray)()  # Ray starts a worker process per concurrent task: warm them up once
    timed(bare_ray)()
    got = interleaved(
        {"threads": timed(on_threads), "bare": timed(bare_ray), "ray": timed(on_ray)}, repeats
    )
    threads = got["threads"]
    return [
        ("40 x 0.2 s I/O steps: local threads", f"{threads:.3f} s", "1.00x"),
        (
            "40 x 0.2 s I/O calls: Ray tasks, no spanflow",
            f"{got['bare']:.3f} s",
            f"{got['bare'] / threads:.2f}x",
        ),
        ("40 x 0.2 s I/O steps: Ray", f"{got['ray']:.3f} s", f"{got['ray'] / threads:.2f}x"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-dask", action="store_true")
    args = parser.parse_args()
    n, repeats = (50, 5) if args.quick else (200, 7)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        spanflow.configure(db=Path(tmp) / "traces.db")
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(1, mp_context=fork) as pool:
            rows += round_trips("process pool (fork)", pool, n, repeats)
        if not args.no_dask:
            from distributed import Client, LocalCluster

            with (
                LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=1,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    worker_dashboard_address=None,
                ) as cluster,
                Client(cluster) as client,  # type: ignore[no-untyped-call]
            ):
                rows += round_trips("Dask", client.get_executor(), n, repeats)
        if not args.no_ray:
            ray_executor = spanflow.RayExecutor(
                num_cpus=os.cpu_count() or 2,
                log_to_driver=False,
                configure_logging=False,
                # Keep the 40 I/O workers between rounds (Ray kills idle ones after a second).
                _system_config={
                    "num_workers_soft_limit": 48,
                    "idle_worker_killing_time_threshold_ms": 600_000,
                },
            )
            try:
                rows += round_trips("Ray", ray_executor.options(num_cpus=1), n, repeats)
                rows += ray_fan_out(ray_executor, repeats)
            finally:
                ray_executor.shutdown()
        spanflow.flush()
        runtime.reset_for_tests()
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores; {n} sequential tasks per case, "
        f"median of {repeats} interleaved rounds"
    )
    print("| benchmark | figure | ratio |")
    print("| --- | --- | --- |")
    for name, figure, ratio in rows:
        print(f"| {name} | {figure} | {ratio} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
