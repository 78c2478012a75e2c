"""Terminal output of stored runs: the run table, a run's span tree, and the output streams.

Everything shown comes from a store that may have been written by someone else, so every piece
of captured text goes through :func:`clean` (no terminal escape sequences get through) and is
added as plain ``Text``, never parsed as markup. The table and the tree are drawn by
``plaintext`` (standard library only: ``spanflow runs`` and ``show`` start in about the time
Python does); the other commands' output is drawn by rich, loaded when they need it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

from spanflow import attributes as attr
from spanflow.exporters.records import AnyRun, AnySpan, error_text

from . import plaintext
from .plaintext import Column, Terminal, Text, Tree, cell_len, table

if TYPE_CHECKING:
    # rich costs ~45 ms of start-up: only the commands other than runs and show load it.
    from rich.console import Console
    from spanflow.exporters.records import RunRecord, SpanRecord
    from spanflow.exporters.store import Store

    from . import ai_spans, span_forest


#: Captured values (outputs, inputs, state values) keep at least this many characters.
VALUE_CHARS: Final = 300
#: Lines kept from the end of a recorded traceback.
TRACEBACK_LINES: Final = 6
#: Items of one kind (patch operations, log lines) listed per span before "... N more".
MAX_ITEMS: Final = 20
ERROR_CHARS_IN_TABLE: Final = 70
#: The run table shortens the error before this many characters of it are left.
MIN_ERROR_CHARS: Final = 16
#: From this width on, the run table shows start times with the year and seconds.
WIDE_TABLE: Final = 100
#: Nesting levels drawn as a tree; deeper spans are listed at this level with their depth.
MAX_DEPTH: Final = 12
#: Columns a span tree keeps free of indentation for the span titles.
TITLE_ROOM: Final = 50
#: Width of the output when stdout is not a terminal and COLUMNS does not say.
PIPE_WIDTH: Final = plaintext.PIPE_WIDTH

STATUS_STYLES: Final = {
    "ok": "green",
    "failed": "bold red",
    "running": "yellow",
    "crashed": "bold magenta",
}
# What a stored string must not send to a terminal: C0 controls (tab too: it moves the cursor),
# DEL, C1 controls (U+0080-U+009F, among them the one-byte CSI U+009B), and the bidirectional
# and line-separator controls that reorder or split what is shown (Trojan Source).
_UNSAFE: Final = (
    "\\x00-\\x09\\x0b-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069"
)
_CONTROL: Final = re.compile(f"[{_UNSAFE}]")
_CONTROL_OR_NEWLINE: Final = re.compile(f"[{_UNSAFE}\\n]")
_CARETS: Final = re.compile(r"^\s*[\^~\s]+$")
_FRAME: Final = re.compile(r'^\s*File "(.*)", line \d+')
# spanflow's recording modules, wherever the recording process had them installed.
_OWN_FRAME: Final = re.compile(
    r"[/\\]spanflow[/\\](decorators|recording|retry|parallel|routing|runtime|context|replay)\.py$"
)


# -- text helpers ---------------------------------------------------------------------------------


def clean(text: object, *, newlines: bool = True) -> str:
    """``text`` (any stored value, as ``str``) safe for a terminal.

    Every control character is shown escaped (``\\x1b``, ``\\x9b``, ``\\u202e``), so no escape
    sequence, clipboard write (OSC 52), title change or bidi reordering gets through, and the
    reader sees that something was there. Newlines are kept where text is shown on several
    lines on purpose (``newlines=False`` escapes them too). This is the one function every
    stored string passes through on its way to the terminal.
    """
    pattern = _CONTROL if newlines else _CONTROL_OR_NEWLINE
    text = pattern.sub(_escape, str(text))
    # A lone surrogate (possible in stored JSON) cannot be encoded for output.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_json(text: str) -> str:
    """JSON text with the code points :func:`clean` escapes written as ``\\uXXXX`` escapes.

    ``json.dumps`` already escapes C0 controls but not DEL, C1 or bidi controls; outside
    strings JSON text has none of these, so the substitution keeps the document's meaning.
    """
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def shorten(text: str, limit: int = VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (+{len(text) - limit} chars)"


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(1, limit - 1)] + "…"


def format_duration(ms: float | None) -> str:
    """A human duration: ``0.4 ms``, ``120 ms``, ``1.25 s``, ``2m 03s``, ``1h 02m``."""
    if ms is None:
        return "-"
    ms = max(0.0, ms)
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def local_time(value: _dt.datetime) -> str:
    """An aware datetime in the local time zone, to the second."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def iso_utc(value: _dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix (as pydantic writes datetimes)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def status_text(status: str) -> Text:
    """A run status, coloured."""
    return Text(clean(status, newlines=False), style=STATUS_STYLES.get(status.split(" ")[0], ""))


