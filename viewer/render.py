"""Terminal output of stored runs: the run table, a run's span tree, and the output streams.

Everything shown comes from a store that may have been written by someone else, so every piece
of captured text goes through :func:`clean` (no terminal escape sequences get through) and is
added as plain ``Text``, never parsed as markup.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

from spanflow import attributes as attr
from spanflow.exporters.records import RunData, SpanData, error_text

if TYPE_CHECKING:
    # rich costs ~90 ms of start-up: it loads in the functions that draw, so the text helpers
    # here (and the plain output for pipes, ``viewer/plain.py``) do without it.
    from rich.console import Console, Group, RenderableType
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

#: Captured values (outputs, inputs, state values) keep at least this many characters.
VALUE_CHARS: Final = 300
#: Lines kept from the end of a recorded traceback.
TRACEBACK_LINES: Final = 6
#: Items of one kind (patch operations, log lines) listed per span before "... N more".
MAX_ITEMS: Final = 20
ERROR_CHARS_IN_TABLE: Final = 70
#: Nesting levels drawn as a tree; deeper spans are listed at this level with their depth.
MAX_DEPTH: Final = 12
#: Width of rich output when stdout is not a terminal and COLUMNS does not say.
PIPE_WIDTH: Final = 120

STATUS_STYLES: Final = {
    "ok": "green",
    "failed": "bold red",
    "running": "yellow",
    "crashed": "bold magenta",
}
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CARETS: Final = re.compile(r"^\s*[\^~\s]+$")
_FRAME: Final = re.compile(r'^\s*File "(.*)", line \d+')
# spanflow's recording modules, wherever the recording process had them installed.
_OWN_FRAME: Final = re.compile(
    r"[/\\]spanflow[/\\](decorators|recording|retry|parallel|routing|runtime|context|replay)\.py$"
)


# -- text helpers ---------------------------------------------------------------------------------


def clean(text: str) -> str:
    """``text`` safe for a terminal: control characters (but newline and tab) shown escaped."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    # A lone surrogate (possible in stored JSON) cannot be encoded for output.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
    from rich.text import Text

    return Text(status, style=STATUS_STYLES.get(status, ""))


# -- output streams ---------------------------------------------------------------------------------------


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


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
    """Indented JSON; non-ASCII kept as is unless it cannot be encoded (a lone surrogate)."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, indent=2)
    return text


def format_bytes(n: int) -> str:
    """``1234567`` -> ``1.2 MB`` (powers of 1000, as ``--max-size`` reads them)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# -- the run list ---------------------------------------------------------------------------------


