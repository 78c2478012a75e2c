"""Styled terminal text without rich: word wrapping, a column table, a guide-line tree.

``spanflow runs`` and ``spanflow show`` must answer in about the time Python takes to start;
rich alone costs them more than that. This module draws what they need with the standard
library and the same layout rules rich applies (word wrap, words longer than a line folded,
``…`` where a cell is cut, the tree's guide lines), measuring text in terminal cells so wide
(CJK, emoji) characters take two. Colours and bold/dim are written as SGR codes only to a
terminal (or with ``FORCE_COLOR``/``TTY_COMPATIBLE=1``), never with ``NO_COLOR`` colours,
never on a ``dumb`` terminal.

Text reaching here must already have been through ``render.clean``: this module lays text out,
it does not make it safe.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Final, TextIO

#: A style is a space-separated list of attributes and one colour: ``"bold red"``, ``"dim"``.
Part = tuple[str, str]

_SGR_ATTRIBUTES: Final = {"bold": "1", "dim": "2", "italic": "3", "underline": "4"}
_SGR_COLOURS: Final = {
    "black": "30",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
    "white": "37",
}
_WORD: Final = re.compile(r"\s*\S+\s*")
#: Width when stdout is not a terminal and COLUMNS does not say; and on a dumb terminal.
PIPE_WIDTH: Final = 120
DUMB_WIDTH: Final = 80
GUIDES: Final = ("    ", "│   ", "├── ", "└── ")
ASCII_GUIDES: Final = ("    ", "|   ", "+-- ", "`-- ")
_SPACE, _CONTINUE, _FORK, _END = range(4)


# -- measuring ------------------------------------------------------------------------------------


def char_cells(ch: str) -> int:
    """Terminal cells of one character: 2 for wide (East Asian wide/full-width, most emoji),
    0 for combining marks and joiners, else 1."""
    if ch.isascii():
        return 0 if ch < " " or ch == "\x7f" else 1
    import unicodedata  # only for text that is not ASCII

    code = ord(ch)
    if code < 0xA0 or code in (0x200B, 0x200C, 0x200D) or 0xFE00 <= code <= 0xFE0F:
        return 0
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def cell_len(text: str) -> int:
    """Terminal cells ``text`` takes on one line."""
    if text.isascii():
        return len(text)
    return sum(char_cells(ch) for ch in text)


def set_cell_size(text: str, width: int) -> str:
    """``text`` cut or padded with spaces to exactly ``width`` cells (a wide character that
    would straddle the edge is replaced by a space)."""
    size = cell_len(text)
    if size == width:
        return text
    if size < width:
        return text + " " * (width - size)
    if text.isascii():
        return text[:width]
    used = 0
    for i, ch in enumerate(text):
        w = char_cells(ch)
        if used + w > width:
            return text[:i] + " " * (width - used)
        used += w
    return text


def _chop_cells(text: str, width: int) -> list[str]:
    """``text`` in pieces of at most ``width`` cells; as rich does, a character wider than
    ``width`` starts with an empty piece."""
    if text.isascii():
        return [text[i : i + width] for i in range(0, len(text), width)]
    pieces: list[str] = []
    start = used = 0
    for i, ch in enumerate(text):
        w = char_cells(ch)
        if used + w > width:
            pieces.append(text[start:i])
            start, used = i, 0
        used += w
    if used:
        pieces.append(text[start:])
    return pieces


def _break_offsets(text: str, width: int, fold: bool) -> list[int]:
    """Where to break ``text`` so each line fits ``width`` cells: between words, and inside a
    word longer than a line when ``fold``."""
    breaks: list[int] = []
    offset = 0
    for m in _WORD.finditer(text):
        start, word = m.start(), m.group()
        length = cell_len(word.rstrip())
        if width - offset >= length:
            offset += cell_len(word)
        elif length > width:
            if fold:
                pieces = _chop_cells(word, width)
                for n, piece in enumerate(pieces):
                    if start:
                        breaks.append(start)
                    if n == len(pieces) - 1:
                        offset = cell_len(piece)
                    else:
                        start += len(piece)
            else:
                if start:
                    breaks.append(start)
                offset = cell_len(word)
        elif offset and start:
            breaks.append(start)
            offset = cell_len(word)
    return breaks


# -- styled text ----------------------------------------------------------------------------------


class Text:
    """A line (or lines, split at ``\\n``) of text in styled parts, built with :meth:`append`."""

    __slots__ = ("parts",)

    def __init__(self, text: str = "", style: str = "") -> None:
        self.parts: list[Part] = [(text, style)] if text else []

    def append(self, text: str, style: str = "") -> Text:
        """Add ``text`` in ``style``; returns self."""
        if text:
            self.parts.append((text, style))
        return self

    def append_text(self, other: Text) -> Text:
        """Add another text's parts; returns self."""
        self.parts.extend(other.parts)
        return self

    def __add__(self, other: Text) -> Text:
        joined = Text()
        joined.parts = [*self.parts, *other.parts]
        return joined

    @property
    def plain(self) -> str:
        """The text without styles."""
        return "".join(text for text, _ in self.parts)

    def __str__(self) -> str:
        return self.plain

    def _slice(self, start: int, end: int) -> Text:
        out = Text()
        pos = 0
        for text, style in self.parts:
            stop = pos + len(text)
            if stop > start and pos < end:
                out.parts.append((text[max(0, start - pos) : end - pos], style))
            pos = stop
            if pos >= end:
                break
        return out

    def split_lines(self) -> list[Text]:
        """The text's lines (``\\n`` removed), blank ones kept."""
        plain = self.plain
        lines: list[Text] = []
        start = 0
        while True:
            end = plain.find("\n", start)
            if end < 0:
                lines.append(self._slice(start, len(plain)))
                return lines
            lines.append(self._slice(start, end))
            start = end + 1

    def wrap(self, width: int, *, overflow: str = "fold", no_wrap: bool = False) -> list[Text]:
        """Lines of at most ``width`` cells: wrapped between words, a longer word folded
        (``overflow="fold"``), or one line cut with ``…`` (``no_wrap``, ``overflow="ellipsis"``).
        Spaces after the last word of a line stay, as far as they fit. No room (``width``
        below 1): no lines."""
        if width < 1:
            return []
        out: list[Text] = []
        for line in self.split_lines():
            if no_wrap:
                pieces = [line]
            else:
                plain = line.plain
                offsets = [0, *_break_offsets(plain, width, overflow == "fold"), len(plain)]
                pieces = [line._slice(a, b) for a, b in itertools.pairwise(offsets)]
                pieces = [_rstrip_beyond(piece, width) for piece in pieces] or [Text()]
            out.extend(_truncate(piece, width, overflow) for piece in pieces)
        return out


