"""Plain text for pipes: what rich prints to a non-terminal, drawn without loading rich.

``spanflow runs | grep failed`` should cost about what Python costs to start, and importing
rich alone takes ~90 ms. Only layouts whose rich rendering is known exactly are drawn here:
printable ASCII text, a run table that fits the width as it is. Anything else gets None, and
the caller draws it with rich as before. Cell contents come from ``render`` (the same helpers
the rich table uses); a test compares both outputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Final, TextIO

from spanflow.exporters.records import RunData

from . import render

#: What rich puts between two columns of ``render.runs_table`` (padding 1 on either side).
_GAP: Final = 2
_PRINTABLE: Final = re.compile(r"[ -~]*")
#: Variables that make rich draw colour or terminal codes into a pipe.
_RICH_TERMINAL_ENV: Final = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def width_for(stream: TextIO) -> int | None:
    """The width rich would use on ``stream``, or None when rich must draw (a terminal)."""
    if render._isatty(stream) or any(name in os.environ for name in _RICH_TERMINAL_ENV):
        return None
    try:
        width = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        width = render.PIPE_WIDTH
    return width if width >= 20 else render.PIPE_WIDTH


def line(text: str, width: int) -> str | None:
    """``text`` as rich prints a one-line ``Text``, or None if rich would wrap or measure it."""
    if len(text) > width or not _PRINTABLE.fullmatch(text):
        return None
    return text + "\n"


def runs_table(runs: Sequence[RunData], width: int) -> str | None:
    """``render.runs_table(runs)`` as rich prints it ``width`` columns wide, or None."""
    header = ("run id", "workflow", "status", "started", "duration", "error")
    rows = [
        (
            run.id[:12],
            render.clean(run.workflow or "?"),
            run.status,
            render.local_time(run.started_at),
            render.format_duration(run.duration_ms),
            render.clean(render.one_line(run.error or "", render.ERROR_CHARS_IN_TABLE)),
        )
        for run in runs
    ]
    table = [header, *rows]
    if not all(_PRINTABLE.fullmatch(cell) for row in table for cell in row):
        return None
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    excess = sum(widths) + _GAP * (len(widths) - 1) - width
    if excess > 0:
        return None  # rich would shrink and fold columns: let rich draw it
    out: list[str] = []
    for row in table:
        out.append(
            "  ".join(
                cell.rjust(w) if i == 4 else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            + "\n"
        )
    return "".join(out)