# -- output streams ---------------------------------------------------------------------------------------


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def terminal(stream: TextIO | None = None) -> Terminal:
    """Where ``runs`` and ``show`` write: ``stream`` (stdout), its width and colours."""
    return Terminal(stream)


def make_console(stream: TextIO | None = None) -> Console:
    """A rich console on ``stream`` (stdout); plain text and a fixed width when it is not a TTY.

    Rich itself drops colour when ``NO_COLOR`` is set and when the stream is not a terminal.
    """
    from rich.console import Console

    out = stream if stream is not None else sys.stdout
    width: int | None = None
    if not _isatty(out):
        try:
            width = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            width = None
        if width is None or width < 20:
            width = PIPE_WIDTH
    return Console(
        file=out, width=width, highlight=False, markup=False, emoji=False, soft_wrap=False
    )


def write(text: str, stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout
    try:
        out.write(text)
    except UnicodeEncodeError:
        encoding = getattr(out, "encoding", None) or "utf-8"
        out.write(text.encode(encoding, "backslashreplace").decode(encoding))


def json_text(value: Any) -> str:
    """Indented JSON that is safe to print on a terminal (see :func:`safe_json`).

    Non-ASCII is kept as is unless it cannot be encoded (a lone surrogate).
    """
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, indent=2)
    return safe_json(text)


def format_bytes(n: int) -> str:
    """``1234567`` -> ``1.2 MB`` (powers of 1000, as ``--max-size`` reads them)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# -- the run list ---------------------------------------------------------------------------------


def runs_table(runs: Sequence[AnyRun], width: int = PIPE_WIDTH, id_chars: int = 12) -> list[Text]:
    """Runs as a table: id prefix, workflow, status, started, duration, error, in ``width``.

    The id prefix, status, start time and duration are never cut; the workflow is folded over
    lines if it must; the error gets what room is left, shortened to one line. Below
    ``WIDE_TABLE`` columns the start time leaves out the year and seconds. Widths are in
    terminal cells (a CJK character takes two).
    """
    started_format = "%Y-%m-%d %H:%M:%S" if width >= WIDE_TABLE else "%m-%d %H:%M"
    rows = [
        (
            clean(run.id[:id_chars], newlines=False),
            clean(one_line(run.workflow or "?", VALUE_CHARS), newlines=False),
            status_label(run),
            run.started_at.astimezone().strftime(started_format),
            format_duration(run.duration_ms),
            clean(one_line(run.error or "", ERROR_CHARS_IN_TABLE), newlines=False),
        )
        for run in runs
    ]
    headers = ("run id", "workflow", "status", "started", "duration", "error")
    need = [max([len(h), *(cell_len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    gaps = 2 * (len(headers) - 1)
    room = max(0, width - gaps - need[0] - need[2] - need[3] - need[4])
    workflow_w, error_w = need[1], need[5]
    if workflow_w + error_w > room:
        # The workflow keeps what it needs if the error can still say something, else half.
        workflow_w = max(min(workflow_w, room - MIN_ERROR_CHARS), min(workflow_w, room // 2), 8)
        error_w = max(room - workflow_w, len(headers[5]))
    columns = [
        Column(headers[0], no_wrap=True, min_width=need[0]),
        Column(headers[1], overflow="fold", width=workflow_w),
        Column(headers[2], no_wrap=True, min_width=need[2]),
        Column(headers[3], no_wrap=True, min_width=need[3]),
        Column(headers[4], justify="right", no_wrap=True, min_width=need[4]),
        Column(headers[5], overflow="ellipsis", no_wrap=True, width=error_w),
    ]
    cells = [
        [
            Text(run_id),
            Text(workflow),
            status_text(status),
            Text(started),
            Text(duration),
            Text(one_line(error, error_w), style="red"),
        ]
        for run_id, workflow, status, started, duration, error in rows
    ]
    return table(columns, cells, width, header_style="bold")


# -- one run --------------------------------------------------------------------------------------


def status_label(run: AnyRun) -> str:
    """A run's status as listed: ``ok (incomplete)`` for a trace whose root is not stored."""
    return f"{run.status} (incomplete)" if run.incomplete else run.status


