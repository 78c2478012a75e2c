"""GenAI attributes for LLM steps, totalled on the run's root span."""

from __future__ import annotations

from opentelemetry import trace

from . import attributes as attr
from .context import current_run, current_step_span


def record_llm_usage(
    *,
    model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    system: str | None = None,
    response_model: str | None = None,
    operation: str | None = None,
) -> None:
    """Record an LLM call's model and token usage on the current step's span.

    Steps of ``kind="llm"`` carry ``gen_ai.operation.name="chat"``; ``operation=`` names another
    (``"text_completion"``, ``"embeddings"``, ...), and ``system=`` sets ``gen_ai.system``
    (``"openai"``, ``"anthropic"``, ...). The run's root span carries the totals of every step
    (``gen_ai.usage.*_tokens``) and stays a CHAIN span: called on a workflow's own span, the
    operation and system are not set, so the root never looks like one LLM call.
    """
    span = current_step_span() or trace.get_current_span()
    if not span.is_recording():
        return
    previous = getattr(span, "attributes", None) or {}
    on_workflow = previous.get(attr.STEP_TYPE) == attr.STEP_TYPE_WORKFLOW
    values: dict[str, str | int] = {}
    if operation is not None and not on_workflow:
        values[attr.GEN_AI_OPERATION_NAME] = operation
    if model is not None:
        values[attr.GEN_AI_REQUEST_MODEL] = model
    if response_model is not None:
        values[attr.GEN_AI_RESPONSE_MODEL] = response_model
    if system is not None and not on_workflow:
        values[attr.GEN_AI_SYSTEM] = system
    # Several LLM calls in one step add up.
    for key, count in (
        (attr.GEN_AI_INPUT_TOKENS, input_tokens),
        (attr.GEN_AI_OUTPUT_TOKENS, output_tokens),
    ):
        if count is not None:
            values[key] = int(previous.get(key, 0) or 0) + int(count)
    span.set_attributes(values)
    run = current_run()
    if run is not None:
        run.add_usage(int(input_tokens or 0), int(output_tokens or 0))
