"""What an AI span says, whoever wrote it: OpenInference, OpenTelemetry GenAI, or spanflow.

One pure function, :func:`interpret`, turns a span's attributes and events into its kind
(``llm``, ``chain``, ``tool``, ...), model, provider, the conversation it carried (input and
output messages with their tool calls) and its token counts. The conventions understood:

* OpenInference: ``openinference.span.kind``; ``llm.model_name``, ``llm.provider``,
  ``llm.system``; the flattened ``llm.input_messages.N.message.role`` / ``.content`` /
  ``.contents.M.message_content.text`` / ``.tool_calls.M.tool_call.function.name|arguments``
  (and ``llm.output_messages``); ``llm.token_count.prompt|completion|total``; ``tool.name``.
* GenAI semantic conventions: ``gen_ai.operation.name``, ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.provider.name`` / ``gen_ai.system``,
  ``gen_ai.usage.input_tokens|output_tokens``; the JSON attributes ``gen_ai.input.messages`` /
  ``gen_ai.output.messages`` (messages of ``parts``) and ``gen_ai.system_instructions``; the
  events ``gen_ai.system|user|assistant|tool.message`` and ``gen_ai.choice``; the older
  ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*`` flattening.

Spans come from any application (``spanflow serve`` stores what it is sent), so every value
may be missing, of the wrong type, huge or hostile: nothing here raises, each text is cut to
:data:`MAX_TEXT` characters, each list to a fixed length, and the work is linear in the size of
the span. Nothing here cleans text for a terminal or a page: callers show it as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

__all__ = [
    "KINDS",
    "AiSpan",
    "Message",
    "Tokens",
    "ToolCall",
    "counts_tokens",
    "interpret",
    "run_tokens",
    "tokens_of",
]

#: The kinds a span can be given (OpenInference's, lower case; LangChain's prompt templates are
#: ``PROMPT`` spans).
KINDS: Final = (
    "llm",
    "chain",
    "tool",
    "retriever",
    "embedding",
    "agent",
    "reranker",
    "guardrail",
    "evaluator",
    "prompt",
)
#: Characters kept of one message's content or one tool call's arguments.
MAX_TEXT: Final = 20_000
#: Messages kept per side (input, output); tool calls kept per message.
MAX_MESSAGES: Final = 100
MAX_TOOL_CALLS: Final = 20
#: JSON attributes longer than this are not parsed (their text still shows in the raw view).
MAX_JSON: Final = 2_000_000
#: The largest token count believed; anything else is not a count.
MAX_TOKENS: Final = 10**12

_GENAI_OPERATIONS: Final = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "embeddings": "embedding",
    "execute_tool": "tool",
    "create_agent": "agent",
    "invoke_agent": "agent",
}
_GENAI_EVENT_ROLES: Final = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
# llm.input_messages.3.message.role -> ("input", 3, "role"); indices beyond a few digits are
# not a conversation anyone sent.
_OI_MESSAGE: Final = re.compile(
    r"llm\.(input|output)_messages\.(\d{1,6})\.message\.(role|content|name|tool_call_id"
    r"|contents\.(\d{1,6})\.message_content\.(type|text)"
    r"|tool_calls\.(\d{1,6})\.tool_call\.(id|function\.name|function\.arguments))"
)
_GENAI_FLAT: Final = re.compile(r"gen_ai\.(prompt|completion)\.(\d{1,6})\.(role|content)")


class ToolCall(NamedTuple):
    """A tool the model asked for: its name, the arguments as text, and the call's id."""

    name: str
    arguments: str = ""
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "arguments": self.arguments}
        if self.id is not None:
            out["id"] = self.id
        return out


class Message(NamedTuple):
    """One message of a conversation: who said it, the text, and the tool calls it made."""

    role: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_json() for c in self.tool_calls]
        return out


class Tokens(NamedTuple):
    """Token counts of a call (or a run); ``None`` where nothing said."""

    prompt: int | None = None
    completion: int | None = None
    total: int | None = None

    @property
    def empty(self) -> bool:
        return self.prompt is None and self.completion is None and self.total is None

    @property
    def sum(self) -> int | None:
        """The total as recorded, or prompt + completion."""
        if self.total is not None:
            return self.total
        if self.prompt is None and self.completion is None:
            return None
        return (self.prompt or 0) + (self.completion or 0)

    def to_json(self) -> dict[str, int | None]:
        return {"prompt": self.prompt, "completion": self.completion, "total": self.sum}