def _rstrip_beyond(line: Text, width: int) -> Text:
    """``line`` without the trailing whitespace that goes past ``width`` cells."""
    plain = line.plain
    excess = cell_len(plain) - width
    if excess <= 0:
        return line
    trailing = len(plain) - len(plain.rstrip())
    if not trailing:
        return line
    return line._slice(0, len(plain) - min(trailing, excess))


def _truncate(line: Text, width: int, overflow: str, *, pad: bool = False) -> Text:
    """``line`` cut to ``width`` cells (with ``…`` for ``overflow="ellipsis"``); padded with
    spaces to ``width`` when ``pad``."""
    plain = line.plain
    size = cell_len(plain)
    if size > width:
        keep = width - 1 if overflow == "ellipsis" else width
        cut = Text()
        used = 0
        for text, style in line.parts:
            room = keep - used
            if room <= 0:
                break
            piece = text if cell_len(text) <= room else set_cell_size(text, room)
            cut.parts.append((piece, style))
            used += cell_len(piece)
        if used < keep:
            cut.append(" " * (keep - used))
        if overflow == "ellipsis" and width > 0:
            cut.append("…", line.parts[-1][1] if line.parts else "")
        return cut
    if pad and size < width:
        return Text().append_text(line).append(" " * (width - size))
    return line


# -- a table --------------------------------------------------------------------------------------


class Column:
    """One column of :func:`table`: a fixed ``width`` (cells) or the width of its content,
    ``min_width`` at least; content wrapped (``fold``), or on one line cut with ``…``."""

    __slots__ = ("header", "justify", "min_width", "no_wrap", "overflow", "width")

    def __init__(
        self,
        header: str,
        *,
        width: int | None = None,
        min_width: int | None = None,
        no_wrap: bool = False,
        overflow: str = "ellipsis",
        justify: str = "left",
    ) -> None:
        self.header = header
        self.width = width
        self.min_width = min_width
        self.no_wrap = no_wrap
        self.overflow = overflow
        self.justify = justify


