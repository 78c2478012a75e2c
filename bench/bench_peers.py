"""The same 3-step pipeline in spanflow and in peer frameworks, against a bare OTel span.

    python bench/bench_peers.py      (run by `make bench` in its own virtualenv with the peers)

Per-step cost of each framework's own recording/orchestration machinery, as a ratio of a bare
OpenTelemetry SDK span (BatchSpanProcessor, discarding exporter). A peer that is not installed is
reported as such rather than guessed.
"""

from __future__ import annotations

import asyncio
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Discard, batch_provider, interleaved, per_call_us
from opentelemetry.sdk.trace import TracerProvider

PIPELINES = 2000  # 6,000 steps per round: long enough for background exporters to keep up


def retrieve(query: str) -> list[str]:
    return [f"{query}-doc-{i}" for i in range(3)]


def classify(docs: list[str]) -> str:
    return "billing" if len(docs) == 3 else "other"


def answer(label: str) -> str:
    return f"routed to {label}"


def per_step(
    run_pipeline: Callable[[], Any], flush: Callable[[], Any] | None = None
) -> Callable[[], float]:
    """µs per step; ``flush`` (timed too) makes a tracer finish exporting what the round queued,
    so its background work is not left for the next framework's round."""
    per_pipeline = per_call_us(run_pipeline, PIPELINES, then=flush)
    return lambda: per_pipeline() / 3


def bare_case() -> Callable[[], float]:
    provider = batch_provider()
    tracer = provider.get_tracer("bench")

    def pipeline() -> str:
        with tracer.start_as_current_span("pipeline"):
            with tracer.start_as_current_span("retrieve"):
                docs = retrieve("refund")
            with tracer.start_as_current_span("classify"):
                label = classify(docs)
            with tracer.start_as_current_span("answer"):
                return answer(label)

    return per_step(pipeline, provider.force_flush)


def spanflow_case(tmp: Path) -> Callable[[], float]:
    import spanflow

    # As spanflow sets itself up unconfigured: its store is the spans' only exporter, as the
    # discarding batch exporter is logfire's.
    spanflow.configure(tracer_provider=TracerProvider(), db=tmp / "peers.db")
    r, c, a = spanflow.step(retrieve), spanflow.step(classify), spanflow.step(answer)

    @spanflow.workflow
    def pipeline() -> str:
        return a(c(r("refund")))

    return per_step(pipeline, spanflow.flush)


def logfire_case() -> Callable[[], float] | str:
    try:
        import logfire
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return "not installed"
    logfire.configure(
        send_to_logfire=False,
        console=False,
        additional_span_processors=[BatchSpanProcessor(Discard())],
    )
    r = logfire.instrument("retrieve")(retrieve)
    c = logfire.instrument("classify")(classify)
    a = logfire.instrument("answer")(answer)

    @logfire.instrument("pipeline")
    def pipeline() -> str:
        return a(c(r("refund")))

    return per_step(pipeline, logfire.force_flush)


def langgraph_case() -> Callable[[], float] | str:
    try:
        from typing import TypedDict

        from langgraph.graph import END, START, StateGraph
    except ImportError:
        return "not installed"

    class S(TypedDict, total=False):
        query: str
        docs: list[str]
        label: str
        reply: str

    graph = StateGraph(S)
    graph.add_node("retrieve", lambda s: {"docs": retrieve(s["query"])})
    graph.add_node("classify", lambda s: {"label": classify(s["docs"])})
    graph.add_node("answer", lambda s: {"reply": answer(s["label"])})
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "classify")
    graph.add_edge("classify", "answer")
    graph.add_edge("answer", END)
    app = graph.compile()
    return per_step(lambda: app.invoke({"query": "refund"}))


def llama_case() -> Callable[[], float] | str:
    try:
        from workflows import Workflow, step
        from workflows.events import Event, StartEvent, StopEvent
    except ImportError:
        return "not installed"

    class Docs(Event):
        docs: list[str]

    class Label(Event):
        label: str

    class Pipeline(Workflow):
        @step
        async def do_retrieve(self, ev: StartEvent) -> Docs:
            return Docs(docs=retrieve(ev.query))

        @step
        async def do_classify(self, ev: Docs) -> Label:
            return Label(label=classify(ev.docs))

        @step
        async def do_answer(self, ev: Label) -> StopEvent:
            return StopEvent(result=answer(ev.label))

    wf = Pipeline(timeout=30)

    async def many() -> None:
        for _ in range(PIPELINES):
            await wf.run(query="refund")

    def case() -> float:
        start = time.perf_counter()
        asyncio.run(many())
        return (time.perf_counter() - start) / (PIPELINES * 3) * 1e6

    return case


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        cases: dict[str, Callable[[], float]] = {
            "bare OTel span": bare_case(),
            "spanflow (store on)": spanflow_case(Path(d)),
        }
        missing: dict[str, str] = {}
        for name, make in (
            ("logfire.instrument", logfire_case),
            ("langgraph node", langgraph_case),
            ("llama-index-workflows step", llama_case),
        ):
            made = make()
            if isinstance(made, str):
                missing[name] = made
            else:
                cases[name] = made
        med = interleaved(cases, repeats=5)
    base = med["bare OTel span"]
    print(
        f"machine: {platform.machine()}, CPython {platform.python_version()}; per-step cost, "
        "median of 5 interleaved rounds"
    )
    print("| framework | per step | vs bare span |")
    print("| --- | --- | --- |")
    for name, us in med.items():
        print(f"| {name} | {us:.1f} µs | {us / base:.1f}x |")
    for name, why in missing.items():
        print(f"| {name} | {why} | |")


if __name__ == "__main__":
    main()
