"""The interpreter of AI spans: OpenInference, GenAI conventions, spanflow's own llm steps."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import spanflow
from hypothesis import given, settings
from spanflow import attributes as attr
from spanflow.exporters.records import EventRecord, SpanRecord
from spanflow.exporters.store import Store
from spanflow.viewer import ai_spans
from spanflow.viewer.ai_spans import Message, Tokens, ToolCall, interpret, run_tokens

from tests.conftest import Recorded
from tests.viewer.conftest import Watched
from tests.viewer.test_cli import MS, T0, subprocess_env, write_store
from tests.viewer.test_cli_terminal import HOSTILE, assert_terminal_safe, read_pty

# What OpenInference's LangChain instrumentor writes for a chat model call (as recorded from
# langchain_core's GenericFakeChatModel), plus a tool call and a multi-part message.
OPENINFERENCE_LLM: dict[str, Any] = {
    "openinference.span.kind": "LLM",
    "llm.provider": "genericfakechatmodel",
    "llm.model_name": "gpt-4o-mini",
    "llm.input_messages.0.message.role": "system",
    "llm.input_messages.0.message.content": "You answer in one line.",
    "llm.input_messages.1.message.role": "user",
    "llm.input_messages.1.message.contents.0.message_content.type": "text",
    "llm.input_messages.1.message.contents.0.message_content.text": "What is the capital",
    "llm.input_messages.1.message.contents.1.message_content.type": "image",
    "llm.input_messages.1.message.contents.2.message_content.type": "text",
    "llm.input_messages.1.message.contents.2.message_content.text": "of France?",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.content": "Paris.",
    "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "lookup",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"q": "Paris"}',
    "llm.token_count.prompt": 12,
    "llm.token_count.completion": 7,
    "llm.token_count.total": 19,
    "llm.invocation_parameters": '{"temperature": 0}',
}


def test_openinference_llm_span() -> None:
    ai = interpret(OPENINFERENCE_LLM)
    assert ai.kind == "llm"
    assert (ai.model, ai.provider) == ("gpt-4o-mini", "genericfakechatmodel")
    assert ai.input_messages == (
        Message("system", "You answer in one line."),
        Message("user", "What is the capital\n[image]\nof France?"),
    )
    assert ai.output_messages == (
        Message("assistant", "Paris.", (ToolCall("lookup", '{"q": "Paris"}', "call_1"),)),
    )
    assert ai.tokens == Tokens(12, 7, 19)
    as_json = ai.to_json()
    assert as_json["tokens"] == {"prompt": 12, "completion": 7, "total": 19}
    assert as_json["output_messages"][0]["tool_calls"] == [
        {"name": "lookup", "arguments": '{"q": "Paris"}', "id": "call_1"}
    ]
    json.dumps(as_json)  # plain JSON


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({"openinference.span.kind": "CHAIN"}, "chain"),
        ({"openinference.span.kind": "RETRIEVER"}, "retriever"),
        ({"openinference.span.kind": "reranker"}, "reranker"),
        ({"openinference.span.kind": "PROMPT"}, "prompt"),
        ({"openinference.span.kind": "TOOL", "tool.name": "search"}, "tool"),
        ({"gen_ai.operation.name": "chat"}, "llm"),
        ({"gen_ai.operation.name": "embeddings"}, "embedding"),
        ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "x"}, "tool"),
        ({"gen_ai.operation.name": "invoke_agent"}, "agent"),
        ({"tool.name": "search"}, "tool"),
        ({"openinference.span.kind": "NOT A KIND"}, None),
        ({"openinference.span.kind": 7, "gen_ai.operation.name": ["chat"]}, None),
        ({"http.method": "GET"}, None),
    ],
)
def test_kinds(attributes: dict[str, Any], kind: str | None) -> None:
    assert interpret(attributes).kind == kind


def test_genai_json_messages_with_parts() -> None:
    ai = interpret(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
            "gen_ai.input.messages": json.dumps(
                [
                    {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
                    {
                        "role": "assistant",
                        "parts": [
                            {
                                "type": "tool_call",
                                "id": "c1",
                                "name": "weather",
                                "arguments": {"city": "Paris"},
                            }
                        ],
                    },
                    {
                        "role": "tool",
                        "parts": [{"type": "tool_call_response", "id": "c1", "response": "rain"}],
                    },
                ]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "It rains."}],
                        "finish_reason": "stop",
                    }
                ]
            ),
            "gen_ai.usage.input_tokens": 30,
            "gen_ai.usage.output_tokens": 4,
        }
    )
    assert ai.kind == "llm"
    assert (ai.model, ai.provider) == ("gpt-4o-2024-08-06", "openai")
    assert [m.role for m in ai.input_messages] == ["system", "user", "assistant", "tool"]
    assert ai.input_messages[0].content == "Be brief."
    assert ai.input_messages[2].tool_calls == (ToolCall("weather", '{"city": "Paris"}', "c1"),)
    assert ai.input_messages[3].content == "rain"
    assert ai.output_messages == (Message("assistant", "It rains."),)
    assert ai.tokens == Tokens(30, 4, None) and ai.tokens.sum == 34


def test_genai_events() -> None:
    events = [
        ("gen_ai.system.message", {"content": "Be brief."}),
        ("gen_ai.user.message", {"content": "Hi"}),
        (
            "gen_ai.assistant.message",
            {"tool_calls": json.dumps([{"id": "t", "function": {"name": "f", "arguments": "{}"}}])},
        ),
        ("gen_ai.tool.message", {"gen_ai.event.content": json.dumps({"content": "42"})}),
        ("gen_ai.choice", {"message": json.dumps({"role": "assistant", "content": "Hello!"})}),
        ("exception", {"exception.type": "X"}),
    ]
    ai = interpret({"gen_ai.system": "anthropic", "gen_ai.operation.name": "chat"}, events)
    assert [(m.role, m.content) for m in ai.input_messages] == [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", ""),
        ("tool", "42"),
    ]
    assert ai.input_messages[2].tool_calls == (ToolCall("f", "{}", "t"),)
    assert ai.output_messages == (Message("assistant", "Hello!"),)
    assert ai.provider == "anthropic"


def test_older_genai_flattening_and_prompt_events() -> None:
    flat = interpret(
        {
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "Hi",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "Hello",
            "gen_ai.usage.prompt_tokens": "3",
            "gen_ai.usage.completion_tokens": 2.0,
        }
    )
    assert flat.input_messages == (Message("user", "Hi"),)
    assert flat.output_messages == (Message("assistant", "Hello"),)
    assert flat.kind == "llm" and flat.tokens == Tokens(3, 2, None)
    events = interpret(
        {},
        [
            (
                "gen_ai.content.prompt",
                {"gen_ai.prompt": json.dumps([{"role": "user", "content": "Q"}])},
            ),
            ("gen_ai.content.completion", {"gen_ai.completion": "A"}),
        ],
    )
    assert events.input_messages == (Message("user", "Q"),)
    assert [m.content for m in events.output_messages] == ["A"]


# -- malformed and hostile spans ---------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        {"llm.input_messages.0.message.role": ["user"], "llm.input_messages.0.message.content": {}},
        {"llm.input_messages.x.message.role": "user"},
        {"llm.token_count.prompt": True, "llm.token_count.completion": -5},
        {"llm.token_count.prompt": "12abc", "llm.token_count.total": float("nan")},
        {"llm.token_count.total": 10**30, "gen_ai.usage.input_tokens": "9" * 40},
        {"gen_ai.input.messages": "{not json", "gen_ai.output.messages": json.dumps({"a": 1})},
        {"gen_ai.input.messages": "[" * 100_000 + "]" * 100_000},
        {"gen_ai.input.messages": json.dumps([1, None, ["x"], {"parts": "no"}, {"role": 3}])},
        {"gen_ai.output.messages": json.dumps([{"parts": [{"type": "tool_call"}, 5, None]}])},
        {7: "key not a string", None: None},
    ],
)
def test_malformed_attributes_never_raise(attributes: dict[Any, Any]) -> None:
    ai = interpret(attributes, [("gen_ai.user.message", "not a mapping")])  # type: ignore[list-item]
    json.dumps(ai.to_json())
    for count in (ai.tokens.prompt, ai.tokens.completion, ai.tokens.total):
        assert count is None or 0 <= count <= ai_spans.MAX_TOKENS


def test_not_a_mapping_is_nothing() -> None:
    assert interpret(None).empty  # type: ignore[arg-type]
    assert interpret(["llm.input_messages.0.message.role"]).empty  # type: ignore[arg-type]


def test_huge_and_numerous_values_are_bounded() -> None:
    many: dict[str, Any] = {
        f"llm.input_messages.{i}.message.content": f"m{i}" for i in range(50_000)
    }
    many["llm.output_messages.0.message.content"] = "x" * 5_000_000
    for j in range(1000):
        many[f"llm.output_messages.0.message.tool_calls.{j}.tool_call.function.name"] = "t"
    many["llm.input_messages.999999999999.message.content"] = "index too large to be real"
    ai = interpret(many)
    assert len(ai.input_messages) == ai_spans.MAX_MESSAGES
    assert all(m.role == "user" for m in ai.input_messages)  # no role recorded: the default
    (out,) = ai.output_messages
    assert len(out.content) < ai_spans.MAX_TEXT + 100 and out.content.endswith("chars)")
    assert len(out.tool_calls) == ai_spans.MAX_TOOL_CALLS
    assert all("index too large" not in m.content for m in ai.input_messages)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "openinference.span.kind",
        "llm.input_messages.0.message.role",
        "llm.input_messages.0.message.content",
        "llm.output_messages.1.message.tool_calls.0.tool_call.function.arguments",
        "llm.input_messages.0.message.contents.0.message_content.text",
        "llm.token_count.total",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.usage.input_tokens",
        "gen_ai.operation.name",
        "gen_ai.prompt",
        "gen_ai.prompt.0.content",
        "tool.name",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_keys, _values | _values.map(json.dumps), max_size=8),
    st.lists(
        st.tuples(
            st.sampled_from(["gen_ai.user.message", "gen_ai.choice", "gen_ai.content.prompt"]),
            st.dictionaries(
                st.sampled_from(["content", "message", "tool_calls", "gen_ai.prompt"]),
                _values | _values.map(json.dumps),
            ),
        ),
        max_size=4,
    ),
)
def test_any_values_interpret_without_raising(
    attributes: dict[str, Any], events: list[Any]
) -> None:
    ai = interpret(attributes, events)
    json.dumps(ai.to_json())
    assert all(isinstance(m.content, str) and isinstance(m.role, str) for m in ai.input_messages)


# -- a run's token total --------------------------------------------------------------------------


def test_run_total_counts_each_call_once() -> None:
    # spanflow: the workflow span totals its llm steps.
    assert run_tokens(
        [
            ("root", None, Tokens(10, 5)),
            ("a", "root", Tokens(6, 3)),
            ("b", "root", Tokens(4, 2)),
        ]
    ) == Tokens(10, 5, 15)
    # OpenInference: chains count nothing; an LLM span with a child HTTP span of the same call.
    assert run_tokens(
        [
            ("chain", None, Tokens()),
            ("prompt", "chain", Tokens()),
            ("llm1", "chain", Tokens(12, 7, 19)),
            ("http", "llm1", Tokens(12, 7, None)),
            ("sub", "chain", Tokens()),
            ("llm2", "sub", Tokens(3, 1, 4)),
        ]
    ) == Tokens(15, 8, 23)
    # A parent that says more than its children (its own call plus theirs) wins.
    assert run_tokens([("p", None, Tokens(20, 10)), ("c", "p", Tokens(5, 5))]) == Tokens(20, 10, 30)
    assert run_tokens([("p", None, Tokens())]) == Tokens()


def test_run_total_ends_on_any_graph() -> None:
    spans = [
        ("a", "b", Tokens(1, 1)),  # a cycle a <-> b
        ("b", "a", Tokens()),
        ("self", "self", Tokens(2, 0)),  # its own parent
        ("orphan", "missing", Tokens(3, 0)),
        ("orphan", None, Tokens(100, 100)),  # a repeated id: the first is kept
    ]
    assert run_tokens(spans) == Tokens(6, 1, 7)
    chain = [
        (str(i), str(i - 1) if i else None, Tokens(1, 0) if i == 99_999 else Tokens())
        for i in range(100_000)
    ]
    assert run_tokens(chain) == Tokens(1, 0, 1)  # deep: no recursion limit


# -- spanflow's own llm steps ----------------------------------------------------------------------


@spanflow.step(kind="llm")
def answer(question: str) -> str:
    spanflow.record_llm_usage(
        model="gpt-4o-mini", input_tokens=11, output_tokens=4, system="openai"
    )
    return "Paris"


@spanflow.workflow
def ask_twice(question: str) -> list[str]:
    return [answer(question), answer(question + "?")]


def test_spanflow_llm_steps_read_the_same_way(recorded_with_store: tuple[Recorded, Path]) -> None:
    _, db = recorded_with_store
    assert ask_twice("capital of France") == ["Paris", "Paris"]
    assert spanflow.flush()
    with Store.open(db) as store:
        (run,) = store.list_runs()
        spans = store.spans(run.id)
    read = {
        s.span_id: interpret(s.attributes, [(e.name, e.attributes) for e in s.events])
        for s in spans
    }
    steps = [s for s in spans if s.attributes.get(attr.STEP_NAME) == "answer"]
    root = next(s for s in spans if s.parent_id is None)
    assert len(steps) == 2
    for step in steps:
        ai = read[step.span_id]
        assert (ai.kind, ai.model, ai.provider) == ("llm", "gpt-4o-mini", "openai")
        assert ai.tokens == Tokens(11, 4, None)
    # The workflow span carries the run's usage: it is not added to its steps'.
    assert read[root.span_id].tokens == Tokens(22, 8, None)
    assert run_tokens((s.span_id, s.parent_id, read[s.span_id].tokens) for s in spans) == Tokens(
        22, 8, 30
    )


# -- spanflow show ---------------------------------------------------------------------------------


def foreign_run(run_id: str) -> list[SpanRecord]:
    """An OpenInference LangChain run as ``spanflow serve`` stores it: chain > prompt, llm."""

    def one(span_id: str, parent: str | None, name: str, start: int, **attrs: Any) -> SpanRecord:
        return SpanRecord(
            run_id=run_id,
            span_id=span_id * 16,
            parent_id=parent * 16 if parent else None,
            name=name,
            start_ns=T0 + start * MS,
            end_ns=T0 + (start + 5) * MS,
            attributes=attrs,
            resource={"service.name": "langchain-app"},
        )

    return [
        one("1", None, "RunnableSequence", 0, **{attr.SPAN_KIND: "CHAIN", attr.OUTPUT_VALUE: "{}"}),
        one("2", "1", "ChatPromptTemplate", 1, **{attr.SPAN_KIND: "PROMPT"}),
        one(
            "3",
            "1",
            "ChatOpenAI",
            2,
            **{**OPENINFERENCE_LLM, attr.OUTPUT_VALUE: '{"generations": "raw"}'},
        ),
        SpanRecord(
            run_id=run_id,
            span_id="4" * 16,
            parent_id="1" * 16,
            name="chat gpt-4o",
            status="ERROR",
            status_message="RateLimitError: slow down",
            start_ns=T0 + 3 * MS,
            end_ns=T0 + 4 * MS,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 5,
            },
            events=[
                EventRecord(
                    name="gen_ai.user.message",
                    time_ns=T0 + 3 * MS,
                    attributes={"content": "second\nquestion"},
                ),
            ],
        ),
    ]


def show(db: Path, run_id: str, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "spanflow.viewer.cli", "show", run_id, "--db", str(db), *extra],
        capture_output=True,
        text=True,
        env=subprocess_env(COLUMNS="100"),
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return done.stdout


def test_show_prints_kinds_tokens_and_the_conversation(tmp_path: Path) -> None:
    run_id = "c" * 32
    db = write_store(tmp_path / "foreign.db", foreign_run(run_id))
    out = show(db, run_id)
    # The run's tokens: the LLM call's 19 and the failed call's 5 prompt tokens.
    assert re.search(r"tokens +24 \(17 prompt \+ 7 completion\)", out), out
    lines = out.splitlines()
    title = {
        name: next(line for line in lines if f" {name} " in line)
        for name in ("RunnableSequence", "ChatPromptTemplate", "ChatOpenAI", "chat gpt-4o")
    }
    assert "[chain]" in title["RunnableSequence"]
    assert "[prompt]" in title["ChatPromptTemplate"]
    assert "[llm]" in title["ChatOpenAI"] and "[llm]" in title["chat gpt-4o"]
    assert (
        "llm: model gpt-4o-mini, provider genericfakechatmodel, tokens 19 (12 prompt + 7 completion)"
        in out
    )
    for said in (
        "system: You answer in one line.",
        "user: What is the capital [image] of France?",
        "assistant: Paris.",
        'assistant: calls lookup({"q": "Paris"})',
    ):
        assert said in out, said
    # A failed call keeps the message's own lines, indented under the role.
    assert re.search(r"\n( +)user: second\n\1  question\n", out), out
    # The conversation replaces the raw model output.
    assert '"generations": "raw"' not in out
    data = json.loads(show(db, run_id, "--json"))
    assert data["run"]["tokens"] == {"prompt": 17, "completion": 7, "total": 24}
    by_name = {s["name"]: s["ai"] for s in data["spans"]}
    assert by_name["ChatOpenAI"]["kind"] == "llm"
    assert by_name["ChatOpenAI"]["input_messages"][1]["role"] == "user"
    assert by_name["chat gpt-4o"]["input_messages"] == [
        {"role": "user", "content": "second\nquestion"}
    ]
    assert by_name["RunnableSequence"]["kind"] == "chain"


def test_show_of_spanflow_llm_steps_counts_the_root_once(
    recorded_with_store: tuple[Recorded, Path],
) -> None:
    _, db = recorded_with_store
    ask_twice("capital of France")
    assert spanflow.flush()
    with Store.open(db) as store:
        (run,) = store.list_runs()
    out = show(db, run.id)
    assert re.search(r"tokens +30 \(22 prompt \+ 8 completion\)", out), out
    assert out.count("[llm]") == 2  # the steps; the workflow is a chain, which says nothing new
    assert "llm: model gpt-4o-mini, provider openai, tokens 15 (11 prompt + 4 completion)" in out


# -- the web viewer ------------------------------------------------------------------------------

PLANTED = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


@pytest.mark.browser
def test_viewer_shows_messages_as_text_with_kind_badges_and_tokens(
    tmp_path: Path, serve_store: Any, watched: Watched
) -> None:
    run_id = "d" * 32
    spans = foreign_run(run_id)
    llm = spans[2]
    spans[2] = llm.model_copy(
        update={
            "attributes": {
                **llm.attributes,
                "llm.input_messages.1.message.content": PLANTED,
                "llm.input_messages.1.message.role": PLANTED,
            }
        }
    )
    served = serve_store(write_store(tmp_path / "web.db", spans))
    # The API: each span's interpretation, the run's total.
    with urllib.request.urlopen(served.page_url(f"/api/runs/{run_id}"), timeout=30) as response:
        data = json.loads(response.read())
    assert data["tokens"] == {"prompt": 17, "completion": 7, "total": 24}
    by_name = {s["name"]: s for s in data["spans"]}
    assert by_name["ChatOpenAI"]["ai"]["kind"] == "llm"
    assert by_name["ChatOpenAI"]["ai"]["input_messages"][1]["content"] == PLANTED
    page = watched.page
    page.goto(served.page_url(f"/runs/{run_id}"))
    page.wait_for_function("() => window.__spanflow && window.__spanflow.ready")
    assert "24 (17 prompt + 7 completion)" in page.locator(".mi.tokens").inner_text()
    tags = {
        name: page.locator(".wf-row", has=page.locator(".nm", has_text=name)).first.locator(
            ".tag.kind"
        )
        for name in ("RunnableSequence", "ChatPromptTemplate", "ChatOpenAI", "chat gpt-4o")
    }
    assert {n: t.inner_text() for n, t in tags.items()} == {
        "RunnableSequence": "chain",
        "ChatPromptTemplate": "prompt",
        "ChatOpenAI": "llm",
        "chat gpt-4o": "llm",
    }
    page.locator(".wf-row", has=page.locator(".nm", has_text="ChatOpenAI")).first.click()
    page.wait_for_function(
        "() => document.querySelector('.d-title h2')?.textContent === 'ChatOpenAI'"
    )
    bubbles = page.locator(".detail .conversation .bubble")
    assert bubbles.count() == 3
    planted = bubbles.nth(1)
    assert "role-other" in str(planted.get_attribute("class"))  # a role that is not one
    assert planted.locator(".said").inner_text() == PLANTED
    assert planted.locator(".who").inner_text().startswith(PLANTED[:50])  # a role is short
    call = page.locator(".detail .bubble.role-assistant .tool-call")
    assert call.inner_text().replace("\n", " ") == 'calls lookup {"q": "Paris"}'
    ai_facts = page.locator(".detail .ai-sec").inner_text()
    assert "gpt-4o-mini" in ai_facts and "19 (12 prompt + 7 completion)" in ai_facts
    assert page.locator("img").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert watched.errors == []


def test_show_sends_no_control_sequence_from_a_conversation(tmp_path: Path) -> None:
    run_id = "e" * 32
    h = HOSTILE
    spans = foreign_run(run_id)
    spans[2] = spans[2].model_copy(
        update={
            "attributes": {
                **spans[2].attributes,
                "llm.model_name": "gpt" + h,
                "llm.input_messages.1.message.role": "user" + h,
                "llm.input_messages.1.message.content": "ask" + h,
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": h,
            }
        }
    )
    spans[3] = spans[3].model_copy(
        update={
            "status_message": "failed",
            "events": [
                EventRecord(
                    name="gen_ai.user.message", time_ns=T0, attributes={"content": "line" + h}
                )
            ],
        }
    )
    db = write_store(tmp_path / "hostile.db", spans)
    for columns in (80, 200):
        shown = assert_terminal_safe(
            read_pty(
                [sys.executable, "-m", "spanflow.viewer.cli", "show", run_id, "--db", str(db)],
                subprocess_env(),
                tmp_path,
                columns,
            )
        )
        assert "[llm]" in shown
        if columns > 80:
            for planted in ("gpt", "ask", "line", "lookup("):
                assert re.search(re.escape(planted) + r"[^\n]*\\x1b\[2J", shown), planted
