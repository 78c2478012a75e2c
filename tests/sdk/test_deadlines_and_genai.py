"""Timeouts an async step's blocking code made impossible to enforce, and GenAI operation names."""

from __future__ import annotations

import logging
import time

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


# -- missed timeouts ---------------------------------------------------------------------------


async def test_a_blocking_async_step_is_marked_as_missing_its_timeout(
    recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    @spanflow.step(timeout=0.2)
    async def stuck() -> str:
        time.sleep(0.6)  # blocks the loop: the cancellation cannot land
        return "late"

    with caplog.at_level(logging.WARNING, logger="spanflow"):
        assert await stuck() == "late"
    span = recorded.one("stuck")
    assert span.attributes is not None
    assert span.status.status_code != StatusCode.ERROR
    assert span.attributes[attr.TIMEOUT_MISSED] is True
    overrun = span.attributes[attr.TIMEOUT_OVERRUN]
    assert isinstance(overrun, float) and 0.35 < overrun < 1.5
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'stuck'" in record.getMessage() and "blocked the event loop" in record.getMessage()


async def test_steps_that_yield_or_finish_in_time_are_not_marked(
    recorded: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    @spanflow.step(timeout=0.2)
    async def quick() -> int:
        await anyio.sleep(0.01)
        return 1

    @spanflow.step(timeout=0.1)
    async def slow() -> int:
        await anyio.sleep(5)
        return 2

    with caplog.at_level(logging.WARNING, logger="spanflow"):
        assert await quick() == 1
        with pytest.raises(spanflow.StepTimeout):
            await slow()
    for name in ("quick", "slow"):
        attributes = recorded.one(name).attributes
        assert attributes is not None and attr.TIMEOUT_MISSED not in attributes
    assert not [r for r in caplog.records if "blocked the event loop" in r.getMessage()]


# -- GenAI operation names ---------------------------------------------------------------------


def test_llm_steps_name_their_operation_and_the_root_stays_a_chain(recorded: Recorded) -> None:
    @spanflow.step(kind="llm")
    def chat(prompt: str) -> str:
        spanflow.record_llm_usage(model="m-1", system="openai", input_tokens=7, output_tokens=2)
        return "reply"

    @spanflow.step(kind="llm")
    def complete(prompt: str) -> str:
        spanflow.record_llm_usage(operation="text_completion", input_tokens=1, output_tokens=1)
        return "done"

    @spanflow.step
    def plain(x: int) -> int:
        return x

    @spanflow.workflow
    def pipeline() -> None:
        spanflow.record_llm_usage(system="openai", operation="chat", input_tokens=1)
        chat("a")
        complete("b")
        plain(1)

    pipeline()
    chat_span = recorded.one("chat").attributes
    assert chat_span is not None
    assert chat_span[attr.GEN_AI_OPERATION_NAME] == "chat"
    assert chat_span[attr.GEN_AI_SYSTEM] == "openai"
    assert chat_span[attr.SPAN_KIND] == "LLM"
    completion = recorded.one("complete").attributes
    assert completion is not None
    assert completion[attr.GEN_AI_OPERATION_NAME] == "text_completion"
    assert attr.GEN_AI_SYSTEM not in completion  # not known: not guessed
    plain_span = recorded.one("plain").attributes
    assert plain_span is not None and attr.GEN_AI_OPERATION_NAME not in plain_span
    root = recorded.one("pipeline").attributes
    assert root is not None
    assert root[attr.SPAN_KIND] == "CHAIN"
    assert root[attr.GEN_AI_INPUT_TOKENS] == 9  # the totals stay on the root ...
    assert attr.GEN_AI_OPERATION_NAME not in root  # ... which does not look like an LLM call
    assert attr.GEN_AI_SYSTEM not in root
