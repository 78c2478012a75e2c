"""Retries, timeouts, fallbacks, defaults, parallel, routing, state diffs and GenAI usage."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import anyio
import jsonpatch
import pytest
import spanflow
import tenacity
from opentelemetry.trace import StatusCode
from spanflow import attributes as attr

from tests.conftest import Recorded

pytestmark = pytest.mark.anyio
FAST = tenacity.wait_none()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Flaky(Exception):
    pass


# -- retries ---------------------------------------------------------------------------------


def test_retries_create_one_span_per_attempt(recorded: Recorded) -> None:
    calls = []

    @spanflow.step
    def lookup(x: int) -> int:
        return x

    @spanflow.step(retries=3, retry=FAST)
    def flaky(x: int) -> int:
        calls.append(x)
        lookup(len(calls))
        if len(calls) < 3:
            raise Flaky(f"try {len(calls)}")
        return x * 2

    assert flaky(21) == 42
    step = recorded.one("flaky")
    assert step.attributes is not None and step.attributes[attr.STEP_ATTEMPTS] == 3
    assert step.status.status_code is not StatusCode.ERROR
    attempts = sorted(recorded.children(step), key=lambda s: s.start_time or 0)
    assert [a.attributes[attr.ATTEMPT_NUMBER] for a in attempts if a.attributes] == [1, 2, 3]
    assert [a.status.status_code for a in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert attempts[0].attributes is not None and attr.ATTEMPT_WAIT in attempts[0].attributes
    # the nested step of each attempt is a child of that attempt, not of the step
    for attempt in attempts:
        (child,) = recorded.children(attempt)
        assert child.name == "lookup"


def test_retries_exhausted_raise_the_original_with_a_note(recorded: Recorded) -> None:
    errors: list[Flaky] = []

    @spanflow.step(retries=2, retry=FAST)
    def always() -> None:
        errors.append(Flaky(str(len(errors))))
        raise errors[-1]

    with pytest.raises(Flaky) as info:
        always()
    assert info.value is errors[-1]
    assert len(errors) == 3  # retries=2 -> 3 attempts
    assert any("gave up after 3 attempts" in n for n in info.value.__notes__)
    assert recorded.attr("always", attr.STEP_ATTEMPTS) == 3
    assert recorded.one("always").status.status_code is StatusCode.ERROR


def test_retry_accepts_tenacity_building_blocks(recorded: Recorded) -> None:
    attempts = []

    @spanflow.step(
        retry=(
            tenacity.stop_after_attempt(5) | tenacity.stop_after_delay(30),
            FAST,
            tenacity.retry_if_exception_type(Flaky),
        )
    )
    def picky(kind: str) -> None:
        attempts.append(kind)
        raise Flaky() if kind == "flaky" else TypeError("not retried")

    with pytest.raises(Flaky):
        picky("flaky")
    assert len(attempts) == 5
    attempts.clear()
    with pytest.raises(TypeError):
        picky("other")
    assert len(attempts) == 1


def test_retry_rejects_unknown_strategy() -> None:
    with pytest.raises(spanflow.ConfigurationError, match="tenacity strategies"):
        spanflow.step(retry="thrice")(lambda: None)  # type: ignore[call-overload]


async def test_async_retries(recorded: Recorded) -> None:
    n = 0

    @spanflow.step(retries=2, retry=tenacity.wait_fixed(0.01))
    async def flaky() -> str:
        nonlocal n
        n += 1
        await anyio.sleep(0)
        if n < 2:
            raise Flaky()
        return "ok"

    assert await flaky() == "ok"
    step = recorded.one("flaky")
    assert len(recorded.children(step)) == 2
    assert step.attributes is not None and step.attributes[attr.STEP_ATTEMPTS] == 2


# -- timeouts --------------------------------------------------------------------------------


async def test_async_timeout_cancels_and_raises_step_timeout(recorded: Recorded) -> None:
    finished = []

    @spanflow.step(timeout=0.05)
    async def slow() -> None:
        await anyio.sleep(5)
        finished.append(True)

    start = time.monotonic()
    with pytest.raises(spanflow.StepTimeout) as info:
        await slow()
    assert time.monotonic() - start < 2
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, spanflow.SpanflowError)
    assert finished == []
    assert recorded.one("slow").status.status_code is StatusCode.ERROR


async def test_timeout_applies_per_attempt(recorded: Recorded) -> None:
    n = 0

    @spanflow.step(timeout=0.05, retries=1, retry=FAST)
    async def first_hangs() -> int:
        nonlocal n
        n += 1
        if n == 1:
            await anyio.sleep(5)
        return n

    assert await first_hangs() == 2
    assert recorded.attr("first_hangs", attr.STEP_ATTEMPTS) == 2


def test_sync_timeout_runs_in_thread_and_abandons_it(recorded: Recorded) -> None:
    release = threading.Event()

    @spanflow.step(timeout=0.05)
    def stuck() -> None:
        release.wait(5)

    start = time.monotonic()
    with pytest.raises(spanflow.StepTimeout):
        stuck()
    assert time.monotonic() - start < 2
    release.set()


def test_own_timeout_error_is_not_confused_with_step_timeout(recorded: Recorded) -> None:
    @spanflow.step(timeout=5)
    def raises_builtin() -> None:
        raise TimeoutError("socket")

    with pytest.raises(TimeoutError) as info:
        raises_builtin()
    assert not isinstance(info.value, spanflow.StepTimeout)


# -- fallback and default --------------------------------------------------------------------


def test_fallback_after_retries(recorded: Recorded) -> None:
    @spanflow.step(name="small-model")
    def small_model(prompt: str) -> str:
        return f"small:{prompt}"

    @spanflow.step(retries=1, retry=FAST, fallback=small_model)
    def big_model(prompt: str) -> str:
        raise Flaky("overloaded")

    assert big_model("hi") == "small:hi"
    step = recorded.one("big_model")
    assert step.status.status_code is not StatusCode.ERROR
    assert step.attributes is not None and step.attributes[attr.FALLBACK_USED] is True
    assert [e.name for e in step.events].count("exception") == 1
    fallback_span = recorded.one("small-model")
    assert fallback_span.parent is not None and step.context is not None
    assert fallback_span.parent.span_id == step.context.span_id


def test_default_when_fallback_fails(recorded: Recorded) -> None:
    def bad_fallback(x: int) -> int:
        raise KeyError("also broken")

    @spanflow.step(fallback=bad_fallback, default=-1)
    def primary(x: int) -> int:
        raise Flaky()

    assert primary(1) == -1
    step = recorded.one("primary")
    assert step.attributes is not None and step.attributes[attr.DEFAULT_USED] is True
    assert attr.FALLBACK_USED not in step.attributes
    assert [e.name for e in step.events].count("exception") == 2
    assert step.status.status_code is not StatusCode.ERROR


def test_fallback_failure_without_default_raises_fallbacks_error(recorded: Recorded) -> None:
    def bad_fallback() -> int:
        raise KeyError("also broken")

    @spanflow.step(fallback=bad_fallback)
    def primary() -> int:
        raise Flaky()

    with pytest.raises(KeyError) as info:
        primary()
    assert isinstance(info.value.__context__, Flaky)
    assert recorded.one("primary").status.status_code is StatusCode.ERROR


async def test_async_default(recorded: Recorded) -> None:
    @spanflow.step(default=[])
    async def search(q: str) -> list[str]:
        raise Flaky()

    assert await search("x") == []
    assert recorded.attr("search", attr.DEFAULT_USED) is True


def test_cancellation_is_not_absorbed_by_default() -> None:
    # KeyboardInterrupt is not an Exception: neither retried nor replaced by the default.
    @spanflow.step(retries=3, retry=FAST, default=0)
    def interrupted() -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()


# -- parallel --------------------------------------------------------------------------------


async def test_parallel_results_in_order_with_limit(recorded: Recorded) -> None:
    in_flight = 0
    peak = 0

    @spanflow.step
    async def work(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.01 * (5 - i % 5))
        in_flight -= 1
        return i * i

    @spanflow.workflow
    async def fan_out() -> list[int]:
        return await spanflow.parallel(*(work(i) for i in range(12)), limit=3)

    assert await fan_out() == [i * i for i in range(12)]
    assert peak == 3
    root = recorded.one("fan_out")
    assert len(recorded.children(root)) == 12


async def test_parallel_starts_items_in_argument_order(recorded: Recorded) -> None:
    # trio runs newly started tasks in random order; under a limit a later item must still never
    # take a slot ahead of an earlier one (that made a failing item wait behind slow ones).
    started: list[int] = []

    async def item(i: int) -> int:
        started.append(i)
        await anyio.sleep(0)
        return i

    for limit in (1, 3):
        for _ in range(30):
            started.clear()
            assert await spanflow.parallel(*(item(i) for i in range(6)), limit=limit) == list(
                range(6)
            )
            assert started == list(range(6)), (limit, started)


async def test_parallel_runs_sync_callables_in_threads_with_context(recorded: Recorded) -> None:
    threads = set()

    @spanflow.step
    def blocking(i: int) -> int:
        threads.add(threading.get_ident())
        time.sleep(0.02)
        return i

    @spanflow.workflow
    async def fan_out() -> list[int]:
        return await spanflow.parallel(*(lambda i=i: blocking(i) for i in range(4)))

    assert await fan_out() == [0, 1, 2, 3]
    assert threading.get_ident() not in threads
    assert len(recorded.children(recorded.one("fan_out"))) == 4


async def test_parallel_failure_cancels_the_rest(recorded: Recorded) -> None:
    err = Flaky("one failed")

    @spanflow.step
    async def slow(i: int) -> int:
        await anyio.sleep(5)
        return i

    @spanflow.step
    async def failing() -> int:
        await anyio.sleep(0.01)
        raise err

    @spanflow.workflow
    async def fan_out() -> list[int]:
        return await spanflow.parallel(slow(1), failing(), slow(2), slow(3), limit=3)

    start = time.monotonic()
    with pytest.raises(Flaky) as info:
        await fan_out()
    assert info.value is err
    # Well under the 5 s the slow steps would take: they were cancelled, not awaited (the
    # margin absorbs a busy machine).
    assert time.monotonic() - start < 4
    # slow(3) waited for a slot; the failure freed one but nothing more starts after a failure,
    # and its coroutine is closed rather than left to warn "never awaited".
    cancelled = recorded.named("slow")
    assert len(cancelled) == 2
    for s in cancelled:
        assert s.attributes is not None and s.attributes[attr.CANCELLED] is True


def test_parallel_item_cancelling_itself_raises_its_cancellation() -> None:
    # Nobody cancelled the fan-out, so there is no failure to report, but the item has no
    # result: its CancelledError is raised (as asyncio.gather does) rather than a hole returned.
    async def quits() -> int:
        raise asyncio.CancelledError

    async def fine() -> int:
        await asyncio.sleep(0)
        return 1

    async def main() -> object:
        try:
            return await spanflow.parallel(fine(), quits())
        except asyncio.CancelledError as exc:
            return exc

    assert isinstance(asyncio.run(main()), asyncio.CancelledError)


async def test_map(recorded: Recorded) -> None:
    @spanflow.workflow
    async def pipeline(ids: list[str]) -> list[str]:
        docs = await spanflow.map(fetch_doc, ids, limit=2)
        return [d["id"] for d in docs]

    assert await pipeline(["a", "b", "c"]) == ["a", "b", "c"]
    assert len(recorded.named("fetch_doc")) == 3


@spanflow.step
async def fetch_doc(doc_id: str) -> dict[str, str]:
    await anyio.sleep(0)
    return {"id": doc_id}


# -- routing ---------------------------------------------------------------------------------


def test_route_records_branch_and_reason(recorded: Recorded) -> None:
    @spanflow.step
    def refund(ticket: str) -> str:
        return "refunded"

    @spanflow.step
    def answer(ticket: str) -> str:
        return "answered"

    @spanflow.workflow
    def support(ticket: str) -> str:
        label = "billing" if "refund" in ticket else "question"
        return spanflow.route(label, {"billing": refund, "question": answer}, ticket)

    assert support("refund please") == "refunded"
    assert recorded.attr("support", attr.ROUTE_BRANCH) == "billing"
    assert recorded.json("support", attr.ROUTE_REASON) == "billing"
    assert recorded.named("answer") == []


def test_decision_is_one_line_in_plain_code(recorded: Recorded) -> None:
    @spanflow.step
    def triage(score: float) -> str:
        if (
            spanflow.decision("escalate" if score > 0.8 else "auto", reason={"score": score})
            == "escalate"
        ):
            return "human"
        return "bot"

    assert triage(0.9) == "human"
    assert recorded.attr("triage", attr.ROUTE_BRANCH) == "escalate"
    assert recorded.json("triage", attr.ROUTE_REASON) == {"score": 0.9}
    assert [e.name for e in recorded.one("triage").events] == ["route"]


def test_route_unknown_key() -> None:
    with pytest.raises(LookupError, match="no route for 'x'"):
        spanflow.route("x", {"a": lambda: 1})


# -- state -----------------------------------------------------------------------------------


class Doc(spanflow.State):
    id: str
    score: float = 0.0


class Ticket(spanflow.State):
    text: str
    label: str | None = None
    docs: list[Doc] = []
    notes: dict[str, str] = {}


def test_state_diff_is_minimal_and_applies(recorded: Recorded) -> None:
    @spanflow.step
    def classify(state: Ticket) -> None:
        state.label = "billing"

    @spanflow.step
    def retrieve(state: Ticket) -> None:
        state.docs.append(Doc(id="d1", score=0.5))
        state.notes["source"] = "kb"

    @spanflow.workflow
    def pipeline(state: Ticket) -> Ticket:
        classify(state)
        retrieve(state)
        return state

    ticket = Ticket(text="refund")
    pipeline(ticket)
    initial = recorded.json("pipeline", attr.STATE_INITIAL)
    assert initial == {"text": "refund", "label": None, "docs": [], "notes": {}}
    d1 = recorded.json("classify", attr.STATE_DIFF)
    assert d1 == [{"op": "replace", "path": "/label", "value": "billing"}]
    d2 = recorded.json("retrieve", attr.STATE_DIFF)
    after = jsonpatch.apply_patch(jsonpatch.apply_patch(initial, d1), d2)
    assert after == ticket.model_dump(mode="json")
    assert len(d2) == 2


def test_state_returned_as_new_instance_and_several_states(recorded: Recorded) -> None:
    @spanflow.step
    def relabel(state: Ticket) -> Ticket:
        return state.model_copy(update={"label": "spam"})

    @spanflow.step
    def merge(a: Ticket, b: Ticket) -> None:
        b.text = a.text

    t = Ticket(text="x")
    relabel(t)
    assert recorded.json("relabel", attr.STATE_DIFF) == [
        {"op": "replace", "path": "/label", "value": "spam"}
    ]
    merge(Ticket(text="new"), t)
    assert recorded.json("merge", attr.STATE_DIFF) == [
        {"op": "replace", "path": "/b/text", "value": "new"}
    ]


def test_state_change_is_recorded_even_when_the_step_fails(recorded: Recorded) -> None:
    @spanflow.step
    def half_done(state: Ticket) -> None:
        state.label = "partial"
        raise Flaky()

    with pytest.raises(Flaky):
        half_done(Ticket(text="t"))
    assert json.loads(recorded.attr("half_done", attr.STATE_DIFF)) == [
        {"op": "replace", "path": "/label", "value": "partial"}
    ]


# -- GenAI -----------------------------------------------------------------------------------


def test_llm_usage_totals_on_the_workflow(recorded: Recorded) -> None:
    @spanflow.step(kind="llm")
    def generate(prompt: str) -> str:
        spanflow.record_llm_usage(model="stub-1", input_tokens=10, output_tokens=3)
        spanflow.record_llm_usage(input_tokens=5, output_tokens=2)
        return "reply"

    @spanflow.workflow
    def pipeline() -> None:
        generate("a")
        generate("b")

    pipeline()
    for s in recorded.named("generate"):
        assert s.attributes is not None
        assert s.attributes[attr.GEN_AI_REQUEST_MODEL] == "stub-1"
        assert s.attributes[attr.GEN_AI_INPUT_TOKENS] == 15
        assert s.attributes[attr.GEN_AI_OUTPUT_TOKENS] == 5
    assert recorded.attr("pipeline", attr.GEN_AI_INPUT_TOKENS) == 30
    assert recorded.attr("pipeline", attr.GEN_AI_OUTPUT_TOKENS) == 10


class Session(spanflow.State):
    user: str
    api_token: str | None = None
    note: str = ""


def test_state_diffs_and_initial_state_are_redacted(recorded: Recorded) -> None:
    secret = "sk-proj-ZYXWVUTSRQPONMLKJIHGFEDCBA987654"

    @spanflow.step
    def login(state: Session) -> None:
        state.api_token = secret
        state.note = f"got key {secret}"

    @spanflow.workflow
    def pipeline(state: Session) -> None:
        login(state)

    pipeline(Session(user="ada", note=f"old key {secret}"))
    diff = recorded.json("login", attr.STATE_DIFF)
    assert [op["path"] for op in diff] == ["/api_token", "/note"]
    assert secret not in json.dumps(diff) and secret not in recorded.attr(
        "pipeline", attr.STATE_INITIAL
    )
    assert attr.STATE_DIFF in recorded.attr("login", attr.LOSSY)  # replay will not reuse it


def test_secret_shaped_keys_and_branches_are_redacted(recorded: Recorded) -> None:
    key = "sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"

    class Usage(spanflow.State):
        per_key: dict[str, int] = {}

    @spanflow.step
    def count_usage(state: Usage) -> str:
        state.per_key[key] = 1
        return spanflow.route(key, {key: lambda: "premium"})

    assert count_usage(Usage()) == "premium"
    dumped = json.dumps([dict(s.attributes or {}) for s in recorded.spans])
    dumped += json.dumps([dict(e.attributes or {}) for s in recorded.spans for e in s.events])
    assert key not in dumped
    assert recorded.json("count_usage", attr.STATE_DIFF)[0]["path"].startswith("/per_key/")


async def test_parallel_returns_an_items_own_exception_group(recorded: Recorded) -> None:
    group = ExceptionGroup("validation failed", [ValueError("bad field")])

    @spanflow.step
    async def validate() -> None:
        raise group

    @spanflow.step
    async def fine() -> int:
        await anyio.sleep(0.01)
        return 1

    with pytest.raises(ExceptionGroup) as info:
        await spanflow.parallel(validate(), fine())
    assert info.value is group
