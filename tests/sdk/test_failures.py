"""Failures are recorded the same way everywhere: redacted, then cut; never lost."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import spanflow
from spanflow import attributes as attr
from spanflow.exporters.store import Store

from tests.conftest import Recorded

KEY = "sk-proj-Zq3vT9xLmW2aB7cD4eF6gH8iJ0kLmNoPqRsTuVwXyZ"


def _no_part_of_the_key(text: str) -> bool:
    return not any(KEY[i : i + 8] in text for i in range(3, len(KEY) - 8))


@pytest.mark.parametrize("shift", [0, 7, 19, 33])
def test_a_traceback_cut_inside_a_secret_keeps_none_of_it(recorded: Recorded, shift: int) -> None:
    @spanflow.step
    def boom() -> None:
        # The recorded traceback keeps its last 16,000 characters: make the cut fall in the key.
        raise ValueError(KEY + " " + "z" * (16_000 - len(KEY) + shift))

    with pytest.raises(ValueError):
        boom()
    (event,) = [e for e in recorded.one("boom").events if e.name == attr.EXCEPTION_EVENT]
    assert event.attributes is not None
    stack = str(event.attributes[attr.EXCEPTION_STACKTRACE])
    assert len(stack) <= 16_000
    assert _no_part_of_the_key(stack)
    assert _no_part_of_the_key(str(event.attributes[attr.EXCEPTION_MESSAGE]))


@pytest.mark.parametrize("shift", [1, 10, 20, 40])
def test_a_log_message_cut_inside_a_secret_keeps_none_of_it(recorded: Recorded, shift: int) -> None:
    @spanflow.step
    def noisy() -> None:
        logging.getLogger("app").warning("x " * ((2000 - shift) // 2) + KEY)

    noisy()
    (event,) = [e for e in recorded.one("noisy").events if e.name == attr.LOG_EVENT]
    assert event.attributes is not None
    message = str(event.attributes[attr.LOG_MESSAGE])
    assert len(message) <= 2000 and _no_part_of_the_key(message)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_an_exception_whose_str_raises_is_still_a_failure(
    recorded_with_store: tuple[Recorded, Path],
) -> None:
    recorded, db = recorded_with_store

    @spanflow.workflow
    def wf() -> None:
        raise Unprintable()

    with pytest.raises(Unprintable):
        wf()
    span = recorded.one("wf")
    assert span.status.status_code.name == "ERROR"
    assert [e.name for e in span.events] == [attr.EXCEPTION_EVENT]
    spanflow.flush()
    with Store.open(db) as store:
        (run,) = store.list_runs()
    assert run.status == "failed"
    assert run.error == "test_failures.Unprintable: <unprintable Unprintable>"


def test_a_failing_attempt_is_recorded_like_the_step(recorded: Recorded) -> None:
    @spanflow.step(retries=1, retry=__import__("tenacity").wait_none())
    def flaky() -> None:
        raise KeyError(f"api_key={KEY}")

    with pytest.raises(KeyError):
        flaky()
    attempts = recorded.named("flaky #1") + recorded.named("flaky #2")
    assert len(attempts) == 2
    for span in [recorded.one("flaky"), *attempts]:
        assert span.status.status_code.name == "ERROR"
        assert span.attributes is not None and span.attributes[attr.ERROR_TYPE] == "KeyError"
        assert span.status.description and _no_part_of_the_key(span.status.description)