def run_header(
    run: AnyRun,
    replays: Sequence[AnyRun],
    *,
    lone_step: bool = False,
    tokens: ai_spans.Tokens | None = None,
) -> Text:
    """The lines above the span tree: id, workflow, status, error, times, tokens, service, replays.

    A run whose root span is a step (a step called outside any workflow) says so: it is a
    one-step run, with no workflow for replay to call.
    """
    out = Text()
    out.append("run ", style="bold")
    out.append(clean(run.id, newlines=False), style="bold")
    out.append("  ")
    out.append(clean(run.workflow or "?", newlines=False), style="bold cyan")
    out.append("  ")
    out.append_text(status_text(status_label(run)))
    rows: list[tuple[str, Text]] = []
    if run.incomplete:
        note = "the root span of this trace has not been received (yet): no workflow name"
        rows.append(("incomplete", Text(note, style="yellow")))
    if run.error:
        rows.append(("error", Text(clean(shorten(run.error)), style="red")))
    rows.append(("started", Text(f"{local_time(run.started_at)} (local time)")))
    rows.append(("duration", Text(format_duration(run.duration_ms))))
    if tokens is not None and not tokens.empty:
        rows.append(("tokens", Text(token_text(tokens))))
    if lone_step:
        rows.append(
            (
                "kind",
                Text(
                    "one-step run: a step called outside any workflow (no workflow to replay)",
                    style="yellow",
                ),
            )
        )
    if run.service:
        rows.append(("service", Text(clean(run.service, newlines=False))))
    if run.entrypoint:
        where = f"  ({run.workflow_file})" if run.workflow_file else ""
        rows.append(("entrypoint", Text(clean(run.entrypoint + where, newlines=False))))
    if run.replay_of:
        rows.append(("replay of", Text(clean(run.replay_of, newlines=False))))
    if replays:
        listed = ", ".join(f"{r.id} ({r.status})" for r in replays[:MAX_ITEMS])
        more = f", … {len(replays) - MAX_ITEMS} more" if len(replays) > MAX_ITEMS else ""
        rows.append(("replays", Text(clean(listed + more, newlines=False))))
    for key, value in rows:
        out.append(f"\n  {key:<11}", style="dim")
        out.append_text(value)
    return out


def is_lone_step(run: AnyRun, roots: Iterable[AnySpan]) -> bool:
    """Whether ``run`` is a step called outside any workflow (its root span is a step)."""
    if run.entrypoint:
        return False
    return any(
        s.parent_id is None and s.attributes.get(attr.STEP_TYPE) == attr.STEP_TYPE_STEP
        for s in roots
    )