def table(
    columns: Sequence[Column], rows: Sequence[Sequence[Text]], width: int, *, header_style: str
) -> list[Text]:
    """Rows under a header row, columns two spaces apart, in at most ``width`` cells.

    Each cell's lines are padded to its column's width; a row is as tall as its tallest cell
    (the header's cells sit at the bottom of the header row, the others at the top).
    """
    count = len(columns)
    pads = [(0 if i == 0 else 1, 0 if i == count - 1 else 1) for i in range(count)]
    widths: list[int] = []
    for i, column in enumerate(columns):
        pad = sum(pads[i])
        if column.width is not None:
            widths.append(min(column.width + pad, width))
            continue
        texts = [Text(column.header), *(row[i] for row in rows)]
        longest = max(
            max((cell_len(line.plain) for line in c.split_lines()), default=0) for c in texts
        )
        need = min(longest + pad, width)
        if column.min_width is not None:
            need = max(need, column.min_width + pad)
        widths.append(need)
    if sum(widths) > width:
        # Too narrow for the columns: cut them all evenly, except that a column never gets
        # below its minimum (the lines are then cropped at the screen's edge).
        widths = _ratio_reduce(sum(widths) - width, widths)
        for i, column in enumerate(columns):
            if column.width is None and column.min_width is not None:
                widths[i] = max(widths[i], column.min_width + sum(pads[i]))
    out: list[Text] = []
    header = [Text(column.header, header_style) for column in columns]
    for r, row in enumerate([header, *rows]):
        cells: list[list[Text]] = []
        for i, column in enumerate(columns):
            left, right = pads[i]
            inner = max(0, widths[i] - left - right)
            lines = row[i].wrap(inner, overflow=column.overflow, no_wrap=column.no_wrap)
            style = header_style if r == 0 else ""
            cells.append(
                [
                    Text(" " * left, style)
                    .append_text(_justify(line, inner, column.justify, style))
                    .append(" " * right, style)
                    for line in lines
                ]
            )
        height = max(len(c) for c in cells)
        for i, c in enumerate(cells):
            blank = Text(" " * widths[i])
            fill = [blank] * (height - len(c))
            cells[i] = [*fill, *c] if r == 0 else [*c, *fill]
        for n in range(height):
            line = Text()
            for c in cells:
                line.append_text(c[n])
            out.append(line)
    return out


def _justify(line: Text, width: int, how: str, style: str) -> Text:
    size = cell_len(line.plain)
    if size >= width:
        return _truncate(line, width, "crop")
    if how == "right":
        return Text(" " * (width - size), style).append_text(line)
    return Text().append_text(line).append(" " * (width - size), style)


def _ratio_reduce(excess: int, widths: list[int]) -> list[int]:
    """``widths`` reduced by ``excess`` in all, shared out evenly (as rich does)."""
    out: list[int] = []
    remaining, shares = excess, sum(1 for w in widths if w)
    for w in widths:
        if not w:
            out.append(w)
            continue
        cut = min(w, round(remaining / shares))
        out.append(w - cut)
        remaining -= cut
        shares -= 1
    return out


# -- a tree ---------------------------------------------------------------------------------------


class Tree:
    """A label with child trees, drawn with guide lines (``├──``, ``└──``, ``│``)."""

    __slots__ = ("children", "guide_style", "label")

    def __init__(self, label: Text, *, guide_style: str = "") -> None:
        self.label = label
        self.guide_style = guide_style
        self.children: list[Tree] = []

    def add(self, label: Text) -> Tree:
        """A new child of this tree, drawn below the earlier ones; returns the child."""
        child = Tree(label, guide_style=self.guide_style)
        self.children.append(child)
        return child

    def lines(self, width: int, *, ascii_only: bool = False) -> list[Text]:
        """The tree drawn in ``width`` cells: each label wrapped in what its guides leave."""
        guides = ASCII_GUIDES if ascii_only else GUIDES
        out: list[Text] = []
        # (node, guide pieces before it); an explicit stack, children pushed last-first.
        stack: list[tuple[Tree, tuple[int, ...]]] = [(self, ())]
        while stack:
            node, prefix = stack.pop()
            indent = 4 * len(prefix)
            # No room left for the label: it is not drawn (its guides neither), as in rich.
            label = node.label.wrap(width - indent) if width > indent else []
            for n, line in enumerate(label):
                drawn = Text()
                for k, guide in enumerate(prefix):
                    if n and k == len(prefix) - 1:
                        guide = _SPACE if guide == _END else _CONTINUE if guide == _FORK else guide
                    drawn.append(guides[guide], self.guide_style)
                out.append(drawn.append_text(_truncate(line, width - indent, "crop")))
            if node.children:
                above = tuple(
                    _SPACE if g == _END else _CONTINUE if g == _FORK else g for g in prefix
                )
                last = len(node.children) - 1
                for i in range(last, -1, -1):
                    stack.append((node.children[i], (*above, _END if i == last else _FORK)))
        return out


