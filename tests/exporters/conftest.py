"""Fixtures for the store tests: a real TracerProvider writing through SQLiteSpanProcessor into a
real SQLite file under tmp_path. Spans get their spanflow attributes by hand, as the decorators
would set them, so these tests depend on nothing in the SDK but the attribute names."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from spanflow.attributes import RUN_ID, STEP_NAME, STEP_TYPE, STEP_TYPE_STEP, STEP_TYPE_WORKFLOW
from spanflow.exporters.sqlite_store import SQLiteSpanProcessor


class PrefixIds(IdGenerator):
    """Trace ids that start with a chosen hex prefix (to test prefix lookups)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        rest = 32 - len(self.prefix)
        return int(self.prefix + f"{random.getrandbits(rest * 4):0{rest}x}", 16)


class Recorder:
    """A provider + processor pair writing to ``path``; ``run()`` opens a spanflow run."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.path = path
        id_generator = options.pop("id_generator", None)
        resource = Resource.create({"service.name": options.pop("service", "tests")})
        self.processor = SQLiteSpanProcessor(path, **options)
        self.provider = TracerProvider(resource=resource, id_generator=id_generator)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests")

    @contextlib.contextmanager
    def run(
        self, name: str = "pipeline", *, kind: str = STEP_TYPE_WORKFLOW, **attrs: Any
    ) -> Iterator[trace.Span]:
        """A root span carrying the run attributes, set right after start as the SDK does."""
        with self.tracer.start_as_current_span(name, context=Context()) as span:
            span.set_attributes(
                {RUN_ID: run_id_of(span), STEP_NAME: name, STEP_TYPE: kind, **attrs}
            )
            yield span

    @contextlib.contextmanager
    def step(self, name: str, **attrs: Any) -> Iterator[trace.Span]:
        """A step span inside the current run."""
        with self.tracer.start_as_current_span(name) as span:
            run = trace.get_current_span()
            span.set_attributes(
                {
                    RUN_ID: run_id_of(run),
                    STEP_NAME: name,
                    STEP_TYPE: STEP_TYPE_STEP,
                    **attrs,
                }
            )
            yield span

    def flush(self) -> None:
        assert self.processor.force_flush(10_000)

    def close(self) -> None:
        self.provider.shutdown()


def run_id_of(span: trace.Span) -> str:
    return f"{span.get_span_context().trace_id:032x}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where the store under test lives (not created yet)."""
    return tmp_path / "store" / "traces.db"


@pytest.fixture
def recorder_factory(db: Path) -> Iterator[Callable[..., Recorder]]:
    """Make recorders (all shut down at teardown); the first argument defaults to ``db``."""
    made: list[Recorder] = []

    def make(path: Path | None = None, **options: Any) -> Recorder:
        rec = Recorder(path or db, **options)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.close()


@pytest.fixture
def recorder(recorder_factory: Callable[..., Recorder]) -> Recorder:
    """One recorder writing to ``db``."""
    return recorder_factory()


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Read the store behind the API's back.

    ``mode=rw``: never creates the file, and as the last connection it removes the -wal/-shm
    files on close, which a ``mode=ro`` connection would leave behind.
    """
    with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True)) as c:
        return c.execute(sql, params).fetchall()


def snapshot(directory: Path) -> dict[str, str]:
    """File name -> sha256 of every file in a directory (to prove nothing changed)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def child_env() -> dict[str, str]:
    """Environment for subprocesses that must import the same spanflow as this process."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
