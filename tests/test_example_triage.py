"""The triage example's regression test: today's code against the run recorded in
tests/recordings/triage.json (made by running examples/triage.py and exporting it as OTLP/JSON)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the recording names triage:triage


def test_triage_still_does_what_it_did(spanflow_check: Callable[..., Any]) -> None:
    import triage

    calls_before = len(triage.MODEL_CALLS)
    result = spanflow_check("recordings/triage.json")
    assert len(triage.MODEL_CALLS) == calls_before  # served from the recording
    assert result["category"] == "billing"
    assert result["reply"].endswith("Refunds are issued within 5 business days.")


def test_a_changed_prompt_fails_the_check_without_calling_the_model(
    spanflow_check: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import triage

    def shorter_prompt(ticket: str, docs: list[str]) -> str:
        return f"Be brief. Reply to: {ticket}"

    monkeypatch.setattr(triage, "build_prompt", shorter_prompt)
    calls_before = len(triage.MODEL_CALLS)
    with pytest.raises(pytest.fail.Exception) as failed:
        spanflow_check("recordings/triage.json")
    message = str(failed.value)
    print(message)  # what the failing test shows its user (pytest -s)
    assert len(triage.MODEL_CALLS) == calls_before  # the changed prompt never reached the model
    assert "refused (not run live): triage/draft[0]/complete[0]: its inputs changed" in message
    assert (
        'input replace /prompt "Be brief. Reply to: Where is my refund? I was charged twice."'
        in message
    )
    assert "~     complete[0]" in message
