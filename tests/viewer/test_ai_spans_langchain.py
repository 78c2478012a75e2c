"""A real instrumented framework sends its traces to ``spanflow serve``; show and the page read them.

The application is a LangChain chain (a prompt template and langchain_core's fake chat model, so
no network) instrumented by OpenInference's LangChain instrumentor, exporting with the standard
OTLP/HTTP exporter configured by ``OTEL_EXPORTER_OTLP_ENDPOINT`` alone, in a process of its own.
With ``SPANFLOW_SCREENSHOT=docs/img/conversation.png`` the test also writes README's screenshot.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.viewer.conftest import Watched
from tests.viewer.test_cli import subprocess_env
from tests.viewer.test_serve import SPANFLOW, Serving

pytest.importorskip("langchain_core")
pytest.importorskip("openinference.instrumentation.langchain")

REPO = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France, on the Seine."

APP = textwrap.dedent(
    f"""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.prompts import ChatPromptTemplate
    from openinference.instrumentation.langchain import LangChainInstrumentor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The exporter finds the receiver through OTEL_EXPORTER_OTLP_ENDPOINT, as any app's would.
    provider = TracerProvider(resource=Resource.create({{"service.name": "capitals"}}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    LangChainInstrumentor().instrument(tracer_provider=provider)

    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content={ANSWER!r},
                    usage_metadata={{"input_tokens": 12, "output_tokens": 9, "total_tokens": 21}},
                )
            ]
        )
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer in one sentence."), ("human", "What is the capital of {{country}}?")]
    )
    print((prompt | model).invoke({{"country": "France"}}).content)
    provider.shutdown()
    """
)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Serving]:
    served = Serving(tmp_path / "traces.db")
    try:
        yield served
    finally:
        served.stop()


def spanflow(*args: str) -> str:
    done = subprocess.run(
        [*SPANFLOW, *args], capture_output=True, text=True, timeout=60, env=subprocess_env()
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return done.stdout


def run_the_app(serving: Serving, tmp_path: Path) -> str:
    """Run the instrumented app against ``serving``; the id of the run it became."""
    script = tmp_path / "app.py"
    script.write_text(APP, encoding="utf-8")
    env = subprocess_env(OTEL_EXPORTER_OTLP_ENDPOINT=serving.endpoint)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ANSWER
    assert "Failed to export" not in done.stderr, done.stderr
    # The receiver answers once the spans are queued; the writer stores them soon after.
    deadline = time.monotonic() + 15
    while True:
        listed: list[dict[str, Any]] = json.loads(
            spanflow("runs", "--db", str(serving.db), "--json")
        )
        if listed:
            shown = json.loads(spanflow("show", listed[0]["id"], "--db", str(serving.db), "--json"))
            if len(shown["spans"]) >= 3:
                return str(listed[0]["id"])
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)


@pytest.mark.browser
@pytest.mark.slow
def test_a_langchain_conversation_in_show_and_the_viewer(
    serving: Serving, tmp_path: Path, watched: Watched
) -> None:
    run_id = run_the_app(serving, tmp_path)

    # spanflow show: the kinds, the run's tokens, the conversation.
    shown = spanflow("show", run_id, "--db", str(serving.db))
    assert re.search(r"tokens +21 \(12 prompt \+ 9 completion\)", shown), shown
    titles = [line for line in shown.splitlines() if "── " in line]  # the tree's lines
    assert "[llm]" in next(line for line in titles if "GenericFakeChatModel" in line), shown
    assert "[chain]" in next(line for line in titles if "RunnableSequence" in line), shown
    assert "[prompt]" in next(line for line in titles if "ChatPromptTemplate" in line), shown
    for said in (
        "system: You answer in one sentence.",
        f"user: {QUESTION}",
        f"assistant: {ANSWER}",
    ):
        assert said in shown, shown
    data = json.loads(spanflow("show", run_id, "--db", str(serving.db), "--json"))
    assert data["run"]["tokens"] == {"prompt": 12, "completion": 9, "total": 21}
    llm = next(s for s in data["spans"] if s["ai"]["kind"] == "llm")
    assert [m["role"] for m in llm["ai"]["input_messages"]] == ["system", "user"]

    # The viewer: open the run, click the LLM span, read the conversation.
    page = watched.page
    page.set_viewport_size({"width": 1280, "height": 720})
    base, token = serving.viewer_url.split("?token=", 1)
    page.goto(f"{base}runs/{run_id}?token={token}")
    page.wait_for_function("() => window.__spanflow && window.__spanflow.ready")
    assert "21 (12 prompt + 9 completion)" in page.locator(".mi.tokens").inner_text()
    row = page.locator(".wf-row", has=page.locator(".nm", has_text="GenericFakeChatModel")).first
    assert row.locator(".tag.kind.llm").inner_text() == "llm"
    row.click()
    page.wait_for_function(
        "() => document.querySelector('.d-title h2')?.textContent === 'GenericFakeChatModel'"
    )
    user = page.locator(".detail .conversation .bubble.role-user .said")
    assistant = page.locator(".detail .conversation .bubble.role-assistant .said")
    assert user.inner_text() == QUESTION
    assert assistant.inner_text() == ANSWER
    assert page.locator(".detail .bubble.role-system .said").inner_text() == (
        "You answer in one sentence."
    )
    assert "21 (12 prompt + 9 completion)" in page.locator(".detail .ai-sec").inner_text()
    assert watched.errors == []
    target = os.environ.get("SPANFLOW_SCREENSHOT")
    if target:
        path = REPO / target
        path.parent.mkdir(parents=True, exist_ok=True)
        page.locator(".detail .conversation").scroll_into_view_if_needed()
        page.screenshot(path=str(path))
