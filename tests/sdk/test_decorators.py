"""@step / @workflow: transparency of the wrapper and the spans it records."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import textwrap
import threading
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest
import spanflow
from opentelemetry.trace import StatusCode
from spanflow import attributes as attr

from tests.conftest import Recorded

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the wrapper is transparent --------------------------------------------------------------


@spanflow.step
def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


@spanflow.step(name="fetch-doc", kind="retriever")
async def fetch(doc_id: str, *, limit: int = 3) -> dict[str, Any]:
    """Fetch one document."""
    return {"id": doc_id, "limit": limit}


def test_metadata_is_preserved() -> None:
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 2) -> 'int'"  # PEP 563 strings
    assert inspect.unwrap(add).__name__ == "add"
    assert not inspect.iscoroutinefunction(add)
    assert inspect.iscoroutinefunction(fetch)
    assert fetch.__name__ == "fetch"
    assert list(inspect.signature(fetch).parameters) == ["doc_id", "limit"]


def test_sync_step_records_inputs_outputs(recorded: Recorded) -> None:
    assert add(1) == 3
    span = recorded.one("add")
    assert recorded.json("add", attr.INPUT_VALUE) == {"a": 1, "b": 2}  # defaults applied
    assert recorded.json("add", attr.OUTPUT_VALUE) == 3
    assert span.attributes is not None
    assert span.attributes[attr.INPUT_MIME_TYPE] == "application/json"
    assert span.attributes[attr.OUTPUT_MIME_TYPE] == "application/json"
    assert span.attributes[attr.STEP_NAME] == "add"
    assert span.attributes[attr.STEP_TYPE] == "step"
    assert span.attributes[attr.SPAN_KIND] == "CHAIN"
    assert span.parent is None  # a step outside any workflow is its own run
    assert span.context is not None
    assert span.attributes[attr.RUN_ID] == format(span.context.trace_id, "032x")


async def test_async_step_name_and_kind(recorded: Recorded) -> None:
    assert await fetch("d1", limit=5) == {"id": "d1", "limit": 5}
    assert recorded.attr("fetch-doc", attr.SPAN_KIND) == "RETRIEVER"
    assert recorded.json("fetch-doc", attr.INPUT_VALUE) == {"doc_id": "d1", "limit": 5}


class Boom(Exception):
    pass


def test_same_exception_object_is_raised(recorded: Recorded) -> None:
    err = Boom("no luck")

    @spanflow.step
    def fails() -> None:
        raise err

    with pytest.raises(Boom) as info:
        fails()
    assert info.value is err
    span = recorded.one("fails")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Boom: no luck"
    assert span.attributes is not None
    assert str(span.attributes[attr.ERROR_TYPE]).endswith("test_decorators.Boom")
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes[attr.EXCEPTION_MESSAGE] == "no luck"
    assert "raise err" in str(event.attributes[attr.EXCEPTION_STACKTRACE])


async def test_async_exception_passes_through(recorded: Recorded) -> None:
    @spanflow.step
    async def fails() -> None:
        await anyio.sleep(0)
        raise KeyError("k")

    with pytest.raises(KeyError):
        await fails()
    assert recorded.one("fails").status.status_code is StatusCode.ERROR


def test_workflow_is_root_and_steps_are_children(recorded: Recorded) -> None:
    @spanflow.workflow
    def pipeline(x: int) -> int:
        return add(x) + add(x, b=10)

    assert pipeline(1) == 3 + 11
    root = recorded.one("pipeline")
    assert root.parent is None and root.context is not None
    run_id = format(root.context.trace_id, "032x")
    assert root.attributes is not None
    assert root.attributes[attr.STEP_TYPE] == "workflow"
    assert root.attributes[attr.RUN_ID] == run_id
    assert str(root.attributes[attr.WORKFLOW_ENTRYPOINT]).endswith(
        ":test_workflow_is_root_and_steps_are_children.<locals>.pipeline"
    )
    steps = recorded.named("add")
    assert len(steps) == 2
    for s in steps:
        assert s.parent is not None and s.parent.span_id == root.context.span_id
        assert s.attributes is not None and s.attributes[attr.RUN_ID] == run_id
    assert [s.attributes.get(attr.STEP_OCCURRENCE) for s in steps if s.attributes] == [None, 1]


def test_nested_workflow_stays_in_the_run(recorded: Recorded) -> None:
    @spanflow.workflow
    def inner() -> int:
        return add(0)

    @spanflow.workflow
    def outer() -> int:
        return inner()

    outer()
    root, nested = recorded.one("outer"), recorded.one("inner")
    assert nested.parent is not None and root.context is not None
    assert nested.parent.span_id == root.context.span_id
    assert nested.context is not None and nested.context.trace_id == root.context.trace_id


def test_workflow_exception_note_names_the_run(recorded: Recorded) -> None:
    @spanflow.step
    def broken() -> None:
        raise ValueError("bad input")

    @spanflow.workflow
    def pipeline() -> None:
        broken()

    with pytest.raises(ValueError) as info:
        pipeline()
    root = recorded.one("pipeline")
    assert root.context is not None
    run_id = format(root.context.trace_id, "032x")
    notes = info.value.__notes__
    assert len(notes) == 1
    assert f"spanflow show {run_id}" in notes[0] and f"spanflow replay {run_id}" in notes[0]


def test_workflow_inside_user_span_starts_a_new_trace_linked_to_it(recorded: Recorded) -> None:
    tracer = recorded.provider.get_tracer("app")

    @spanflow.workflow
    def pipeline() -> int:
        return 1

    with tracer.start_as_current_span("http request") as outer:
        pipeline()
    root = recorded.one("pipeline")
    assert root.parent is None
    assert root.links and root.links[0].context.span_id == outer.get_span_context().span_id


def test_invalid_options_raise_configuration_error() -> None:
    with pytest.raises(spanflow.ConfigurationError, match="kind='robot'"):
        spanflow.step(kind="robot")(lambda: None)
    with pytest.raises(spanflow.ConfigurationError, match="timeout"):
        spanflow.step(timeout=-1)(lambda: None)
    with pytest.raises(spanflow.ConfigurationError, match="capture"):
        spanflow.step(capture="everything")(lambda: None)
    with pytest.raises(spanflow.ConfigurationError, match="generator"):

        @spanflow.step(retries=2)
        def gen() -> Any:
            yield 1


# -- every kind of callable ------------------------------------------------------------------


class Service:
    def __init__(self, base: int) -> None:
        self.base = base

    @spanflow.step
    def method(self, x: int) -> int:
        return self.base + x

    @spanflow.step
    @classmethod
    def create(cls, base: int) -> Service:
        return cls(base)

    @spanflow.step
    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @classmethod
    @spanflow.step(name="create2")
    def create_inner(cls, base: int) -> int:
        return base


def test_methods_classmethods_staticmethods(recorded: Recorded) -> None:
    svc = Service.create(5)
    assert isinstance(svc, Service)
    assert svc.method(1) == 6
    assert Service.double(4) == 8
    assert Service.create_inner(3) == 3
    assert recorded.json("method", attr.INPUT_VALUE) == {"x": 1}  # self is not an input
    assert recorded.json("create", attr.INPUT_VALUE) == {"base": 5}  # nor is cls
    assert recorded.json("double", attr.INPUT_VALUE) == {"x": 4}
    assert recorded.json("create2", attr.INPUT_VALUE) == {"base": 3}


def test_wrapping_existing_callables(recorded: Recorded) -> None:
    wrap = spanflow.step(textwrap.wrap)
    assert wrap("aaa bbb ccc", width=4) == textwrap.wrap("aaa bbb ccc", width=4)
    assert recorded.json("wrap", attr.INPUT_VALUE)["width"] == 4
    max10 = spanflow.step(name="max10")(functools.partial(max, 10))
    assert max10(3) == 10 and max10(30) == 30
    assert len(recorded.named("max10")) == 2
    assert max10.__name__ == "max10"


def test_generator_step_records_items_and_keeps_send(recorded: Recorded) -> None:
    @spanflow.step
    def counter(n: int) -> Generator[int, str, list[str]]:
        received: list[str] = []
        for i in range(n):
            got = yield i
            received.append(got)
        return received

    gen = counter(3)
    assert inspect.isgenerator(counter(0))  # still a generator function after decoration
    assert next(gen) == 0
    assert gen.send("a") == 1
    assert gen.send("b") == 2
    with pytest.raises(StopIteration) as stop:
        gen.send("c")
    assert stop.value.value == ["a", "b", "c"]
    assert recorded.json("counter", attr.OUTPUT_VALUE) == {
        "items": [0, 1, 2],
        "return": ["a", "b", "c"],
    }


def test_generator_closed_early_is_not_an_error(recorded: Recorded) -> None:
    @spanflow.step
    def numbers() -> Any:
        yield from range(100)

    for i in numbers():
        if i == 2:
            break
    span = recorded.one("numbers")
    assert span.status.status_code is not StatusCode.ERROR
    assert span.attributes is not None and span.attributes[attr.GENERATOR_CLOSED] is True


def test_generator_steps_nest_under_the_generator_but_caller_does_not(recorded: Recorded) -> None:
    @spanflow.step
    def produce() -> Any:
        yield add(1)
        yield add(2)

    @spanflow.workflow
    def pipeline() -> list[int]:
        out = []
        for x in produce():
            out.append(add(x))  # called while the generator is suspended: a sibling, not a child
        return out

    assert pipeline() == [5, 6]
    produce_span = recorded.one("produce")
    root = recorded.one("pipeline")
    inner = recorded.children(produce_span)
    outer = [s for s in recorded.children(root) if s.name == "add"]
    assert len(inner) == 2 and len(outer) == 2


async def test_async_generator_step(recorded: Recorded) -> None:
    @spanflow.step
    async def stream(n: int) -> Any:
        for i in range(n):
            await anyio.sleep(0)
            yield await fetch(str(i))

    out = [item["id"] async for item in stream(3)]
    assert out == ["0", "1", "2"]
    parent = recorded.one("stream")
    assert len(recorded.children(parent)) == 3
    assert recorded.json("stream", attr.OUTPUT_VALUE) == [
        {"id": "0", "limit": 3},
        {"id": "1", "limit": 3},
        {"id": "2", "limit": 3},
    ]


# -- context propagation ---------------------------------------------------------------------


def test_with_context_keeps_parent_in_thread_pools(recorded: Recorded) -> None:
    @spanflow.workflow
    def pipeline() -> list[int]:
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(spanflow.with_context(add), [1, 2, 3]))

    assert pipeline() == [3, 4, 5]
    root = recorded.one("pipeline")
    assert len(recorded.children(root)) == 3


def test_plain_threads_without_helper_start_their_own_runs(recorded: Recorded) -> None:
    @spanflow.workflow
    def pipeline() -> None:
        t = threading.Thread(target=add, args=(1,))
        t.start()
        t.join()

    pipeline()
    assert recorded.one("add").parent is None  # documented: use spanflow.with_context


async def test_tasks_keep_their_parent(recorded: Recorded) -> None:
    @spanflow.workflow
    async def pipeline() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(fetch, str(i))

    await pipeline()
    root = recorded.one("pipeline")
    assert len(recorded.children(root)) == 3


async def test_current_run_id(recorded: Recorded) -> None:
    seen: list[str | None] = []

    @spanflow.workflow
    async def pipeline() -> None:
        seen.append(spanflow.current_run_id())

    assert spanflow.current_run_id() is None
    await pipeline()
    root = recorded.one("pipeline")
    assert root.context is not None and seen == [format(root.context.trace_id, "032x")]


# -- logs and capture ------------------------------------------------------------------------


def test_warning_logs_become_span_events(recorded: Recorded) -> None:
    log = logging.getLogger("app.pipeline")

    @spanflow.step
    def noisy() -> None:
        log.info("not captured by default")
        log.warning("cache miss for %s", "user-7")

    noisy()
    events = [e for e in recorded.one("noisy").events if e.name == attr.LOG_EVENT]
    assert len(events) == 1 and events[0].attributes is not None
    assert events[0].attributes[attr.LOG_MESSAGE] == "cache miss for user-7"
    assert events[0].attributes[attr.LOG_LEVEL] == "WARNING"
    assert events[0].attributes[attr.LOG_LOGGER] == "app.pipeline"


def test_capture_options(recorded: Recorded) -> None:
    @spanflow.step(capture="none")
    def private(secret_doc: str) -> str:
        return secret_doc

    @spanflow.step(capture="inputs")
    def only_in(x: int) -> int:
        return x

    private("x")
    only_in(1)
    assert attr.INPUT_VALUE not in (recorded.one("private").attributes or {})
    assert attr.OUTPUT_VALUE not in (recorded.one("private").attributes or {})
    assert attr.OUTPUT_VALUE not in (recorded.one("only_in").attributes or {})
    assert recorded.json("only_in", attr.INPUT_VALUE) == {"x": 1}


def test_secrets_never_reach_attributes(recorded: Recorded) -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz123456"

    @spanflow.step
    def call_llm(prompt: str, api_key: str, options: dict[str, Any]) -> dict[str, Any]:
        logging.getLogger("app").warning("calling with Bearer %s", key)
        raise RuntimeError(f"auth failed for key {key}")

    with pytest.raises(RuntimeError):
        call_llm("hi", key, {"headers": {"Authorization": f"Bearer {key}"}, "password": "hunter2"})
    dump = json.dumps(
        [
            {
                "attrs": dict(s.attributes or {}),
                "events": [dict(e.attributes or {}) for e in s.events],
                "status": s.status.description,
            }
            for s in recorded.spans
        ]
    )
    assert key not in dump
    assert "hunter2" not in dump
    assert "abcdefghijklmnop" not in dump


def test_disabled_records_nothing(recorded: Recorded) -> None:
    spanflow.configure(enabled=False, tracer_provider=recorded.provider, db=False)
    assert add(1) == 3
    assert recorded.spans == []


def test_recorded_traceback_shows_user_frames_only(recorded: Recorded) -> None:
    @spanflow.step(retries=1, retry=__import__("tenacity").wait_none())
    def inner() -> None:
        raise ValueError("bad")

    @spanflow.workflow
    def outer() -> None:
        inner()

    with pytest.raises(ValueError):
        outer()
    (event,) = [e for e in recorded.one("outer").events if e.name == "exception"]
    assert event.attributes is not None
    stack = str(event.attributes[attr.EXCEPTION_STACKTRACE])
    assert "in outer" in stack and "in inner" in stack and 'raise ValueError("bad")' in stack
    assert "spanflow/decorators.py" not in stack and "sdk/decorators.py" not in stack
    assert "tenacity" not in stack and "_base.py" not in stack


async def test_async_generator_with_bad_arguments_does_not_leak_its_span(
    recorded: Recorded,
) -> None:
    @spanflow.step
    async def agen(x: int) -> Any:
        yield x

    with pytest.raises(TypeError):
        async for _ in agen():  # type: ignore[call-arg]
            pass
    assert spanflow.current_run_id() is None  # the caller is not left inside the failed call
    assert recorded.one("agen").status.status_code is StatusCode.ERROR


def test_generator_without_output_capture_holds_no_items(recorded: Recorded) -> None:
    import gc
    import weakref

    class Chunk:
        pass

    alive: list[weakref.ref[Chunk]] = []

    @spanflow.step(capture="none")
    def stream(n: int) -> Any:
        for _ in range(n):
            chunk = Chunk()
            alive.append(weakref.ref(chunk))
            yield chunk

    for chunk in stream(5):
        del chunk
    gc.collect()
    assert all(ref() is None for ref in alive)


def test_a_failing_span_processor_never_replaces_results_or_errors(recorded: Recorded) -> None:
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

    class Broken(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            raise RuntimeError("exporter bug")

    recorded.provider.add_span_processor(Broken())
    err = KeyError("user error")

    @spanflow.step
    def ok() -> int:
        return 42

    @spanflow.step(retries=1, retry=__import__("tenacity").wait_none())
    def bad() -> None:
        raise err

    assert ok() == 42
    with pytest.raises(KeyError) as info:
        bad()
    assert info.value is err
