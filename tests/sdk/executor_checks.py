"""Steps that run in workers, and the checks that a fan-out through an executor is one trace.

Worker processes import this module by name to find the steps (pool processes inherit
``sys.path``; Ray workers get it through ``runtime_env``), so it holds no fixtures or state.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import spanflow
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import PROCESS_PID
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from spanflow import attributes as attr
from spanflow.exporters.records import SpanRecord
from spanflow.exporters.store import Store

library_tracer = trace.get_tracer("a.library")


@spanflow.step
def leaf(x: int) -> int:
    """A nested step that also lets a library open a span with the global tracer."""
    with library_tracer.start_as_current_span("library.call"):
        return x * 10


@spanflow.step
def square(x: int) -> int:
    return leaf(x) + x * x


@spanflow.step
def square_or_fail(x: int) -> int:
    leaf(x)
    if x == 3:
        raise ValueError(f"item {x} is cursed")
    return x * x


@spanflow.step
def pid_of(x: int) -> tuple[int, int]:
    leaf(x)
    return x, os.getpid()


@spanflow.step
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@spanflow.step
async def async_nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@spanflow.step
def leaf_then_die(x: int) -> int:
    leaf(x)
    time.sleep(1.0)  # the worker's OTLP exporter sends the finished leaf in the meantime
    os._exit(3)


@spanflow.step
def usage(x: int) -> int:
    spanflow.record_llm_usage(model="m", input_tokens=x, output_tokens=2 * x)
    return x


@spanflow.step
def secret(api_key: str, ssn: str) -> str:
    return "done"


@spanflow.step
def tell_secret(ssn: str) -> str:
    return secret(api_key="sk-abcdefghijklmnopqrstuvwx", ssn=ssn)


class Counter(spanflow.State):
    count: int = 0
    seen: list[int] = []


@spanflow.step
def bump(state: Counter, x: int) -> int:
    state.count += x
    state.seen.append(x)
    return state.count


@spanflow.step(resources={"num_cpus": 0.5, "ram_disk": 1})
def assigned(x: int) -> dict[str, float]:
    """The Ray resources this task holds."""
    import ray

    leaf(x)
    return dict(ray.get_runtime_context().get_assigned_resources())  # type: ignore[no-untyped-call]


@spanflow.step
async def async_square(x: int) -> int:
    leaf(x)
    return x * x


@spanflow.step
def fan_out_again(x: int) -> list[int]:
    """Runs on Ray and fans out to Ray again from there (no CPU held: the parent waits)."""
    nested = spanflow.RayExecutor().options(num_cpus=0)

    async def inner() -> list[int]:
        return await spanflow.map(leaf, [x, x + 1], executor=nested)

    return asyncio.run(inner())


def plain_triple(x: int) -> int:
    """Not a step: only the worker's span records it."""
    return leaf(x) * 3


def body(step: Callable[..., Any]) -> Callable[..., Any]:
    """The undecorated function of a step (to decorate again with other options)."""
    fn: Callable[..., Any] = getattr(step, "__wrapped__")  # noqa: B009 - typed as a plain callable
    return fn


def only_run(db: Path) -> tuple[str, list[SpanRecord]]:
    """The one run in ``db`` and its spans."""
    with Store.open(db) as store:
        runs = store.list_runs()
        assert len(runs) == 1, [r.id for r in runs]
        return runs[0].id, store.spans(runs[0].id)


def check_fan_out(
    spans: Sequence[SpanRecord],
    *,
    step: str,
    count: int,
    nested: Sequence[str] = ("leaf", "library.call"),
    caller_pid: int | None = None,
) -> dict[str, SpanRecord]:
    """One root; ``count`` step spans under it, each with one worker span and the nested spans.

    Returns the worker spans by the span id of their step.
    """
    by_id = {s.span_id: s for s in spans}
    orphans = [s.name for s in spans if s.parent_id is not None and s.parent_id not in by_id]
    assert not orphans, f"spans whose parent is missing: {orphans}"
    (root,) = [s for s in spans if s.parent_id is None]
    steps = [s for s in spans if s.name == step]
    assert len(steps) == count, [s.name for s in spans]
    assert {s.parent_id for s in steps} == {root.span_id}
    workers: dict[str, SpanRecord] = {}
    for s in steps:
        assert s.attributes[attr.STEP_TYPE] == attr.STEP_TYPE_STEP
        (worker,) = [c for c in spans if c.parent_id == s.span_id]
        assert worker.name == f"run/{step}"
        assert worker.kind == "CONSUMER"
        assert worker.attributes[attr.RUN_ID] == root.attributes[attr.RUN_ID]
        if caller_pid is not None:
            assert worker.resource[PROCESS_PID] != caller_pid
        workers[s.span_id] = worker
        parent = worker
        for name in nested:
            children = [c for c in spans if c.parent_id == parent.span_id and c.name == name]
            if not children:
                break  # a failing item stops early; the caller checks what it needs
            parent = children[0]
            assert parent.resource.get(PROCESS_PID) == worker.resource[PROCESS_PID]
    return workers


def worker_span_ids(spans: Sequence[SpanRecord]) -> set[str]:
    """Ids of the spans recorded in workers (they carry the worker's pid in their resource)."""
    return {s.span_id for s in spans if PROCESS_PID in s.resource}


def hex_ids(spans: Sequence[ReadableSpan]) -> set[str]:
    return {format(s.context.span_id, "016x") for s in spans if s.context is not None}


def failed(spans: Sequence[SpanRecord], name: str) -> list[SpanRecord]:
    return [s for s in spans if s.name == name and s.status == StatusCode.ERROR.name]


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver on 127.0.0.1 that remembers span names."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver._lock:
                    for rs in request.resource_spans:
                        for ss in rs.scope_spans:
                            receiver.names.extend(s.name for s in ss.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @contextmanager
    def running(self) -> Iterator[OtlpReceiver]:
        self._thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            self._thread.join()