class AiSpan(NamedTuple):
    """What a span says as an AI call; every field empty for a span that is not one."""

    kind: str | None = None
    model: str | None = None
    provider: str | None = None
    tool: str | None = None
    input_messages: tuple[Message, ...] = ()
    output_messages: tuple[Message, ...] = ()
    tokens: Tokens = Tokens()

    @property
    def empty(self) -> bool:
        return self == _NOTHING

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON (the viewer's ``ai`` and ``show --json``'s per span)."""
        return {
            "kind": self.kind,
            "model": self.model,
            "provider": self.provider,
            "tool": self.tool,
            "input_messages": [m.to_json() for m in self.input_messages],
            "output_messages": [m.to_json() for m in self.output_messages],
            "tokens": self.tokens.to_json(),
        }


_NOTHING: Final = AiSpan()


def interpret(
    attributes: Mapping[str, Any], events: Iterable[tuple[str, Mapping[str, Any]]] = ()
) -> AiSpan:
    """What ``attributes`` and ``events`` (``(name, attributes)`` pairs) say about an AI call.

    Never raises: a span it cannot read is described as far as it could be, or not at all.
    """
    try:
        return _interpret(attributes, events)
    except Exception:  # a hostile span must not break the page or the command showing it
        return _NOTHING


def _interpret(
    attributes: Mapping[str, Any], events: Iterable[tuple[str, Mapping[str, Any]]]
) -> AiSpan:
    if not isinstance(attributes, Mapping):
        return _NOTHING
    a = attributes
    inputs, outputs = _openinference_messages(a)
    if not inputs:
        inputs = _genai_json(a.get("gen_ai.input.messages"))
        instructions = _genai_instructions(a.get("gen_ai.system_instructions"))
        if instructions is not None:
            inputs = [instructions, *inputs][:MAX_MESSAGES]
    if not outputs:
        outputs = _genai_json(a.get("gen_ai.output.messages"))
    if not inputs and not outputs:
        inputs, outputs = _genai_events(events)
    if not inputs and not outputs:
        inputs = _genai_legacy(a.get("gen_ai.prompt"))
        outputs = _genai_legacy(a.get("gen_ai.completion"))
    if not inputs and not outputs:
        inputs, outputs = _genai_flat(a)
    tokens = tokens_of(a)
    tool = _text(a.get("tool.name")) or _text(a.get("gen_ai.tool.name"))
    model = (
        _text(a.get("llm.model_name"))
        or _text(a.get("gen_ai.response.model"))
        or _text(a.get("gen_ai.request.model"))
        or _text(a.get("embedding.model_name"))
    )
    provider = (
        _text(a.get("llm.provider"))
        or _text(a.get("gen_ai.provider.name"))
        or _text(a.get("gen_ai.system"))
        or _text(a.get("llm.system"))
    )
    kind = _kind(a, llm_like=bool(inputs or outputs), tool=tool)
    return AiSpan(
        kind=kind,
        model=_cut(model, 200),
        provider=_cut(provider, 200),
        tool=_cut(tool, 200),
        input_messages=tuple(inputs),
        output_messages=tuple(outputs),
        tokens=tokens,
    )


def _kind(a: Mapping[str, Any], *, llm_like: bool, tool: str | None) -> str | None:
    declared = a.get("openinference.span.kind")
    if isinstance(declared, str) and declared.lower() in KINDS:
        return declared.lower()
    operation = a.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in _GENAI_OPERATIONS:
        return _GENAI_OPERATIONS[operation]
    if llm_like:
        return "llm"
    if tool:
        return "tool"
    return None


# -- tokens -----------------------------------------------------------------------------------


def tokens_of(attributes: Mapping[str, Any]) -> Tokens:
    """A span's own token counts (OpenInference first, then GenAI); never raises."""
    try:
        a = attributes
        if a.keys().isdisjoint(_TOKEN_KEYS):
            return _NO_TOKENS  # most spans: one set operation in C, not eight lookups
        prompt = _count(a.get("llm.token_count.prompt"))
        completion = _count(a.get("llm.token_count.completion"))
        total = _count(a.get("llm.token_count.total"))
        if prompt is None:
            prompt = _count(a.get("gen_ai.usage.input_tokens"))
            if prompt is None:
                prompt = _count(a.get("gen_ai.usage.prompt_tokens"))
        if completion is None:
            completion = _count(a.get("gen_ai.usage.output_tokens"))
            if completion is None:
                completion = _count(a.get("gen_ai.usage.completion_tokens"))
        if total is None:
            total = _count(a.get("gen_ai.usage.total_tokens"))
        return Tokens(prompt, completion, total)
    except Exception:
        return Tokens()


