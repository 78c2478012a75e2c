"""A run's spans as a forest that is safe to walk, and which part of it to show.

A store may come from anywhere, so parent links can form cycles (A -> B -> A, a span that is
its own parent) and span ids can repeat. Spans are therefore identified by their position in
the list, never by id: every span is placed exactly once, each walk visits each position at
most once, and so every walk ends. Spans whose parent is missing, themselves, or inside a
cycle become top-level spans, each marked with the reason.

:func:`visible` then picks what a terminal can show of a huge run: long sibling lists keep
their first and last few spans and every span with a failure below it, the rest is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, NamedTuple, Protocol

#: Spans kept at the start and the end of a long list of siblings.
HEAD: Final = 8
TAIL: Final = 3
#: Failed siblings kept besides those, in start order.
FAILED: Final = 20
#: Spans drawn in all before the rest is only counted.
BUDGET: Final = 400

Why = Literal["", "orphan", "self-parent", "cycle"]


class Node(Protocol):
    """What the forest needs of a span (a ``SpanRecord`` or an :class:`Outline`)."""

    @property
    def span_id(self) -> str: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def start_ns(self) -> int: ...


class Outline(NamedTuple):
    """A span's place in the tree without its content (``Store.span_outline`` rows)."""

    row: int
    span_id: str
    parent_id: str | None
    status: str
    start_ns: int


class Forest:
    """Spans by position: who is on top, each span's children, subtree sizes and failures.

    (A plain class, not a dataclass: ``dataclasses`` costs ``spanflow show`` ~10 ms to import.)
    """

    __slots__ = ("children", "duplicates", "failing", "size", "spans", "tops", "why")

    def __init__(
        self,
        spans: Sequence[Node],
        tops: list[int],
        children: list[list[int]],
        why: dict[int, Why],
        size: list[int],
        failing: list[bool],
        duplicates: set[int],
    ) -> None:
        self.spans = spans
        self.tops = tops
        self.children = children
        #: Why a top-level span is not under its parent ("" for a real root).
        self.why = why
        #: Spans in the subtree of each span, itself included.
        self.size = size
        #: Whether the subtree of each span holds a failed span.
        self.failing = failing
        self.duplicates = duplicates


def build(spans: Sequence[Node]) -> Forest:
    """The forest of ``spans``; children and tops in start order."""
    n = len(spans)
    first: dict[str, int] = {}
    duplicates: set[int] = set()
    for i, s in enumerate(spans):
        if s.span_id in first:
            duplicates.add(i)
        else:
            first[s.span_id] = i
    graph_parent = [-1] * n
    why: dict[int, Why] = {}
    for i, s in enumerate(spans):
        if s.parent_id is None:
            why[i] = ""
            continue
        p = first.get(s.parent_id, -1)
        if p == -1:
            why[i] = "orphan"
        elif p == i or s.parent_id == s.span_id:
            why[i] = "self-parent"
        else:
            graph_parent[i] = p
    kids: list[list[int]] = [[] for _ in range(n)]
    for i, p in enumerate(graph_parent):
        if p != -1:
            kids[p].append(i)
    key = [(s.start_ns, s.span_id, i) for i, s in enumerate(spans)].__getitem__
    for k in kids:
        if len(k) > 1:
            k.sort(key=key)
    tops = sorted(why, key=key)
    # One walk from the tops; whatever it cannot reach hangs in a parent cycle.
    seen = bytearray(n)
    order: list[int] = []
    tree_parent = [-1] * n

    def walk(root: int) -> None:
        stack = [root]
        while stack:
            i = stack.pop()
            if seen[i]:
                continue
            seen[i] = 1
            order.append(i)
            for c in kids[i]:
                if not seen[c]:
                    tree_parent[c] = i
                    stack.append(c)

    for t in tops:
        walk(t)
    if len(order) < n:
        for i in sorted((i for i in range(n) if not seen[i]), key=key):
            if not seen[i]:
                why[i] = "cycle"
                tops.append(i)
                walk(i)
    children = [[c for c in kids[i] if tree_parent[c] == i] for i in range(n)]
    size = [1] * n
    failing = [s.status == "ERROR" for s in spans]
    for i in reversed(order):
        p = tree_parent[i]
        if p != -1:
            size[p] += size[i]
            failing[p] = failing[p] or failing[i]
    return Forest(spans, tops, children, why, size, failing, duplicates)


class Hidden(NamedTuple):
    """A run of siblings left out: how many spans (subtrees included), how many failed."""

    spans: int
    failed: int


def visible(forest: Forest, items: Sequence[int], everything: bool) -> list[int | Hidden]:
    """``items`` (siblings in start order) as shown: kept spans and the gaps between them."""
    if everything or len(items) <= HEAD + TAIL + FAILED:
        return list(items)
    keep = set(items[:HEAD]) | set(items[-TAIL:])
    failed = [i for i in items[HEAD:-TAIL] if forest.failing[i]]
    keep.update(failed[:FAILED])
    out: list[int | Hidden] = []
    gap = gap_failed = 0
    for i in items:
        if i in keep:
            if gap:
                out.append(Hidden(gap, gap_failed))
                gap = gap_failed = 0
            out.append(i)
        else:
            gap += forest.size[i]
            gap_failed += forest.failing[i]
    if gap:
        out.append(Hidden(gap, gap_failed))
    return out


class Entry(NamedTuple):
    """One line group of the drawn tree, in drawing order: a span, or spans left out."""

    depth: int
    span: int = -1
    hidden: Hidden | None = None
    #: Spans not drawn at all because the budget ran out (only on the last entry).
    undrawn: int = 0


def layout(forest: Forest, *, everything: bool = False, budget: int = BUDGET) -> list[Entry]:
    """What to draw, depth first: at most ``budget`` spans unless ``everything``."""
    total = len(forest.spans)
    limit = total if everything else budget
    out: list[Entry] = []
    drawn = 0
    stack: list[tuple[int | Hidden, int]] = [
        (item, 1) for item in reversed(visible(forest, forest.tops, everything))
    ]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Hidden):
            out.append(Entry(depth, hidden=item))
            continue
        if drawn >= limit:
            out.append(
                Entry(
                    1,
                    undrawn=total
                    - drawn
                    - sum(e.hidden.spans for e in out if e.hidden is not None),
                )
            )
            break
        drawn += 1
        out.append(Entry(depth, span=item))
        shown = visible(forest, forest.children[item], everything)
        stack.extend((kid, depth + 1) for kid in reversed(shown))
    return out


def needed(forest: Forest, entries: Sequence[Entry]) -> list[int]:
    """The spans whose records drawing ``entries`` reads: the drawn ones, the real roots (for
    the run header), and up to ``FAILED`` failed children of each drawn span (for errors)."""
    out = {i for i, why in forest.why.items() if why == ""}
    for e in entries:
        if e.span >= 0:
            out.add(e.span)
            failed = [k for k in forest.children[e.span] if forest.spans[k].status == "ERROR"]
            out.update(failed[:FAILED])
    return sorted(out)