def run_view(
    run: AnyRun,
    replays: Sequence[AnyRun],
    tree: Tree | None,
    *,
    lone_step: bool = False,
    tokens: ai_spans.Tokens | None = None,
    width: int = PIPE_WIDTH,
    ascii_only: bool = False,
) -> list[Text]:
    """The lines of one run's header and span tree (None: the run has no spans yet)."""
    header = run_header(run, replays, lone_step=lone_step, tokens=tokens)
    lines = [*header.wrap(width), Text()]
    if tree is not None:
        lines.extend(tree.lines(width, ascii_only=ascii_only))
    else:
        lines.append(Text("no spans stored for this run yet", style="dim"))
    return lines


def span_tree(spans: Sequence[AnySpan], *, everything: bool = False) -> Tree:
    """Spans nested by parent, children in start order (see :func:`draw_tree`)."""
    from . import span_forest

    forest = span_forest.build(spans)
    return draw_tree(forest, span_forest.layout(forest, everything=everything), spans.__getitem__)


def draw_tree(
    forest: span_forest.Forest,
    entries: Sequence[span_forest.Entry],
    record: Callable[[int], AnySpan],
    width: int = PIPE_WIDTH,
) -> Tree:
    """The tree of ``entries`` (from ``span_forest.layout``); ``record(i)`` is span ``i``.

    A span whose parent is not stored is shown at the top level, marked ``(orphan)``, and so
    are spans whose parents form a cycle or that name themselves as parent; a repeated span id
    is marked too. Offsets are from the start of the run and clamped at zero, so clock skew
    between processes (a child that seems to start before its parent) cannot produce negative
    times. A long list of siblings left out is one ``… N more spans`` line. On a narrow screen
    (``width``) fewer levels are indented, so a span's title keeps room for its name, duration
    and status.
    """
    from . import span_forest

    max_depth = max(2, min(MAX_DEPTH, (width - TITLE_ROOM) // 4))
    nodes = forest.spans
    roots = [n.start_ns for n in nodes if n.parent_id is None]
    base = min(roots or [n.start_ns for n in nodes])
    tree = Tree(Text("spans", style="bold"), guide_style="dim")
    # levels[d] is the node that spans at depth d + 1 hang from.
    levels: list[Tree] = [tree]
    for entry in entries:
        depth = entry.depth
        parent_node = levels[min(depth, max_depth) - 1]
        if entry.hidden is not None:
            parent_node.add(_hidden_label(entry.hidden))
            continue
        if entry.span < 0:
            tree.add(
                Text(
                    f"… {entry.undrawn:,} more spans not drawn: --all draws every span, "
                    "--json prints them all",
                    style="yellow",
                )
            )
            continue
        i = entry.span
        failed = [k for k in forest.children[i] if nodes[k].status == "ERROR"]
        why = forest.why.get(i, "")
        label = span_label(
            record(i),
            base,
            [record(k) for k in failed[: span_forest.FAILED]],
            orphan=why == "orphan",
        )
        if why and why != "orphan":
            label.append(f"  ({why})", style="yellow")
        if i in forest.duplicates:
            label.append("  (duplicate span id)", style="yellow")
        if depth > max_depth:
            # Deeper levels would indent the text off the screen: keep them at this
            # indentation, in call order, saying how deep they are.
            label = Text(f"[depth {depth}] ", style="dim") + label
        branch = parent_node.add(label)
        if depth < max_depth:
            del levels[depth:]
            levels.append(branch)
    return tree


def _hidden_label(hidden: span_forest.Hidden) -> Text:
    noun = "span" if hidden.spans == 1 else "spans"
    text = Text(f"… {hidden.spans:,} more {noun}", style="dim")
    if hidden.failed:
        text.append(f" ({hidden.failed:,} with failures not shown)", style="yellow")
    text.append(" (--all shows them)", style="dim")
    return text


def span_label(
    span: AnySpan, base_ns: int, children: Sequence[AnySpan], *, orphan: bool = False
) -> Text:
    """One span: a title line, then what it recorded (attempts, errors, logs, diffs, output).

    Each recorded line is one ``(text, style)`` of :func:`detail_lines`.
    """
    a = span.attributes
    failed = span.status == "ERROR"
    ai = interpret_span(span)
    out = Text()
    badge = kind_badge(span, ai)
    number = a.get(attr.ATTEMPT_NUMBER)
    if number is not None:
        out.append(f"attempt {clean(number, newlines=False)}", style="bold")
    else:
        out.append(clean(a.get(attr.STEP_NAME) or span.name, newlines=False), style="bold")
    # Name, duration and status first: on a narrow screen what wraps is the kind and offset.
    out.append(f"  {format_duration((span.end_ns - span.start_ns) / 1e6)}")
    out.append("  ")
    if a.get(attr.RUN_UNFINISHED):  # rebuilt from its start record: it never ended
        out.append(clean(span.status_message or "running"), style="bold yellow")
    else:
        out.append("ERROR" if failed else "ok", style="bold red" if failed else "green")
    if badge:  # after the status: on a narrow screen it wraps, never the name
        out.append(f"  [{badge}]", style="magenta")
    kind = _kind(span, badge)
    if kind:
        out.append(f"  {clean(kind, newlines=False)}", style="dim")
    out.append(f"  +{format_duration((span.start_ns - base_ns) / 1e6)}", style="dim")
    if orphan:
        out.append("  (orphan)", style="yellow")
    for line, style in detail_lines(span, children, ai=ai):
        out.append("\n")
        out.append(clean(line), style=style)
    return out


def _kind(span: AnySpan, badge: str | None = None) -> str:
    a = span.attributes
    step_type = str(a.get(attr.STEP_TYPE) or "")
    if step_type == attr.STEP_TYPE_ATTEMPT:
        return ""
    kind = str(a.get(attr.SPAN_KIND) or "")
    if badge is not None and kind.lower() == badge:
        kind = ""  # the badge says it
    parts = [p for p in (step_type, kind if kind != "CHAIN" else "") if p]
    if not parts and span.kind != "INTERNAL":
        parts.append(span.kind.lower())
    return " · ".join(parts)


def _replay_lines(a: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A replay root's edits (``--set``) and divergence, one line each."""
    lines: list[tuple[str, str]] = []
    for key, show in ((attr.REPLAY_EDITS, "edited"), (attr.REPLAY_DIVERGED, "diverged")):
        try:
            items = json.loads(str(a.get(key) or "[]"))
        except ValueError:
            continue
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            if show == "edited":
                value = shorten(json.dumps(item.get("value"), ensure_ascii=False))
                lines.append((clean(f"edited: {item.get('target')} = {value}"), "magenta"))
            else:
                lines.append((clean(f"diverged: {item.get('kind')} {item.get('path')}"), "yellow"))
    return lines


def detail_lines(
    span: AnySpan, children: Sequence[AnySpan], *, ai: ai_spans.AiSpan | None = None
) -> list[tuple[str, str]]:
    """The ``(text, style)`` lines recorded on a span, most telling first."""
    a = span.attributes
    if ai is None:
        ai = interpret_span(span)
    lines: list[tuple[str, str]] = []
    attempts = a.get(attr.STEP_ATTEMPTS)
    if attempts is not None and attempts != 1:
        lines.append((f"attempts: {attempts}", "yellow"))
    wait = a.get(attr.ATTEMPT_WAIT)
    if isinstance(wait, int | float):
        lines.append((f"then waited {format_duration(wait * 1000)} before the next attempt", "dim"))
    if a.get(attr.REPLAY_CACHED):
        lines.append(("replay: recorded output reused (not executed)", "cyan"))
    if a.get(attr.REPLAY_OF):
        lines.append((f"replay of run {a[attr.REPLAY_OF]}", "cyan"))
        lines.extend(_replay_lines(a))
    if a.get(attr.FALLBACK_USED):
        lines.append(("fallback used: the fallback produced the result", "yellow"))
    if a.get(attr.DEFAULT_USED):
        lines.append(("default used: the step returned its default=", "yellow"))
    if a.get(attr.CANCELLED):
        lines.append(("cancelled", "yellow"))
    if a.get(attr.TIMEOUT_S) is not None and span.status == "ERROR":
        lines.append((f"timeout: {a[attr.TIMEOUT_S]} s per attempt", "dim"))
    lines.extend(_error_lines(span, children))
    lines.extend(_route_lines(a))
    lines.extend(ai_lines(ai, failed=span.status == "ERROR"))
    lines.extend(_log_lines(span))
    diff = a.get(attr.STATE_DIFF)
    if isinstance(diff, str) and diff:
        lines.extend((f"state: {op}", "magenta") for op in patch_lines(diff))
    # A conversation shown says what the raw input and output would, more readably.
    if (
        (span.status == "ERROR" or a.get(attr.RUN_UNFINISHED))
        and isinstance(a.get(attr.INPUT_VALUE), str)
        and not ai.input_messages
    ):
        lines.append((f"input: {shorten(a[attr.INPUT_VALUE])}", ""))
    output = a.get(attr.OUTPUT_VALUE)
    if isinstance(output, str) and not ai.output_messages:
        lines.append((f"output: {shorten(output)}", ""))
    return lines


def _exceptions(span: AnySpan) -> list[Mapping[str, Any]]:
    return [e.attributes for e in span.events if e.name == attr.EXCEPTION_EVENT]


def _error_lines(span: AnySpan, children: Sequence[AnySpan]) -> list[tuple[str, str]]:
    events = [(e.name, e.attributes) for e in span.events]
    if span.status != "ERROR":
        return [
            (f"handled: {error_text(None, {}, [(attr.EXCEPTION_EVENT, ev)])}", "yellow")
            for ev in _exceptions(span)[-MAX_ITEMS:]
        ]
    message = error_text(span.status_message, span.attributes, events)
    lines = [(f"error: {shorten(message)}", "bold red")]
    # The same exception travels up through every enclosing step: show its traceback once,
    # on the span it started from.
    raised_below = any(
        c.status == "ERROR"
        and error_text(c.status_message, c.attributes, [(e.name, e.attributes) for e in c.events])
        == message
        for c in children
    )
    found = _exceptions(span)
    stack = found[-1].get(attr.EXCEPTION_STACKTRACE) if found else None
    if isinstance(stack, str) and stack.strip() and not raised_below:
        lines.extend(("  " + line, "red") for line in traceback_tail(stack))
    return lines


def traceback_tail(stacktrace: str, count: int = TRACEBACK_LINES) -> list[str]:
    """The last ``count`` lines of a traceback, without spanflow's own frames and ``^^^`` lines.

    The decorators' frames sit between every two frames of user code; they say nothing about
    the failure, and would push the user's frames out of the few lines shown.
    """
    lines: list[str] = []
    skipping = False
    for line in stacktrace.splitlines():
        if not line.strip() or _CARETS.match(line) or line.startswith("Traceback (most recent"):
            continue
        frame = _FRAME.match(line)
        if frame:
            skipping = bool(_OWN_FRAME.search(frame.group(1)))
        elif not line.startswith("    "):
            skipping = False  # the exception line, a note, "During handling of ..."
        if not skipping:
            lines.append(line.rstrip())
    return lines[-count:]


def _route_lines(a: Mapping[str, Any]) -> list[tuple[str, str]]:
    branch = a.get(attr.ROUTE_BRANCH)
    if branch is None:
        return []
    name = a.get(attr.ROUTE_NAME)
    text = f"route {name}: {branch}" if name else f"route: {branch}"
    reason = a.get(attr.ROUTE_REASON)
    if reason is not None and reason != "null":
        text += f"  (reason: {shorten(str(reason))})"
    return [(text, "blue")]


# -- AI spans (OpenInference, GenAI, spanflow's own llm steps) ----------------------------------

#: Messages of a call's input listed in the tree; a longer history shows its first and last few.
CONVERSATION_MESSAGES: Final = 6


def interpret_span(span: AnySpan) -> ai_spans.AiSpan:
    """What ``span`` says as an AI call (see :func:`ai_spans.interpret`)."""
    from . import ai_spans

    return ai_spans.interpret(span.attributes, ((e.name, e.attributes) for e in span.events))


def kind_badge(span: AnySpan, ai: ai_spans.AiSpan) -> str | None:
    """The kind shown as ``[llm]`` on a span's title line.

    spanflow's steps are ``CHAIN`` unless their ``kind=`` says otherwise, so on them ``chain``
    says nothing the step type does not; on spans from other libraries it tells the framework's
    plumbing from its calls.
    """
    if ai.kind is None:
        return None
    if ai.kind == "chain" and span.attributes.get(attr.STEP_TYPE) is not None:
        return None
    return ai.kind


def token_text(tokens: ai_spans.Tokens) -> str:
    """``19 (12 prompt + 7 completion)``."""
    total = tokens.sum
    parts = [
        f"{n:,} {label}"
        for n, label in ((tokens.prompt, "prompt"), (tokens.completion, "completion"))
        if n is not None
    ]
    head = f"{total:,}" if total is not None else "?"
    return f"{head} ({' + '.join(parts)})" if parts else head


def ai_lines(ai: ai_spans.AiSpan, *, failed: bool = False) -> list[tuple[str, str]]:
    """A model call's model, provider and tokens, then its conversation, one message a line.

    A failed call shows each message as recorded (shortened); the others one line each.
    """
    lines: list[tuple[str, str]] = []
    facts = []
    if ai.model is not None:
        facts.append(f"model {ai.model}")
    if ai.provider is not None:
        facts.append(f"provider {ai.provider}")
    if ai.tool is not None and ai.kind == "tool":
        facts.append(f"tool {ai.tool}")
    if not ai.tokens.empty:
        facts.append(f"tokens {token_text(ai.tokens)}")
    if facts:
        lines.append((f"{ai.kind or 'ai'}: " + ", ".join(facts), "dim"))
    head, tail = list(ai.input_messages), []
    if len(head) > CONVERSATION_MESSAGES:
        # The system prompt and the latest turns say most about what the model was asked.
        keep = 1 if head[0].role == "system" else 0
        tail = head[len(head) - (CONVERSATION_MESSAGES - keep - 1) :]
        skipped = len(head) - keep - len(tail)
        head = head[:keep]
    for message in head:
        lines.extend(_message_lines(message, failed=failed, style="cyan"))
    if tail:
        lines.append((f"… {skipped} earlier messages", "dim"))
    for message in tail:
        lines.extend(_message_lines(message, failed=failed, style="cyan"))
    for message in ai.output_messages[:MAX_ITEMS]:
        lines.extend(_message_lines(message, failed=failed, style="green"))
    if len(ai.output_messages) > MAX_ITEMS:
        lines.append((f"… {len(ai.output_messages) - MAX_ITEMS} more messages", "dim"))
    return lines


def _message_lines(message: ai_spans.Message, *, failed: bool, style: str) -> list[tuple[str, str]]:
    role = one_line(message.role, 20)
    if failed:  # as recorded, its continuation lines indented under the role
        text = shorten(message.content).replace("\n", "\n  ")
    else:
        text = one_line(message.content, VALUE_CHARS)
    lines = []
    if text or not message.tool_calls:
        lines.append((f"{role}: {text}", style))
    for call in message.tool_calls[:MAX_ITEMS]:
        args = one_line(call.arguments, VALUE_CHARS)
        lines.append((f"{role}: calls {one_line(call.name, 80)}({args})", style))
    return lines


def run_tokens(
    outline: Iterable[tuple[str, str | None]], carriers: Iterable[AnySpan]
) -> ai_spans.Tokens:
    """A run's token total from every span's ``(id, parent id)`` and the spans that count any.

    See :func:`ai_spans.run_tokens` for how parents that total their children are not added.
    """
    from . import ai_spans

    own = {s.span_id: ai_spans.tokens_of(s.attributes) for s in carriers}
    none = ai_spans.Tokens()
    return ai_spans.run_tokens(
        (span_id, parent_id, own.get(span_id, none)) for span_id, parent_id in outline
    )


#: Text only the attributes of a span that counts tokens hold (OpenInference, GenAI).
_TOKEN_NEEDLES: Final = ("llm.token_count.", "gen_ai.usage.")


def stored_run_tokens(store: Store, run_id: str) -> ai_spans.Tokens:
    """The token total of a stored run; reads in full only the spans that count tokens."""
    from . import ai_spans

    rows = store.rows_mentioning(run_id, _TOKEN_NEEDLES)
    if not rows:
        return ai_spans.Tokens()
    carriers = store.spans_at(run_id, rows)
    outline = store.span_outline(run_id)
    return run_tokens(((row[1], row[2]) for row in outline), carriers.values())


def show_json(run: RunRecord, spans: Sequence[SpanRecord]) -> dict[str, Any]:
    """``show --json``: the run and span records, each span with what it says as an AI call
    (``ai``: kind, model, provider, tool, messages, tokens) and the run with its token total."""
    from . import ai_spans

    interpreted = [interpret_span(span) for span in spans]
    tokens = ai_spans.run_tokens(
        (span.span_id, span.parent_id, ai.tokens)
        for span, ai in zip(spans, interpreted, strict=True)
    )
    return {
        "run": {**run.model_dump(mode="json"), "tokens": tokens.to_json()},
        "spans": [
            {**span.model_dump(mode="json"), "ai": ai.to_json()}
            for span, ai in zip(spans, interpreted, strict=True)
        ],
    }


def _log_lines(span: AnySpan) -> list[tuple[str, str]]:
    logs = [e.attributes for e in span.events if e.name == attr.LOG_EVENT]
    lines = [
        (
            f"log {ev.get(attr.LOG_LEVEL, '?')} {ev.get(attr.LOG_LOGGER, '?')}: "
            f"{shorten(one_line(str(ev.get(attr.LOG_MESSAGE, '')), VALUE_CHARS * 2))}",
            "yellow" if ev.get(attr.LOG_LEVEL) in ("WARNING", "ERROR", "CRITICAL") else "dim",
        )
        for ev in logs[:MAX_ITEMS]
    ]
    if len(logs) > MAX_ITEMS:
        lines.append((f"… {len(logs) - MAX_ITEMS} more log lines", "dim"))
    return lines


def patch_lines(diff: str) -> list[str]:
    """A JSON Patch as one readable line per operation: ``replace /label = "billing"``."""
    try:
        ops = json.loads(diff)
    except ValueError:
        return [shorten(diff)]
    if not isinstance(ops, list):
        return [shorten(diff)]
    lines: list[str] = []
    for op in ops[:MAX_ITEMS]:
        if not isinstance(op, dict):
            lines.append(shorten(json.dumps(op, ensure_ascii=False)))
            continue
        kind, path = op.get("op", "?"), op.get("path", "")
        if kind in ("move", "copy"):
            lines.append(f"{kind} {op.get('from', '?')} -> {path}")
        elif "value" in op:
            value = json.dumps(op["value"], ensure_ascii=False, default=str)
            lines.append(f"{kind} {path} = {shorten(value)}")
        else:
            lines.append(f"{kind} {path}")
    if len(ops) > MAX_ITEMS:
        lines.append(f"… {len(ops) - MAX_ITEMS} more operations")
    return lines