_NO_TOKENS: Final = Tokens()
_TOKEN_KEYS: Final = frozenset(
    {
        "llm.token_count.prompt",
        "llm.token_count.completion",
        "llm.token_count.total",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
        "gen_ai.usage.total_tokens",
    }
)


def counts_tokens(attributes: Mapping[str, Any]) -> bool:
    """Whether a span has any token count attribute (a quick test before :func:`tokens_of`)."""
    try:
        return not attributes.keys().isdisjoint(_TOKEN_KEYS)
    except (AttributeError, TypeError):
        return False


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def run_tokens(spans: Iterable[tuple[str, str | None, Tokens]]) -> Tokens:
    """A run's token counts from its spans' ``(span id, parent id, own counts)``.

    Each count is taken once: a span counts what it says itself or what its children count,
    whichever is more. So a parent that totals its children (spanflow's workflow span carries
    the run's usage) is not added to them, a chain that says nothing (OpenInference's) passes
    its children's counts up, and an LLM span with a child HTTP span reporting the same call
    counts it once. Parent links that form a cycle or point nowhere are cut, so the walk ends
    on any graph.
    """
    listed = list(spans)
    if all(tokens is _NO_TOKENS or tokens.empty for _, _, tokens in listed):
        return Tokens()  # most runs, however big: no tree to build
    own: dict[str, Tokens] = {}
    parent_of: dict[str, str | None] = {}
    for span_id, parent_id, tokens in listed:
        if span_id in own:  # a repeated id keeps its first span
            continue
        own[span_id] = tokens
        parent_of[span_id] = parent_id
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for span_id, parent_id in parent_of.items():
        if parent_id is not None and parent_id in own and parent_id != span_id:
            children.setdefault(parent_id, []).append(span_id)
        else:
            roots.append(span_id)
    totals: dict[str, tuple[int | None, int | None, int | None]] = {}
    visited: set[str] = set()
    tops: list[str] = []
    # Spans on a parent cycle are reached from no root: the first of each is a top of its own.
    for start in [*roots, *own]:
        if start in visited:
            continue
        tops.append(start)
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            node, done = stack.pop()
            if done:
                t = own[node]
                kids = [totals[k] for k in children.get(node, ()) if k in totals]
                totals[node] = (
                    _larger(t.prompt, _add(k[0] for k in kids)),
                    _larger(t.completion, _add(k[1] for k in kids)),
                    _larger(t.sum, _add(k[2] for k in kids)),
                )
                continue
            if node in visited:
                continue
            visited.add(node)
            stack.append((node, True))
            stack.extend((k, False) for k in children.get(node, ()) if k not in visited)
    prompt, completion, total = (_add(totals[r][i] for r in tops) for i in range(3))
    return Tokens(prompt, completion, total)


