"""The span tree of one run as the viewer draws it, built so that any graph yields a tree.

A store can come from someone else, and an import can be damaged: a span may name itself as its
parent, parents may form a cycle (A -> B -> A), two spans may share an id. Every walk here visits
each span once, so it ends on any input. The page (``static/trace.js``) builds the same tree
from the order this module sends, and guards its own walks the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spanflow import attributes as attr
from spanflow.exporters.records import SpanData

__all__ = ["SpanTree", "build_tree"]


@dataclass(frozen=True)
class SpanTree:
    """A forest over ``spans``: every span placed once, parents before their children.

    Attributes:
        spans: the run's spans, in the store's order (by start time).
        ids: a unique id per span; a repeated span id gets a ``#2``, ``#3``... suffix.
        order: indices into ``spans``, depth first, siblings by start time.
        parent: the index each span is drawn under, or -1 for a root. It differs from the
            recorded parent only where that one is missing, the span itself, or closes a cycle.
        kids: for each span, the indices drawn directly under it, in order.
        position: for each span, its place in ``order``.
        failed: the index of the step to show first (see :func:`_pick_failed`), or None.
    """

    spans: Sequence[SpanData]
    ids: list[str]
    order: list[int]
    parent: list[int]
    kids: list[list[int]]
    position: list[int]
    failed: int | None

    def path_to(self, index: int) -> list[int]:
        """``index`` and its ancestors, root first."""
        path: list[int] = []
        seen: set[int] = set()
        i = index
        while i >= 0 and i not in seen:
            seen.add(i)
            path.append(i)
            i = self.parent[i]
        return path[::-1]


def build_tree(spans: Sequence[SpanData]) -> SpanTree:
    """Place every span of a run exactly once, whatever its parent links say."""
    ids: list[str] = []
    first: dict[str, int] = {}
    repeats: dict[str, int] = {}
    for i, span in enumerate(spans):
        if span.span_id in first:
            repeats[span.span_id] = repeats.get(span.span_id, 1) + 1
            ids.append(f"{span.span_id}#{repeats[span.span_id]}")
        else:
            first[span.span_id] = i
            ids.append(span.span_id)
    recorded = [first.get(s.parent_id, -1) if s.parent_id is not None else -1 for s in spans]
    kids: list[list[int]] = [[] for _ in spans]
    roots: list[int] = []
    for i, p in enumerate(recorded):
        if p < 0 or p == i:
            roots.append(i)
        else:
            kids[p].append(i)
    parent = [-1] * len(spans)
    placed = [False] * len(spans)
    order: list[int] = []

    def walk(start: int) -> None:
        # A span is in one list of children only, so within a walk it is pushed once.
        parent[start] = -1
        stack = [start]
        while stack:
            i = stack.pop()
            if placed[i]:
                continue
            placed[i] = True
            order.append(i)
            for c in reversed(kids[i]):
                if not placed[c]:
                    parent[c] = i
                    stack.append(c)

    for r in roots:
        walk(r)
    # What is left sits on a parent cycle: its first span (by start) becomes a root.
    for i in range(len(spans)):
        if not placed[i]:
            walk(i)
    placed_kids: list[list[int]] = [[] for _ in spans]
    for i in order:
        if parent[i] >= 0:
            placed_kids[parent[i]].append(i)
    tree_roots = [i for i in order if parent[i] < 0]
    failed = _pick_failed(spans, order, tree_roots, placed_kids)
    position = [0] * len(spans)
    for n, i in enumerate(order):
        position[i] = n
    return SpanTree(spans, ids, order, parent, placed_kids, position, failed)


def _pick_failed(
    spans: Sequence[SpanData], order: list[int], roots: list[int], kids: list[list[int]]
) -> int | None:
    """Follow the failure down from the failed root to the step that raised (as the page does)."""

    def error(i: int) -> bool:
        return spans[i].status == "ERROR"

    def attempt(i: int) -> bool:
        return spans[i].attributes.get(attr.STEP_TYPE) == attr.STEP_TYPE_ATTEMPT

    cur = next((r for r in roots if error(r)), None)
    if cur is None:
        return next((i for i in order if error(i) and not attempt(i)), None)
    seen = {cur}
    while True:
        nxt: int | None = None
        for c in kids[cur]:
            if not error(c):
                continue
            if not attempt(c):
                nxt = c
                continue
            for g in kids[c]:
                if error(g) and not attempt(g):
                    nxt = g
        if nxt is None or nxt in seen:
            return cur
        seen.add(nxt)
        cur = nxt