# -- the terminal ---------------------------------------------------------------------------------


class Terminal:
    """Where lines go: stdout by default, its width, and whether it takes colour codes.

    Like rich: ``TTY_COMPATIBLE=0/1`` and ``FORCE_COLOR`` (non-empty) override whether the
    stream is a terminal; ``TERM=dumb`` gets no codes at all; ``NO_COLOR`` drops the colours
    but keeps bold and dim. On a terminal the width is ``COLUMNS`` or the terminal's size;
    elsewhere ``COLUMNS`` or ``PIPE_WIDTH``.
    """

    __slots__ = ("ascii_only", "colour", "file", "styles", "width")

    def __init__(self, stream: TextIO | None = None) -> None:
        out = stream if stream is not None else sys.stdout
        env = os.environ
        self.file = out
        tty = _isatty(out)
        compatible = env.get("TTY_COMPATIBLE", "")
        force = env.get("FORCE_COLOR")
        if compatible in ("0", "1"):
            terminal = compatible == "1"
        elif force is not None:
            terminal = force != ""
        else:
            terminal = tty
        dumb = env.get("TERM", "").lower() in ("dumb", "unknown")
        self.styles = terminal and not dumb
        self.colour = self.styles and env.get("NO_COLOR", "") == ""
        encoding = (getattr(out, "encoding", None) or "utf-8").lower()
        self.ascii_only = not encoding.startswith("utf")
        self.width = _width(tty, terminal and dumb, env.get("COLUMNS", ""))

    def print(self, lines: Iterable[Text]) -> None:
        """Write ``lines``, each cut to the width and ended with a newline."""
        self.write(
            "".join(self.render(_truncate(line, self.width, "crop")) + "\n" for line in lines)
        )

    def print_wrapped(self, text: Text, *, soft_wrap: bool = False) -> None:
        """Write ``text`` wrapped to the width (``soft_wrap``: as it is, the terminal wraps)."""
        if soft_wrap:
            self.write("".join(self.render(line) + "\n" for line in text.split_lines()))
        else:
            self.print(text.wrap(self.width))

    def render(self, line: Text) -> str:
        """``line`` with the SGR codes of its styles (none when the terminal takes none)."""
        if not self.styles:
            return line.plain
        out: list[str] = []
        for text, style in _merged(line.parts):
            codes = self._codes(style)
            out.append(f"\x1b[{codes}m{text}\x1b[0m" if codes else text)
        return "".join(out)

    def _codes(self, style: str) -> str:
        words = style.split()
        codes = [_SGR_ATTRIBUTES[w] for w in _SGR_ATTRIBUTES if w in words]
        if self.colour:
            codes += [_SGR_COLOURS[w] for w in words if w in _SGR_COLOURS][-1:]
        return ";".join(codes)

    def write(self, text: str) -> None:
        """Write ``text`` as it is (characters the stream cannot encode as escapes), flushed:
        a reader that went away (``spanflow runs | head``) is noticed here, not at exit."""
        try:
            self.file.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self.file, "encoding", None) or "utf-8"
            self.file.write(text.encode(encoding, "backslashreplace").decode(encoding))
        self.file.flush()


def _merged(parts: Iterable[Part]) -> list[Part]:
    out: list[Part] = []
    for text, style in parts:
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + text, style)
        elif text:
            out.append((text, style))
    return out


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _width(tty: bool, dumb_terminal: bool, columns: str) -> int:
    if dumb_terminal:
        return DUMB_WIDTH
    if not tty:
        try:
            width = int(columns)
        except ValueError:
            return PIPE_WIDTH
        return width if width >= 20 else PIPE_WIDTH
    if columns.isdigit():
        return int(columns) or DUMB_WIDTH
    for fd in (0, 1, 2):
        try:
            size = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        return size or DUMB_WIDTH
    return DUMB_WIDTH
