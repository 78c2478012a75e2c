"""Span attribute names: the contract between the recorder, the store and the viewer.

Every name a span carries is defined here once (README's "Span attributes" table lists them);
the store and the viewer import these constants instead of spelling strings.
"""

from __future__ import annotations

from typing import Final

#: Bump when an attribute is renamed or changes meaning; stored on every run.
ATTRIBUTES_VERSION: Final = 1

RUN_ID: Final = "spanflow.run.id"
STEP_NAME: Final = "spanflow.step.name"
STEP_TYPE: Final = "spanflow.step.type"
WORKFLOW_ENTRYPOINT: Final = "spanflow.workflow.entrypoint"
WORKFLOW_FILE: Final = "spanflow.workflow.file"
WORKFLOW_ASYNC_LIBRARY: Final = "spanflow.workflow.async_library"
"""``asyncio`` or ``trio``: the event loop a workflow was called on (replay uses the same)."""
STEP_ATTEMPTS: Final = "spanflow.step.attempts"
ATTEMPT_NUMBER: Final = "spanflow.attempt.number"
ATTEMPT_WAIT: Final = "spanflow.attempt.wait_s"
STATE_DIFF: Final = "spanflow.state.diff"
STATE_INITIAL: Final = "spanflow.state.initial"
FALLBACK_USED: Final = "spanflow.fallback.used"
DEFAULT_USED: Final = "spanflow.default.used"
TIMEOUT_S: Final = "spanflow.step.timeout_s"
TIMEOUT_MISSED: Final = "spanflow.timeout.missed"
"""True when an attempt ended after its deadline without being cancelled (it blocked the loop)."""
TIMEOUT_OVERRUN: Final = "spanflow.timeout.overrun_s"
"""Seconds past the deadline that attempt ended."""
REPLAY_OF: Final = "spanflow.replay.of"
REPLAY_CACHED: Final = "spanflow.replay.cached"
REPLAY_CHECK: Final = "spanflow.replay.check"
"""True on the root of a ``spanflow check`` run: a test of today's code against a recording,
not a replay of a fix, so it is never taken for a run's latest replay."""
REPLAY_DIVERGED: Final = "spanflow.replay.diverged"
"""On a replay's root: JSON list of ``{"path", "kind": "removed"|"added"}``, calls today's code
no longer makes and calls that have no recording."""
REPLAY_EDITS: Final = "spanflow.replay.edits"
"""On a replay's root: JSON list of ``{"target", "value"}``, the inputs and recorded outputs
replaced before the replay (``--set``)."""
RUN_UNFINISHED: Final = "spanflow.run.unfinished"
"""True on a root the store rebuilt from its start record: its process never ended it."""
ROUTE_BRANCH: Final = "spanflow.route.branch"
ROUTE_REASON: Final = "spanflow.route.reason"
ROUTE_NAME: Final = "spanflow.route.name"
CANCELLED: Final = "spanflow.cancelled"
GENERATOR_CLOSED: Final = "spanflow.generator.closed"
STEP_OCCURRENCE: Final = "spanflow.step.occurrence"
"""Index of this call among earlier calls of the same step under the same parent (0 omitted)."""
LOSSY: Final = "spanflow.lossy"
"""Comma-separated attribute names whose values cannot be rebuilt exactly (cut, redacted, previews)."""

STEP_TYPE_WORKFLOW: Final = "workflow"
STEP_TYPE_STEP: Final = "step"
STEP_TYPE_ATTEMPT: Final = "attempt"

# OpenInference names, so Phoenix and Arize-style viewers understand the spans too.
INPUT_VALUE: Final = "input.value"
INPUT_MIME_TYPE: Final = "input.mime_type"
OUTPUT_VALUE: Final = "output.value"
OUTPUT_MIME_TYPE: Final = "output.mime_type"
SPAN_KIND: Final = "openinference.span.kind"
JSON_MIME: Final = "application/json"

SPAN_KINDS: Final = frozenset(
    {
        "CHAIN",
        "LLM",
        "TOOL",
        "RETRIEVER",
        "EMBEDDING",
        "AGENT",
        "RERANKER",
        "GUARDRAIL",
        "EVALUATOR",
    }
)

# OpenTelemetry semantic conventions.
ERROR_TYPE: Final = "error.type"
EXCEPTION_EVENT: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"

LOG_EVENT: Final = "log"
LOG_LEVEL: Final = "log.severity"
LOG_LOGGER: Final = "log.logger"
LOG_MESSAGE: Final = "log.message"

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_OPERATION_CHAT: Final = "chat"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_SYSTEM: Final = "gen_ai.system"
GEN_AI_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
