"""Configuration, zero-config behaviour and the rule that telemetry never breaks the app."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import spanflow
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from spanflow import runtime

from tests.conftest import Recorded


def run_script(
    tmp_path: Path, body: str, env: dict[str, str] | None = None, name: str = "app.py"
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / name
    script.write_text(textwrap.dedent(body))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPANFLOW_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def rows(db: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_zero_config_stores_in_dot_spanflow(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path,
        """
        import spanflow

        @spanflow.step
        def double(x: int) -> int:
            return 2 * x

        @spanflow.workflow
        def pipeline(x: int) -> int:
            return double(x)

        print(pipeline(21))
    """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "42"
    db = tmp_path / ".spanflow" / "traces.db"
    assert rows(db, "select workflow, status, service from runs") == [("pipeline", "ok", "app")]
    assert rows(db, "select count(*) from spans") == [(2,)]


@pytest.mark.parametrize("flag", ["SPANFLOW_DISABLED=1", "OTEL_SDK_DISABLED=true"])
def test_disabled_by_environment(tmp_path: Path, flag: str) -> None:
    key, value = flag.split("=")
    proc = run_script(
        tmp_path,
        """
        import spanflow

        @spanflow.workflow
        def pipeline() -> str:
            return "ran"

        print(pipeline())
    """,
        env={key: value},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ran"
    assert not (tmp_path / ".spanflow").exists()


def test_existing_provider_is_kept_and_still_gets_spans(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path,
        """
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import spanflow

        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "my-app"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        @spanflow.workflow
        def pipeline() -> int:
            return 1

        pipeline()
        assert trace.get_tracer_provider() is provider
        print(len(exporter.get_finished_spans()))
    """,
        env={"SPANFLOW_DB": str(tmp_path / "t.db")},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    assert rows(tmp_path / "t.db", "select service from runs") == [("my-app",)]


def test_reconfiguring_swaps_what_one_processor_forwards_to(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    @spanflow.workflow
    def pipeline(i: int) -> int:
        return i

    try:
        stores: list[Path | bool] = [tmp_path / "a.db", tmp_path / "b.db", False, tmp_path / "a.db"]
        for i, db in enumerate(stores):
            spanflow.configure(tracer_provider=provider, db=db)
            pipeline(i)
            spanflow.flush()
    finally:
        runtime.reset_for_tests()
    # Each run went to the store configured at its time, and to the application's exporter.
    assert rows(tmp_path / "a.db", "select count(*) from runs") == [(2,)]
    assert rows(tmp_path / "b.db", "select count(*) from runs") == [(1,)]
    assert len(exporter.get_finished_spans()) == 4
    ours = [p for p in provider._active_span_processor._span_processors if p is not None]
    assert len(ours) == 2  # the exporter's and spanflow's one forwarding processor


def test_service_name_from_otel_environment(tmp_path: Path) -> None:
    body = """
        import spanflow
        from opentelemetry import trace

        @spanflow.step
        def one() -> int:
            return 1

        one()
        print(trace.get_tracer_provider().resource.attributes["service.name"])
    """
    proc = run_script(
        tmp_path,
        body,
        env={"OTEL_SERVICE_NAME": "support-bot", "SPANFLOW_DB": str(tmp_path / "a.db")},
    )
    assert proc.stdout.strip() == "support-bot", proc.stderr
    proc = run_script(
        tmp_path,
        body,
        env={
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,team=ml",
            "SPANFLOW_DB": str(tmp_path / "b.db"),
        },
    )
    assert proc.stdout.strip() == "from-attrs", proc.stderr
    proc = run_script(
        tmp_path, body, env={"SPANFLOW_DB": str(tmp_path / "c.db")}, name="ticket_router.py"
    )
    assert proc.stdout.strip() == "ticket_router", proc.stderr


def test_configuration_mistakes_raise_at_once() -> None:
    with pytest.raises(spanflow.ConfigurationError, match="capture"):
        spanflow.configure(capture="some")  # type: ignore[arg-type]
    with pytest.raises(spanflow.ConfigurationError, match="max_value_bytes"):
        spanflow.configure(max_value_bytes=3)
    with pytest.raises(spanflow.ConfigurationError, match="otlp_protocol"):
        spanflow.configure(otlp_protocol="udp")  # type: ignore[arg-type]
    with pytest.raises(spanflow.ConfigurationError, match="redact"):
        spanflow.configure(redact_patterns=["(unclosed"])
    with pytest.raises(spanflow.ConfigurationError, match="log_level"):
        spanflow.configure(log_level="LOUD")


def test_not_a_store_is_left_untouched_and_the_app_runs(tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    conn = sqlite3.connect(other)
    conn.execute("create table notes(body text)")
    conn.execute("insert into notes values ('mine')")
    conn.commit()
    conn.close()
    before = hashlib.sha256(other.read_bytes()).hexdigest()
    proc = run_script(
        tmp_path,
        """
        import spanflow

        @spanflow.workflow
        def pipeline() -> str:
            return "still works"

        print(pipeline())
        spanflow.flush()
        print(spanflow.stats().get("store.write_errors", 0) + spanflow.stats().get("store.spans_dropped", 0) >= 0)
    """,
        env={"SPANFLOW_DB": str(other)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "still works"
    assert "not a spanflow store" in proc.stderr
    assert hashlib.sha256(other.read_bytes()).hexdigest() == before
    assert not Path(str(other) + "-wal").exists()


class Hostile:
    """Every hook Python might call while recording it raises."""

    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq exploded")

    __hash__ = None  # type: ignore[assignment]


def test_unserialisable_and_huge_values_never_break_the_call(recorded: Recorded) -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    huge = "x" * 5_000_000

    @spanflow.step
    def take(a: Any, b: Any, c: Any) -> Any:
        return a

    hostile = Hostile()
    assert take(hostile, cyclic, huge) is hostile
    span = recorded.one("take")
    assert span.attributes is not None
    recorded_input = str(span.attributes["input.value"])
    assert len(recorded_input) < 10_000
    json.loads(recorded_input)
    assert "spanflow.lossy" in span.attributes


def test_public_api_is_complete_and_documented() -> None:
    public = {n for n in dir(spanflow) if not n.startswith("_")} - {"annotations", "TYPE_CHECKING"}
    modules = {n for n in public if type(getattr(spanflow, n)).__name__ == "module"}
    assert set(spanflow.__all__) - {"__version__"} == (public - modules) | {"attributes"}
    for name in spanflow.__all__:
        obj = getattr(spanflow, name)
        if callable(obj):
            assert obj.__doc__, f"spanflow.{name} has no docstring"


def test_reading_tools_do_not_load_the_recording_runtime() -> None:
    code = (
        "import sys, spanflow.viewer.cli, spanflow.exporters.store, spanflow.viewer.web;"
        "print(sorted(m for m in sys.modules if m.startswith(('spanflow.decorators',"
        " 'spanflow.runtime', 'spanflow.recording', 'spanflow.replayer', 'spanflow.distributed',"
        " 'spanflow.values', 'opentelemetry.sdk.trace'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unsupported_protocol_in_the_environment_does_not_stop_the_app(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path,
        """
        import spanflow

        @spanflow.step
        def add(a: int, b: int) -> int:
            return a + b

        print(add(1, 2), add(2, 3))
    """,
        env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "SPANFLOW_DB": str(tmp_path / "t.db")},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "5"]
    assert "not supported" in proc.stderr
    assert rows(tmp_path / "t.db", "select count(*) from runs") == [(2,)]


def test_an_empty_otlp_endpoint_turns_otlp_off_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    provider = TracerProvider()
    spanflow.configure(tracer_provider=provider, db=tmp_path / "t.db", otlp_endpoint="")
    try:
        assert runtime.get_runtime().otlp is None
        assert not any(k.startswith("otlp.") for k in spanflow.stats())
    finally:
        runtime.reset_for_tests()
        provider.shutdown()


def test_stats_report_the_otlp_exporter(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: every export fails at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = TracerProvider()
    spanflow.configure(
        tracer_provider=provider, db=False, otlp_endpoint=f"http://127.0.0.1:{port}", otlp_timeout=1
    )
    try:

        @spanflow.step
        def one() -> int:
            return 1

        one()
        spanflow.flush(timeout=2)
        stats = spanflow.stats()
        assert stats["otlp.export_errors"] >= 1
        assert stats["otlp.spans_failed"] >= 1
        assert stats["otlp.spans_exported"] == 0
    finally:
        runtime.reset_for_tests()
        provider.shutdown()
