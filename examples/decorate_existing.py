"""Add spanflow to code you cannot edit: wrap a library's functions at import time.

`difflib` and `statistics` stand in for a third-party package here. Wrapping replaces the
module attributes, so every caller that looks them up through the module is recorded; the
functions keep their names, signatures and behaviour.
"""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Callable
from types import ModuleType
from typing import Any

import spanflow


def instrument(module: ModuleType, names: list[str], *, kind: str = "tool") -> None:
    """Replace ``module.<name>`` by a recorded step, once."""
    for name in names:
        original: Callable[..., Any] = getattr(module, name)
        if hasattr(original, "__spanflow_spec__"):
            continue  # already wrapped
        setattr(module, name, spanflow.step(name=f"{module.__name__}.{name}", kind=kind)(original))


instrument(difflib, ["get_close_matches", "unified_diff"])
instrument(statistics, ["mean", "median"])


@spanflow.workflow
def triage(query: str, known_intents: list[str], latencies_ms: list[float]) -> dict[str, Any]:
    """Match a query to an intent and summarise latencies, using only library calls."""
    match = difflib.get_close_matches(query, known_intents, n=1, cutoff=0.3)
    return {
        "intent": match[0] if match else None,
        "mean_ms": statistics.mean(latencies_ms),
        "median_ms": statistics.median(latencies_ms),
    }


if __name__ == "__main__":
    print(triage("refnd", ["refund", "shipping", "password reset"], [120.0, 95.5, 310.2]))
    print("recorded; see it with: spanflow runs && spanflow show <run id>")