def _add(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _larger(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


# -- messages -------------------------------------------------------------------------------


def _openinference_messages(a: Mapping[str, Any]) -> tuple[list[Message], list[Message]]:
    # side -> index -> field -> value; contents and tool calls by their own index.
    sides: dict[str, dict[int, dict[str, Any]]] = {"input": {}, "output": {}}
    for key, value in a.items():
        if not isinstance(key, str) or not key.startswith("llm.") or "_messages." not in key:
            continue
        m = _OI_MESSAGE.fullmatch(key)
        if m is None:
            continue
        index = int(m.group(2))
        messages = sides[m.group(1)]
        if index not in messages:
            if len(messages) >= MAX_MESSAGES:
                continue
            messages[index] = {}
        fields = messages[index]
        if m.group(4) is not None:
            part = fields.setdefault("contents", {})
            if len(part) < MAX_MESSAGES or int(m.group(4)) in part:
                part.setdefault(int(m.group(4)), {})[m.group(5)] = value
        elif m.group(6) is not None:
            calls = fields.setdefault("tool_calls", {})
            if len(calls) < MAX_TOOL_CALLS or int(m.group(6)) in calls:
                calls.setdefault(int(m.group(6)), {})[m.group(7)] = value
        else:
            fields[m.group(3)] = value
    out: list[list[Message]] = []
    for side in ("input", "output"):
        messages = sides[side]
        built = []
        for index in sorted(messages):
            fields = messages[index]
            content = _text(fields.get("content"))
            if content is None and "contents" in fields:
                content = _join_parts(
                    _part_text(p.get("type"), p.get("text"))
                    for _, p in sorted(fields["contents"].items())
                )
            calls = tuple(
                ToolCall(
                    name=_cut(_text(c.get("function.name")) or "?", 200) or "?",
                    arguments=_cut(_text(c.get("function.arguments")), MAX_TEXT) or "",
                    id=_cut(_text(c.get("id")), 200),
                )
                for _, c in sorted(fields.get("tool_calls", {}).items())
            )
            role = _text(fields.get("role")) or ("assistant" if side == "output" else "user")
            built.append(Message(_cut(role, 50) or "?", _cut(content, MAX_TEXT) or "", calls))
        out.append(built)
    return out[0], out[1]


def _part_text(kind: Any, text: Any) -> str | None:
    if kind in (None, "text"):
        return _text(text)
    return f"[{_cut(_text(kind), 50) or '?'}]"


def _join_parts(parts: Iterable[str | None]) -> str | None:
    texts = [p for p in parts if p]
    return "\n".join(texts) if texts else None


def _load_json(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_JSON:
            return None
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value


def _genai_json(value: Any) -> list[Message]:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages``: JSON lists of ``parts``."""
    items = _load_json(value)
    if not isinstance(items, list):
        return []
    return [m for m in (_genai_message(item) for item in items[:MAX_MESSAGES]) if m is not None]


def _genai_message(item: Any, role: str | None = None) -> Message | None:
    if not isinstance(item, Mapping):
        text = _text(item)
        return Message(role or "?", _cut(text, MAX_TEXT) or "") if text is not None else None
    role = _text(item.get("role")) or role or "?"
    texts: list[str | None] = []
    calls: list[ToolCall] = []
    parts = item.get("parts")
    if isinstance(parts, list):
        for part in parts[:MAX_MESSAGES]:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind == "tool_call":
                if len(calls) < MAX_TOOL_CALLS:
                    calls.append(
                        _tool_call(part.get("name"), part.get("arguments"), part.get("id"))
                    )
            elif kind == "tool_call_response":
                texts.append(
                    _text_or_json(
                        part.get("response") if "response" in part else part.get("result")
                    )
                )
            elif kind in ("text", "reasoning", None):
                texts.append(_text(part.get("content")))
            else:
                texts.append(f"[{_cut(_text(kind), 50) or '?'}]")
    content = item.get("content")
    if isinstance(content, list):  # a provider's own content blocks
        for block in content[:MAX_MESSAGES]:
            if isinstance(block, Mapping):
                texts.append(_text(block.get("text")) or _text(block.get("content")))
            else:
                texts.append(_text(block))
    elif content is not None:
        texts.append(_text_or_json(content))
    for call in _listish(item.get("tool_calls"))[:MAX_TOOL_CALLS]:
        if isinstance(call, Mapping) and len(calls) < MAX_TOOL_CALLS:
            function = call.get("function")
            f = function if isinstance(function, Mapping) else call
            calls.append(_tool_call(f.get("name"), f.get("arguments"), call.get("id")))
    text = _join_parts(texts)
    return Message(_cut(role, 50) or "?", _cut(text, MAX_TEXT) or "", tuple(calls))


def _genai_instructions(value: Any) -> Message | None:
    loaded = _load_json(value)
    if isinstance(loaded, list):
        return _genai_message({"role": "system", "parts": loaded})
    text = _text(value)
    return Message("system", _cut(text, MAX_TEXT) or "") if text else None


def _genai_events(
    events: Iterable[tuple[str, Mapping[str, Any]]],
) -> tuple[list[Message], list[Message]]:
    inputs: list[Message] = []
    outputs: list[Message] = []
    for seen, (name, attrs) in enumerate(events):
        if seen >= 10 * MAX_MESSAGES:
            break
        if not isinstance(attrs, Mapping):
            continue
        if name in _GENAI_EVENT_ROLES and len(inputs) < MAX_MESSAGES:
            body = _load_json(attrs.get("gen_ai.event.content"))
            source = body if isinstance(body, Mapping) else attrs
            message = _genai_message(
                {
                    "role": source.get("role") or _GENAI_EVENT_ROLES[name],
                    "content": source.get("content"),
                    "tool_calls": source.get("tool_calls"),
                }
            )
            if message is not None:
                inputs.append(message)
        elif name == "gen_ai.choice" and len(outputs) < MAX_MESSAGES:
            body = _load_json(attrs.get("gen_ai.event.content"))
            source = body if isinstance(body, Mapping) else attrs
            inner = _load_json(source.get("message"))
            if not isinstance(inner, Mapping):
                inner = {"content": source.get("content"), "tool_calls": source.get("tool_calls")}
            message = _genai_message({"role": "assistant", **inner})
            if message is not None:
                outputs.append(message)
        elif name in ("gen_ai.content.prompt", "gen_ai.content.completion"):
            key = "gen_ai.prompt" if name.endswith("prompt") else "gen_ai.completion"
            side = inputs if key == "gen_ai.prompt" else outputs
            side.extend(_genai_legacy(attrs.get(key))[: MAX_MESSAGES - len(side)])
    return inputs, outputs


def _genai_legacy(value: Any) -> list[Message]:
    """The older ``gen_ai.prompt`` / ``gen_ai.completion``: JSON messages, or plain text."""
    if value is None:
        return []
    loaded = _load_json(value)
    if isinstance(loaded, list):
        return [m for m in (_genai_message(i) for i in loaded[:MAX_MESSAGES]) if m is not None]
    if isinstance(loaded, Mapping):
        message = _genai_message(loaded)
        return [message] if message is not None else []
    text = _text(value)
    return [Message("?", _cut(text, MAX_TEXT) or "")] if text else []


def _genai_flat(a: Mapping[str, Any]) -> tuple[list[Message], list[Message]]:
    """``gen_ai.prompt.N.role`` / ``.content`` (and ``gen_ai.completion.N``)."""
    sides: dict[str, dict[int, dict[str, Any]]] = {"prompt": {}, "completion": {}}
    for key, value in a.items():
        if not isinstance(key, str) or not key.startswith("gen_ai.") or key.count(".") != 3:
            continue
        m = _GENAI_FLAT.fullmatch(key)
        if m is None:
            continue
        messages = sides[m.group(1)]
        index = int(m.group(2))
        if index in messages or len(messages) < MAX_MESSAGES:
            messages.setdefault(index, {})[m.group(3)] = value
    out: list[list[Message]] = []
    for side, default in (("prompt", "user"), ("completion", "assistant")):
        msgs = sides[side]
        out.append(
            [
                Message(
                    _cut(_text(msgs[i].get("role")) or default, 50) or default,
                    _cut(_text(msgs[i].get("content")), MAX_TEXT) or "",
                )
                for i in sorted(msgs)
            ]
        )
    return out[0], out[1]


def _tool_call(name: Any, arguments: Any, call_id: Any) -> ToolCall:
    return ToolCall(
        name=_cut(_text(name), 200) or "?",
        arguments=_cut(_text_or_json(arguments), MAX_TEXT) or "",
        id=_cut(_text(call_id), 200),
    )


def _listish(value: Any) -> Sequence[Any]:
    loaded = _load_json(value)
    return loaded if isinstance(loaded, list) else []


def _text(value: Any) -> str | None:
    """A stored string as text; numbers as their digits; anything else is not text."""
    if isinstance(value, str):
        return value if value else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _text_or_json(value: Any) -> str | None:
    if value is None:
        return None
    text = _text(value)
    if text is not None:
        return text
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[: MAX_TEXT + 1]
    except (ValueError, TypeError, RecursionError):
        return None


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… (+{len(text) - limit} chars)"
