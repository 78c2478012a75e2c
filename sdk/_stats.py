"""Counters of telemetry problems and work done, read by ``spanflow.stats()``.

Telemetry never raises into the application; every module that swallows a failure counts it
here instead. The lowest layer of the SDK: it imports nothing of spanflow.
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["count", "reset", "snapshot"]

_counters: Counter[str] = Counter()
_lock = threading.Lock()


def count(name: str, n: int = 1) -> None:
    """Count a telemetry problem (or event) readable from ``spanflow.stats()``."""
    with _lock:
        _counters[name] += n


def snapshot() -> dict[str, int]:
    """The counters as they are now."""
    with _lock:
        return dict(_counters)


def reset() -> None:
    """Forget every count (tests start from zero)."""
    with _lock:
        _counters.clear()