def runs_table(runs: Sequence[RunData]) -> Table:
    """Runs as a table: id (12 chars), workflow, status, started, duration, error."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("run id", no_wrap=True)
    table.add_column("workflow", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("error", overflow="ellipsis", no_wrap=True)
    for run in runs:
        table.add_row(
            Text(run.id[:12]),
            Text(clean(run.workflow or "?")),
            status_text(run.status),
            Text(local_time(run.started_at)),
            Text(format_duration(run.duration_ms)),
            Text(clean(one_line(run.error or "", ERROR_CHARS_IN_TABLE)), style="red"),
        )
    return table


# -- one run --------------------------------------------------------------------------------------


def run_header(run: RunData, replays: Sequence[RunData]) -> Text:
    """The lines above the span tree: id, workflow, status, error, times, service, replays."""
    from rich.text import Text

    out = Text()
    out.append("run ", style="bold")
    out.append(run.id, style="bold")
    out.append("  ")
    out.append(clean(run.workflow or "?"), style="bold cyan")
    out.append("  ")
    out.append_text(status_text(run.status))
    rows: list[tuple[str, Text]] = []
    if run.error:
        rows.append(("error", Text(clean(shorten(run.error)), style="red")))
    rows.append(("started", Text(f"{local_time(run.started_at)} (local time)")))
    rows.append(("duration", Text(format_duration(run.duration_ms))))
    if run.service:
        rows.append(("service", Text(clean(run.service))))
    if run.entrypoint:
        where = f"  ({clean(run.workflow_file)})" if run.workflow_file else ""
        rows.append(("entrypoint", Text(clean(run.entrypoint) + where)))
    if run.replay_of:
        rows.append(("replay of", Text(run.replay_of)))
    if replays:
        listed = ", ".join(f"{r.id} ({r.status})" for r in replays[:MAX_ITEMS])
        more = f", … {len(replays) - MAX_ITEMS} more" if len(replays) > MAX_ITEMS else ""
        rows.append(("replays", Text(listed + more)))
    for key, value in rows:
        out.append(f"\n  {key:<11}", style="dim")
        out.append_text(value)
    return out


def run_view(run: RunData, spans: Sequence[SpanData], replays: Sequence[RunData]) -> Group:
    """The header and the span tree of one run."""
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = [run_header(run, replays), Text()]
    if spans:
        parts.append(span_tree(spans))
    else:
        parts.append(Text("no spans stored for this run yet", style="dim"))
    return Group(*parts)


def span_tree(spans: Sequence[SpanData]) -> Tree:
    """Spans nested by parent, children in start order.

    A span whose parent is not stored is shown at the top level, marked ``(orphan)``; offsets
    are from the start of the run and clamped at zero, so clock skew between processes (a child
    that seems to start before its parent) cannot produce negative times.
    """
    from rich.text import Text
    from rich.tree import Tree

    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[SpanData]] = {}
    tops: list[SpanData] = []
    for span in spans:
        if (
            span.parent_id is not None
            and span.parent_id in by_id
            and span.parent_id != span.span_id
        ):
            children.setdefault(span.parent_id, []).append(span)
        else:
            tops.append(span)
    roots = [s for s in spans if s.parent_id is None]
    base = min(s.start_ns for s in (roots or spans))
    tree = Tree(Text("spans", style="bold"), guide_style="dim")
    shown: set[str] = set()

    def attach(node: Tree, top: Sequence[SpanData], orphan: bool) -> None:
        # Iterative, so a very deep call tree cannot exhaust the Python stack.
        stack: list[tuple[Tree, SpanData, bool, int]] = [
            (node, s, orphan and s.parent_id is not None, 1) for s in reversed(_by_start(top))
        ]
        while stack:
            parent_node, span, is_orphan, depth = stack.pop()
            if span.span_id in shown:
                continue
            shown.add(span.span_id)
            kids = children.get(span.span_id, [])
            label = span_label(span, base, kids, orphan=is_orphan)
            if depth > MAX_DEPTH:
                # Deeper levels would indent the text off the screen: keep them at this
                # indentation, in call order, saying how deep they are.
                label = Text(f"[depth {depth}] ", style="dim") + label
            branch = parent_node.add(label)
            under = branch if depth < MAX_DEPTH else parent_node
            stack.extend((under, kid, False, depth + 1) for kid in reversed(_by_start(kids)))

    attach(tree, tops, orphan=True)
    # Spans whose parents form a cycle are reachable from no top-level span: still show them.
    rest = [s for s in spans if s.span_id not in shown]
    if rest:
        attach(tree, rest, orphan=True)
    return tree


def _by_start(spans: Iterable[SpanData]) -> list[SpanData]:
    return sorted(spans, key=lambda s: (s.start_ns, s.span_id))


def span_label(
    span: SpanData, base_ns: int, children: Sequence[SpanData], *, orphan: bool = False
) -> Text:
    """One span: a title line, then what it recorded (attempts, errors, logs, diffs, output)."""
    from rich.text import Text

    a = span.attributes
    failed = span.status == "ERROR"
    out = Text()
    number = a.get(attr.ATTEMPT_NUMBER)
    if number is not None:
        out.append(f"attempt {clean(str(number))}", style="bold")
    else:
        out.append(clean(str(a.get(attr.STEP_NAME) or span.name)), style="bold")
    kind = _kind(span)
    if kind:
        out.append(f"  {kind}", style="dim")
    out.append(f"  +{format_duration((span.start_ns - base_ns) / 1e6)}", style="dim")
    out.append(f"  {format_duration((span.end_ns - span.start_ns) / 1e6)}")
    out.append("  ")
    if a.get(attr.RUN_UNFINISHED):  # rebuilt from its start record: it never ended
        out.append(clean(span.status_message or "running"), style="bold yellow")
    else:
        out.append("ERROR" if failed else "ok", style="bold red" if failed else "green")
    if orphan:
        out.append("  (orphan)", style="yellow")
    for line, style in detail_lines(span, children):
        out.append("\n")
        out.append(clean(line), style=style)
    return out


def _kind(span: SpanData) -> str:
    a = span.attributes
    step_type = str(a.get(attr.STEP_TYPE) or "")
    if step_type == attr.STEP_TYPE_ATTEMPT:
        return ""
    kind = str(a.get(attr.SPAN_KIND) or "")
    parts = [p for p in (step_type, kind if kind != "CHAIN" else "") if p]
    if not parts and span.kind != "INTERNAL":
        parts.append(span.kind.lower())
    return " · ".join(parts)


def detail_lines(span: SpanData, children: Sequence[SpanData]) -> list[tuple[str, str]]:
    """The ``(text, style)`` lines recorded on a span, most telling first."""
    a = span.attributes
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
    lines.extend(_genai_lines(a))
    lines.extend(_log_lines(span))
    diff = a.get(attr.STATE_DIFF)
    if isinstance(diff, str) and diff:
        lines.extend((f"state: {op}", "magenta") for op in patch_lines(diff))
    if (span.status == "ERROR" or a.get(attr.RUN_UNFINISHED)) and isinstance(
        a.get(attr.INPUT_VALUE), str
    ):
        lines.append((f"input: {shorten(a[attr.INPUT_VALUE])}", ""))
    output = a.get(attr.OUTPUT_VALUE)
    if isinstance(output, str):
        lines.append((f"output: {shorten(output)}", ""))
    return lines


def _exceptions(span: SpanData) -> list[Mapping[str, Any]]:
    return [e.attributes for e in span.events if e.name == attr.EXCEPTION_EVENT]


def _error_lines(span: SpanData, children: Sequence[SpanData]) -> list[tuple[str, str]]:
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


def _genai_lines(a: Mapping[str, Any]) -> list[tuple[str, str]]:
    model = a.get(attr.GEN_AI_RESPONSE_MODEL) or a.get(attr.GEN_AI_REQUEST_MODEL)
    tokens_in = a.get(attr.GEN_AI_INPUT_TOKENS)
    tokens_out = a.get(attr.GEN_AI_OUTPUT_TOKENS)
    if model is None and tokens_in is None and tokens_out is None:
        return []
    parts = [f"model {model}"] if model is not None else []
    if tokens_in is not None or tokens_out is not None:
        parts.append(
            f"tokens {tokens_in if tokens_in is not None else '?'} in / "
            f"{tokens_out if tokens_out is not None else '?'} out"
        )
    return [("llm: " + ", ".join(parts), "dim")]


def _log_lines(span: SpanData) -> list[tuple[str, str]]:
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
