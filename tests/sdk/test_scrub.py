"""Every span that reaches the store is redacted, including spans spanflow did not make."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import spanflow
from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode
from spanflow.exporters.store import Store

from tests.conftest import Recorded

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
OPENAI = "sk-proj-Zq3vT9xLmW2aB7cD4eF6gH8iJ0kLmNoPqRsTuVwXyZ"
SECRETS = (JWT, OPENAI, "hunter2-very-secret", "xoxb-1234567890-abcdefghij")


def _raw_store_text(db: Path) -> str:
    """Every byte the store holds, WAL included, as text: secrets must appear nowhere."""
    spanflow.flush()
    data = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    return data.decode("latin-1")


def test_foreign_spans_inside_a_run_are_redacted_on_disk(
    recorded_with_store: tuple[Recorded, Path],
) -> None:
    recorded, db = recorded_with_store
    app = recorded.provider.get_tracer("my-app")

    @spanflow.step(kind="llm")
    def ask(question: str) -> str:
        # What OpenInference or an HTTP client instrumentation records inside the step.
        with app.start_as_current_span(
            "ChatCompletion",
            attributes={
                "llm.input_messages.0.message.content": f"use key_{OPENAI} please",
                "http.request.header.authorization": f"Bearer {JWT}",
                "api_key": "hunter2-very-secret",
                "llm.token_count.prompt": 12,
                "tags": ("fine", "xoxb-1234567890-abcdefghij"),
            },
            links=[
                Link(trace.get_current_span().get_span_context(), {"token": "hunter2-very-secret"})
            ],
        ) as span:
            span.add_event("request", {"body": f'{{"api_key": "{OPENAI}"}}'})
            span.set_status(Status(StatusCode.ERROR, f"401 for Bearer {JWT}"))
        # An HTTP client naming its span after the URL, and an event named after what it sent.
        with app.start_as_current_span(f"GET /v1/models?key={OPENAI}") as call:
            call.add_event(f"retry with Bearer {JWT}")
        return "ok"

    @spanflow.workflow
    def support(question: str) -> str:
        # The application's own span on spanflow's step, with an attribute of its own.
        trace.get_current_span().set_attribute("password", "hunter2-very-secret")
        return ask(question)

    assert support("hi") == "ok"
    text = _raw_store_text(db)
    for secret in SECRETS:
        assert secret not in text
    # Whatever was not secret is still there, and the span is stored whole.
    with Store.open(db) as store:
        run = store.list_runs()[0]
        spans = {s.name: s for s in store.spans(run.id)}
    chat = spans["ChatCompletion"]
    assert chat.attributes["llm.token_count.prompt"] == 12
    assert chat.attributes["llm.input_messages.0.message.content"] == "use key_[REDACTED] please"
    assert chat.attributes["api_key"] == "[REDACTED]"
    assert chat.attributes["tags"] == ["fine", "[REDACTED]"]
    assert chat.status == "ERROR"
    assert spans["support"].attributes["password"] == "[REDACTED]"
    [get] = [s for s in spans.values() if s.name.startswith("GET ")]
    assert get.name == "GET /v1/models?key=[REDACTED]"
    assert [e.name for e in get.events] == ["retry with Bearer [REDACTED]"]
    # The application's own exporter is the application's business: it gets the span as made.
    assert recorded.attr("ChatCompletion", "api_key") == "hunter2-very-secret"


def test_a_span_with_nothing_to_hide_is_passed_on_as_it_is(recorded: Recorded) -> None:
    from spanflow.recording.scrub import scrub_span
    from spanflow.values.redact import Redactor

    @spanflow.workflow
    def plain(x: int) -> int:
        with recorded.provider.get_tracer("app").start_as_current_span(
            "inner", attributes={"n": 1}
        ):
            pass
        return x

    plain(1)
    for span in recorded.spans:
        assert scrub_span(span, Redactor()) is span


def test_foreign_spans_are_redacted_in_stores_written_by_other_processes(tmp_path: Path) -> None:
    # SQLite itself is read here: nothing of the secret in any page or the WAL.
    db = tmp_path / "t.db"
    spanflow.configure(db=db)
    try:
        tracer = trace.get_tracer("third-party")

        @spanflow.workflow
        def wf() -> None:
            with tracer.start_as_current_span(
                "call", attributes={"Authorization": f"Bearer {JWT}"}
            ):
                pass

        wf()
        spanflow.flush()
        rows = sqlite3.connect(db).execute("select attributes from spans").fetchall()
        assert rows and all(JWT not in r[0] for r in rows)
    finally:
        spanflow.runtime.reset_for_tests()
