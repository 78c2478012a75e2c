"""Per-step and per-run cost of spanflow against bare OpenTelemetry spans, in one process.

    python bench/bench_core.py [--quick] [--only steps|runs]

Prints a markdown table. Every comparison runs its cases interleaved (round after round) and
reports the median of the rounds, so noise from the machine lands on all cases alike.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import spanflow
import tenacity
from common import batch_provider, interleaved, per_call_us
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from spanflow import runtime

Row = tuple[str, str, str]


def answer(query: str, k: int = 3) -> dict[str, Any]:
    return {"answer": query.upper(), "k": k}


class NaiveSQLite(SpanExporter):
    """What one writes by hand: a batch exporter inserting each span's JSON into SQLite."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.conn.execute("pragma journal_mode=wal")
        self.conn.execute(
            "create table if not exists spans(trace text, span text, name text, attrs text)"
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [
            (
                format(s.context.trace_id, "032x"),
                format(s.context.span_id, "016x"),
                s.name,
                json.dumps(dict(s.attributes or {})),
            )
            for s in spans
            if s.context is not None
        ]
        self.conn.executemany("insert into spans values (?,?,?,?)", rows)
        self.conn.commit()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.conn.close()


def step_overhead(tmp: Path, n: int, repeats: int) -> list[Row]:
    bare_provider = batch_provider()
    bare_tracer = bare_provider.get_tracer("bench")
    naive_provider = TracerProvider()
    # As deep a queue as the bare span's: a dropped span would make the baseline cheaper.
    naive_provider.add_span_processor(
        BatchSpanProcessor(NaiveSQLite(tmp / "naive.db"), max_queue_size=200_000)
    )
    naive_tracer = naive_provider.get_tracer("bench")
    # Store off: spanflow's spans go through the same batch pipeline as the bare span's. Store on:
    # as spanflow sets itself up with no configuration, the store is the spans' only exporter,
    # as the naive baseline's SQLite exporter is its only one.
    exported_provider = batch_provider()
    store_provider = TracerProvider()
    step = spanflow.step(answer)
    dropped = 0

    def bare() -> None:
        with bare_tracer.start_as_current_span("answer"):
            answer("refund please", k=3)

    def contract() -> None:
        # The attributes spanflow's span contract asks of a step, set by hand: the floor of
        # recording them through the OTel API, before redaction, size limits or a store.
        attributes: dict[str, str | int] = {
            "spanflow.step.name": "answer",
            "spanflow.step.type": "step",
            "openinference.span.kind": "CHAIN",
            "spanflow.run.id": "0af7651916cd43dd8448eb211c80319c",
            "spanflow.step.occurrence": 1,
            "input.value": json.dumps({"query": "refund please", "k": 3}),
            "input.mime_type": "application/json",
        }
        with bare_tracer.start_as_current_span("answer", attributes=attributes) as span:
            out = answer("refund please", k=3)
            span.set_attributes(
                {"output.value": json.dumps(out), "output.mime_type": "application/json"}
            )

    def naive() -> None:
        with naive_tracer.start_as_current_span("answer") as span:
            span.set_attribute("input.value", json.dumps({"query": "refund please", "k": 3}))
            out = answer("refund please", k=3)
            span.set_attribute("output.value", json.dumps(out))

    # Each case ends by flushing what it queued, so work left to background threads counts.
    def in_run(fn: Any, provider: TracerProvider, db: Path | bool) -> Any:
        def flush_all() -> None:
            spanflow.flush()
            provider.force_flush()

        @spanflow.workflow(name="bench")
        def loop() -> float:
            return per_call_us(fn, n, then=flush_all)()

        def case() -> float:
            nonlocal dropped
            spanflow.configure(tracer_provider=provider, db=db)
            us = loop()
            dropped += spanflow.stats().get("store.spans_dropped", 0)
            return us

        return case

    def outside(provider: TracerProvider, fn: Any) -> Any:
        tracer = provider.get_tracer("bench")

        def loop() -> float:
            with tracer.start_as_current_span("bench"):
                return per_call_us(fn, n, then=provider.force_flush)()

        return loop

    med = interleaved(
        {
            "plain call": per_call_us(lambda: answer("refund please", k=3), n),
            "bare OTel span": outside(bare_provider, bare),
            "the span contract's nine attributes by hand, no store": outside(
                bare_provider, contract
            ),
            "naive span + json + SQLite": outside(naive_provider, naive),
            "@spanflow.step, store off, exported as the bare span": in_run(
                lambda: step("refund please", k=3), exported_provider, False
            ),
            "@spanflow.step, SQLite store as its only exporter": in_run(
                lambda: step("refund please", k=3), store_provider, tmp / "bench.db"
            ),
        },
        repeats,
    )
    base = med["bare OTel span"]
    rows = [(name, f"{us:.1f} µs", f"{us / base:.2f}x") for name, us in med.items()]
    rows.append(("spans dropped by the store during the run", str(dropped), ""))
    return rows


def run_overhead(tmp: Path, n: int, repeats: int) -> list[Row]:
    """Whole runs, as users meet them: a decorated function called on its own (a one-step run,
    as from a web handler) and a 10-step workflow, against the same bare spans."""
    bare_provider = batch_provider()
    bare_tracer = bare_provider.get_tracer("bench")
    # As in step_overhead: the store is spanflow's only exporter.
    store_provider = TracerProvider()
    step = spanflow.step(answer)
    dropped = 0

    @spanflow.workflow(name="ten")
    def ten() -> None:
        for _ in range(10):
            step("refund please", k=3)

    def bare_one() -> None:
        with bare_tracer.start_as_current_span("answer"):
            answer("refund please", k=3)

    def bare_ten() -> None:
        with bare_tracer.start_as_current_span("ten"):
            for _ in range(10):
                with bare_tracer.start_as_current_span("answer"):
                    answer("refund please", k=3)

    def recorded(fn: Any, calls: int) -> Any:
        timed = per_call_us(fn, calls, then=spanflow.flush)

        def case() -> float:
            nonlocal dropped
            spanflow.configure(tracer_provider=store_provider, db=tmp / "runs.db")
            us = timed()
            dropped += spanflow.stats().get("store.spans_dropped", 0)
            return us

        return case

    med = interleaved(
        {
            "bare": per_call_us(bare_one, n, then=bare_provider.force_flush),
            "one": recorded(lambda: step("refund please", k=3), n),
            "bare ten": per_call_us(bare_ten, n // 10, then=bare_provider.force_flush),
            "ten": recorded(ten, n // 10),
        },
        repeats,
    )
    return [
        ("bare OTel span, a trace of its own", f"{med['bare']:.1f} µs", "1.00x"),
        (
            "one-step run: `@spanflow.step` called outside any run, SQLite store",
            f"{med['one']:.1f} µs",
            f"{med['one'] / med['bare']:.2f}x",
        ),
        ("11 bare OTel spans, a root and 10 children", f"{med['bare ten']:.1f} µs", "1.00x"),
        (
            "10-step run: `@spanflow.workflow` calling 10 steps (11 spans), SQLite store",
            f"{med['ten']:.1f} µs",
            f"{med['ten'] / med['bare ten']:.2f}x its 11 bare spans",
        ),
        ("spans dropped by the store during the runs", str(dropped), ""),
    ]


def disabled_overhead(n: int, repeats: int) -> list[Row]:
    spanflow.configure(enabled=False, db=False)
    step = spanflow.step(answer)
    med = interleaved(
        {
            "plain": per_call_us(lambda: answer("refund please", k=3), n),
            "disabled step": per_call_us(lambda: step("refund please", k=3), n),
        },
        repeats,
    )
    added = med["disabled step"] - med["plain"]
    return [("recording disabled: added per call", f"{added:.2f} µs", "target < 1 µs")]


def fan_out(tmp: Path, items: int, repeats: int) -> list[Row]:
    bare_provider = batch_provider()
    tracer = bare_provider.get_tracer("bench")
    # As in step_overhead: the store is spanflow's only exporter, the batch pipeline the bare one's.
    spanflow.configure(tracer_provider=TracerProvider(), db=tmp / "fan.db")

    @spanflow.step
    async def work(i: int) -> int:
        await anyio.sleep(0)
        return i

    @spanflow.workflow
    async def pipeline() -> list[int]:
        return await spanflow.parallel(*(work(i) for i in range(items)), limit=100)

    async def bare_pipeline() -> None:
        limiter = anyio.CapacityLimiter(100)

        async def one(i: int) -> int:
            async with limiter:
                with tracer.start_as_current_span("work"):
                    await anyio.sleep(0)
                    return i

        with tracer.start_as_current_span("pipeline"):
            async with anyio.create_task_group() as tg:
                for i in range(items):
                    tg.start_soon(one, i)

    def timed(fn: Any, flush: Any) -> Any:
        def case() -> float:
            start = time.perf_counter()
            anyio.run(fn)
            flush()
            return (time.perf_counter() - start) / items * 1e6

        return case

    med = interleaved(
        {
            "bare": timed(bare_pipeline, bare_provider.force_flush),
            "spanflow": timed(pipeline, spanflow.flush),
        },
        repeats,
    )
    return [
        (
            f"parallel fan-out, {items} async steps, limit=100",
            f"{med['spanflow']:.1f} µs/step",
            f"{med['spanflow'] / med['bare']:.2f}x bare anyio + OTel",
        )
    ]


def retry_path(tmp: Path, n: int, repeats: int) -> list[Row]:
    spanflow.configure(tracer_provider=batch_provider(), db=tmp / "retry.db")
    state = {"i": 0}

    @spanflow.step(retries=2, retry=tenacity.wait_none())
    def flaky() -> int:
        state["i"] += 1
        if state["i"] % 3:
            raise ConnectionError("overloaded")
        return 1

    @spanflow.step
    def ok() -> int:
        return 1

    med = interleaved({"ok": per_call_us(ok, n), "fails twice": per_call_us(flaky, n)}, repeats)
    return [
        (
            "retry path (fails twice, no wait)",
            f"{med['fails twice']:.0f} µs per call",
            f"{med['fails twice'] - med['ok']:.0f} µs beyond a first-time success",
        )
    ]


class Payload(spanflow.State):
    label: str = "new"
    blob: dict[str, str] = {}


def state_diffs(tmp: Path, repeats: int) -> list[Row]:
    spanflow.configure(tracer_provider=batch_provider(), db=tmp / "state.db", max_value_bytes=4096)
    rows: list[Row] = []

    @spanflow.step(capture="none")
    def relabel(state: Payload) -> None:
        state.label = "done" if state.label != "done" else "new"

    def plain(state: Payload) -> None:
        state.label = "done" if state.label != "done" else "new"

    @spanflow.workflow(capture="none")
    def pipeline(state: Payload, calls: int) -> float:
        return per_call_us(lambda: relabel(state), calls)()

    for size in (1_000, 100_000, 1_000_000):
        state = Payload(blob={f"k{i}": "x" * 90 for i in range(size // 100)})
        med = interleaved(
            {
                "plain": per_call_us(functools.partial(plain, state), 20),
                "step": functools.partial(pipeline, state, 20),
            },
            repeats,
        )
        rows.append(
            (
                f"state diff, {size // 1000} KB state, one field changed",
                f"{med['step'] / 1000:.2f} ms per step",
                "snapshot + JSON Patch of the whole state",
            )
        )
    return rows


def replay_speed(tmp: Path) -> list[Row]:
    mod = tmp / "hundred.py"
    mod.write_text(
        "import os, time, spanflow\n"
        "@spanflow.step\n"
        "def work(i: int) -> int:\n"
        "    time.sleep(0.002)\n"
        "    return i * 2\n"
        "@spanflow.step\n"
        "def last(total: int) -> int:\n"
        "    if os.environ.get('BENCH_FIXED') != '1':\n"
        "        raise RuntimeError('boom')\n"
        "    return total\n"
        "@spanflow.workflow\n"
        "def hundred(n: int) -> int:\n"
        "    return last(sum(work(i) for i in range(n)))\n"
    )
    sys.path.insert(0, str(tmp))
    db = tmp / "replay.db"
    spanflow.configure(tracer_provider=batch_provider(), db=db)
    import hundred  # type: ignore[import-not-found]

    start = time.perf_counter()
    with contextlib.suppress(RuntimeError):
        hundred.hundred(99)
    original = time.perf_counter() - start
    spanflow.flush()
    from spanflow.exporters.store import Store

    with Store.open(db) as store:
        run_id = store.list_runs(limit=1)[0].id
    import os

    os.environ["BENCH_FIXED"] = "1"
    start = time.perf_counter()
    from spanflow.replayer.runner import load, run

    outcome = run(load(run_id, db))
    replayed = time.perf_counter() - start
    assert outcome.error is None and len(outcome.plan.reused) == 99, outcome
    return [
        (
            "replay of a 100-step run (99 reused)",
            f"{replayed * 1000:.0f} ms",
            f"{original / replayed:.1f}x faster than the original {original * 1000:.0f} ms",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer calls, for a smoke run")
    parser.add_argument(
        "--only", choices=("steps", "runs"), help="just the per-step or just the per-run rows"
    )
    args = parser.parse_args()
    n, repeats = (2_000, 3) if args.quick else (20_000, 11)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows: list[Row] = []
        if args.only != "runs":
            rows += step_overhead(tmp, n, repeats)
        if args.only != "steps":
            rows += run_overhead(tmp, n, repeats)
        if args.only is None:
            rows += disabled_overhead(n * 5, repeats)
            rows += fan_out(tmp, 2_000 if args.quick else 10_000, max(3, repeats // 2))
            rows += retry_path(tmp, n // 10, repeats)
            rows += state_diffs(tmp, max(3, repeats // 2))
            rows += replay_speed(tmp)
        runtime.reset_for_tests()
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{__import__('os').cpu_count()} cores; median of {repeats} interleaved rounds"
    )
    print("| benchmark | figure | ratio |")
    print("| --- | --- | --- |")
    for name, figure, ratio in rows:
        print(f"| {name} | {figure} | {ratio} |")


if __name__ == "__main__":
    main()
