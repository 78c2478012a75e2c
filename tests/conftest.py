"""Shared fixtures: every test gets its own TracerProvider, in-memory exporter and store path."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import spanflow
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from spanflow import attributes as attr
from spanflow import runtime

pytest_plugins = ["pytester"]  # tests/sdk/test_pytest_plugin.py runs pytest on tiny projects

# A shell starts background jobs with SIGINT ignored, and child processes inherit that. The tests
# that stop a spanflow process as Ctrl-C does need the disposition a terminal gives it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _no_default_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # A test that forgets to configure must not write ./.spanflow in the checkout.
    os.environ["SPANFLOW_DB"] = str(tmp_path_factory.mktemp("default-store") / "traces.db")
    yield


class Recorded:
    """The finished spans of one test, with helpers to find them by name."""

    def __init__(self, exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
        self.exporter = exporter
        self.provider = provider

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans]}"
        return found[0]

    def attr(self, name: str, key: str) -> Any:
        value = self.one(name).attributes
        assert value is not None
        return value.get(key)

    def json(self, name: str, key: str) -> Any:
        raw = self.attr(name, key)
        assert isinstance(raw, str), f"{name}.{key} = {raw!r}"
        return json.loads(raw)

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [
            s
            for s in self.spans
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]

    def clear(self) -> None:
        self.exporter.clear()


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Recorded]:
    """spanflow configured on a private provider with an in-memory exporter (store off)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spanflow.configure(tracer_provider=provider, db=False)
    yield Recorded(exporter, provider)
    runtime.reset_for_tests()
    provider.shutdown()


@pytest.fixture
def recorded_with_store(tmp_path: Path) -> Iterator[tuple[Recorded, Path]]:
    """Like ``recorded`` but also writing the SQLite store at a tmp path."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    db = tmp_path / "traces.db"
    spanflow.configure(tracer_provider=provider, db=db)
    yield Recorded(exporter, provider), db
    runtime.reset_for_tests()
    provider.shutdown()


__all__ = ["Recorded", "attr"]
