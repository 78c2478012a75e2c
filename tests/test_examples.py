"""Every example runs offline, as a user would run it, and leaves its runs in the store."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("SPANFLOW_", "OTEL_", "SUPPORT_"))
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env={**clean, "SPANFLOW_DB": str(db), **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=db.parent,
    )


def runs(db: Path) -> list[Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "select workflow, status, error from runs order by started_ns"
        ).fetchall()
    finally:
        conn.close()


def test_support_pipeline_fails_then_works_when_fixed(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    first = run("support_pipeline.py", db)
    assert first.returncode == 1
    assert "IndexError" in first.stderr and "spanflow replay" in first.stderr
    fixed = run("support_pipeline.py", db, SUPPORT_FIXED="1")
    assert fixed.returncode == 0, fixed.stderr
    assert "'category': 'billing'" in fixed.stdout
    assert runs(db) == [
        ("support", "failed", "IndexError: list index out of range"),
        ("support", "ok", None),
    ]


def test_decorate_existing(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    proc = run("decorate_existing.py", db)
    assert proc.returncode == 0, proc.stderr
    assert "'intent': 'refund'" in proc.stdout
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    names = {n for (n,) in conn.execute("select name from spans")}
    conn.close()
    assert {"triage", "difflib.get_close_matches", "statistics.mean", "statistics.median"} <= names


def test_rag_parallel_degrades_the_slow_shard(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    proc = run("rag_parallel.py", db)
    assert proc.returncode == 0, proc.stderr
    assert "doc-0-0: about refunds" in proc.stdout
    assert runs(db) == [("rag", "ok", None)]


def test_to_jaeger_survives_a_dead_endpoint(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    db = tmp_path / "t.db"
    proc = run(
        "to_jaeger.py",
        db,
        SUPPORT_FIXED="1",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "'category': 'shipping'" in proc.stdout
    assert runs(db) == [("support", "ok", None)]


def test_demo_end_to_end(tmp_path: Path) -> None:
    """What `make demo` runs: fail, list, show, replay after the fix, fork with an edit."""
    db = tmp_path / "demo.db"
    proc = run("demo.py", db)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert (
        "$ " in out
        and "spanflow runs" in out
        and "spanflow show" in out
        and "spanflow replay" in out
    )
    assert "IndexError" in out
    assert "spanflow ui" in out
    statuses = [status for _, status, _ in runs(db)]
    assert statuses == ["failed", "ok", "ok"]  # the run, its replay after the fix, and a fork
