"""Ticket triage, and the regression test that keeps it honest.

A run of this workflow was recorded and exported to ``tests/recordings/triage.json``; the test
``tests/test_example_triage.py`` checks today's code against it with ``spanflow_check``: the
model and search calls are served from the recording (nothing is paid for, nothing is flaky)
and the code around them runs live. Change ``build_prompt`` and the check fails, naming the
model call whose prompt changed and how.

    cd examples && python -c 'import triage; print(triage.main())'  # records a run
    spanflow export RUN --format otlp-json -o ../tests/recordings/triage.json
    spanflow check ../tests/recordings/triage.json  # exit 0: today's code does what it did

(Imported rather than run as a script, the run records the entrypoint ``triage:triage`` and no
file path, so the recording replays on any checkout with ``examples`` on the import path.)
"""

from __future__ import annotations

import hashlib

import spanflow

DOCS = {
    "billing": ["Refunds are issued within 5 business days."],
    "shipping": ["Orders ship within 24 hours."],
    "other": ["A human will answer within a day."],
}

MODEL_CALLS: list[str] = []  # the prompts the stand-in model was called with (a bill, in real life)


def build_prompt(ticket: str, docs: list[str]) -> str:
    """The prompt-building code a regression test protects."""
    context = "\n".join(f"- {d}" for d in docs)
    return f"You are a support agent. Using:\n{context}\nReply to: {ticket}"


@spanflow.step(kind="llm")
def complete(prompt: str) -> str:
    """Stand-in for a paid, non-deterministic model API (deterministic here, to run offline)."""
    MODEL_CALLS.append(prompt)
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    spanflow.record_llm_usage(model="stub-model", input_tokens=len(prompt.split()), output_tokens=9)
    return f"Thanks for writing in! [{digest}] {prompt.splitlines()[1].removeprefix('- ')}"


@spanflow.step(kind="retriever")
def search_docs(category: str) -> list[str]:
    """Stand-in for a vector search."""
    return DOCS.get(category, DOCS["other"])


@spanflow.step
def classify(ticket: str) -> str:
    """Plain code: runs live in a check."""
    text = ticket.lower()
    if "refund" in text or "invoice" in text:
        return "billing"
    return "shipping" if "order" in text else "other"


@spanflow.step
def draft(ticket: str, category: str) -> str:
    return complete(build_prompt(ticket, search_docs(category)))


@spanflow.workflow
def triage(ticket: str) -> dict[str, str]:
    """Classify a ticket and draft a reply."""
    category = classify(ticket)
    return {"category": category, "reply": draft(ticket, category)}


def main() -> dict[str, str]:
    return triage("Where is my refund? I was charged twice.")


if __name__ == "__main__":
    print(main())
