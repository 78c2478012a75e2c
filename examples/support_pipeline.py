"""The mission's pipeline: retrieve -> classify -> route -> generate -> log.

Runs offline with a deterministic stand-in model. It shows every pattern spanflow traces:
parallel retrieval, a classifier whose output routes the ticket, retries with a fallback model,
typed state recorded as JSON Patches, and GenAI token usage.

The last step has a bug (it assumes every reply has a signature line); set SUPPORT_FIXED=1 to
"fix" it, then replay the failed run: the retrieval and model calls are reused, not paid again.

    python examples/support_pipeline.py            # fails part-way, prints the run id
    SUPPORT_FIXED=1 spanflow replay <run id>       # re-runs with today's code
"""

from __future__ import annotations

import hashlib
import os
import time

import spanflow

KNOWLEDGE_BASE = {
    "billing": [
        "Refunds are issued within 5 business days.",
        "Invoices live under Settings > Billing.",
    ],
    "shipping": ["Orders ship within 24 hours.", "Tracking links arrive by email."],
    "account": ["Reset your password from the login page.", "Two-factor auth is under Security."],
}
FAQ = {
    "refund": "Refund policy: full refund within 30 days.",
    "password": "Password resets expire after one hour.",
}


class Ticket(spanflow.State):
    """What the pipeline knows about one ticket; every step's change is recorded as a patch."""

    customer: str
    text: str
    category: str | None = None
    docs: list[str] = []
    reply: str | None = None
    model: str | None = None


class StubModel:
    """A deterministic stand-in for an LLM API: slow, and overloaded on its first call."""

    def __init__(self, name: str, latency: float, fail_first: int = 0) -> None:
        self.name = name
        self.latency = latency
        self.calls = 0
        self.fail_first = fail_first

    def complete(self, prompt: str) -> str:
        self.calls += 1
        time.sleep(self.latency)
        if self.calls <= self.fail_first:
            raise ConnectionError(f"{self.name}: 529 overloaded")
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:6]
        spanflow.record_llm_usage(
            model=self.name, input_tokens=len(prompt.split()), output_tokens=12
        )
        return f"[{self.name}:{digest}] Thanks for reaching out! {prompt.splitlines()[-1]}"


BIG = StubModel("big-model", latency=0.05, fail_first=2)
SMALL = StubModel("small-model", latency=0.01)


@spanflow.step(kind="retriever")
async def search_kb(query: str, category: str) -> list[str]:
    """Vector search stand-in: the documents of the ticket's category."""
    return KNOWLEDGE_BASE.get(category, [])


@spanflow.step(kind="retriever")
async def search_faq(query: str) -> list[str]:
    """Keyword search stand-in over the FAQ."""
    return [answer for word, answer in FAQ.items() if word in query.lower()]


@spanflow.step(kind="llm")
def classify(text: str) -> str:
    """A classifier stand-in: keyword rules."""
    lowered = text.lower()
    if "refund" in lowered or "invoice" in lowered:
        return "billing"
    if "ship" in lowered or "order" in lowered:
        return "shipping"
    return "account"


@spanflow.step
async def retrieve(state: Ticket) -> None:
    """Both searches at once; results merged into the state."""
    assert state.category is not None
    kb, faq = await spanflow.parallel(search_kb(state.text, state.category), search_faq(state.text))
    state.docs = kb + faq


@spanflow.step(name="small-model", kind="llm")
def small_model(prompt: str) -> str:
    return SMALL.complete(prompt)


@spanflow.step(name="big-model", kind="llm", retries=1, fallback=small_model)
def big_model(prompt: str) -> str:
    return BIG.complete(prompt)


@spanflow.step
def generate(state: Ticket) -> None:
    prompt = "\n".join([*state.docs, f"Customer {state.customer} asks: {state.text}"])
    state.reply = big_model(prompt)
    state.model = "big-model" if state.reply.startswith("[big-model") else "small-model"


@spanflow.step
def escalate(state: Ticket) -> None:
    state.reply = "A human agent will contact you within one business day."
    state.model = "human"


@spanflow.step
def log_reply(state: Ticket) -> dict[str, str]:
    """Format the reply for the CRM. The bug: it assumes a signature line exists."""
    assert state.reply is not None
    lines = state.reply.split("\n")
    if os.environ.get("SUPPORT_FIXED") == "1":
        signature = lines[1] if len(lines) > 1 else "-- the support team"
    else:
        signature = lines[1]  # IndexError for one-line replies
    return {"customer": state.customer, "category": str(state.category), "signature": signature}


@spanflow.workflow
async def support(ticket: Ticket) -> dict[str, str]:
    """Answer one support ticket."""
    ticket.category = classify(ticket.text)
    await retrieve(ticket)
    route = "escalate" if "lawyer" in ticket.text.lower() else "generate"
    spanflow.route(
        route,
        {"generate": generate, "escalate": escalate},
        ticket,
        reason={"category": ticket.category},
    )
    return log_reply(ticket)


if __name__ == "__main__":
    import anyio

    ticket = Ticket(customer="ada@example.com", text="I want a refund for my last invoice")
    print(anyio.run(support, ticket))
