"""OTLP export to a real receiver (Arize Phoenix), from real processes.

Each test runs a small script in a fresh interpreter so spanflow sets up the global provider,
the store and the exporter exactly as in an application, and flushes at exit.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from spanflow import attributes as attr
from spanflow.exporters import schema

from tests.phoenix_server import (
    Phoenix,
    find_executable,
    free_port,
    running,
    services_required,
    unavailable_reason,
)

SCRIPT_TIMEOUT_S = 60.0

# A workflow with a step that works, a step that fails (caught) and a secret argument.
WORKFLOW = """
import json
import sys

import spanflow

{setup}

@spanflow.step
def retrieve(query: str, api_key: str) -> list[str]:
    return [f"doc about {{query}}"]


@spanflow.step
def rerank(docs: list[str]) -> list[str]:
    raise RuntimeError("reranker unavailable")


@spanflow.workflow
def answer(query: str, api_key: str) -> dict[str, str | None]:
    docs = retrieve(query, api_key=api_key)
    try:
        docs = rerank(docs)
    except RuntimeError:
        pass
    return {{"answer": docs[0], "run": spanflow.current_run_id()}}


print(json.dumps(answer("otlp", api_key=sys.argv[1])))
"""

MANY_STEPS = """
import spanflow

{setup}

@spanflow.step
def double(x: int) -> int:
    return 2 * x


@spanflow.workflow
def batch(n: int) -> int:
    return sum(double(i) for i in range(n))


print("result", batch(20))
"""


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """One Phoenix server for the whole session, stopped at its end."""
    executable = find_executable()
    if executable is None:
        reason = unavailable_reason()
        if services_required():
            pytest.fail(reason)
        pytest.skip(reason)
    with running(executable, tmp_path_factory.mktemp("phoenix")) as server:
        yield server


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANFLOW_"))}
    env.update(extra)
    return env


def _run_script(
    tmp_path: Path, source: str, args: list[str], env: Mapping[str, str]
) -> tuple[subprocess.CompletedProcess[str], float]:
    script = tmp_path / "app.py"
    script.write_text(source)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done, elapsed


def _run_workflow(tmp_path: Path, setup: str, env: Mapping[str, str]) -> tuple[str, str, Path]:
    """Run the workflow script; (run id, the secret it was given, its store path)."""
    secret = f"hunter2-{uuid.uuid4().hex}"
    db = tmp_path / "traces.db"
    done, _ = _run_script(
        tmp_path,
        WORKFLOW.format(setup=setup),
        [secret],
        _clean_env(SPANFLOW_DB=str(db), **env),
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["answer"] == "doc about otlp"
    run_id = result["run"]
    assert isinstance(run_id, str) and len(run_id) == 32
    assert secret not in done.stderr
    return run_id, secret, db


def _check_phoenix_spans(phoenix: Phoenix, project: str, run_id: str, secret: str) -> None:
    spans, raw = phoenix.spans(project, expect=3)
    by_name = {span["name"]: span for span in spans}
    assert sorted(by_name) == ["answer", "rerank", "retrieve"], spans
    root, ok, failed = by_name["answer"], by_name["retrieve"], by_name["rerank"]

    for span in spans:
        assert span["context"]["trace_id"] == run_id
        assert span["attributes"][attr.RUN_ID] == run_id
        assert span["span_kind"] == "CHAIN"  # openinference.span.kind
    root_id = root["context"]["span_id"]
    assert root["parent_id"] is None
    assert ok["parent_id"] == root_id and failed["parent_id"] == root_id

    assert root["status_code"] != "ERROR" and ok["status_code"] != "ERROR"
    assert failed["status_code"] == "ERROR"
    assert "reranker unavailable" in failed["status_message"]
    (exception,) = [e for e in failed["events"] if e["name"] == attr.EXCEPTION_EVENT]
    assert exception["attributes"][attr.EXCEPTION_TYPE] == "RuntimeError"
    assert failed["attributes"][attr.ERROR_TYPE] == "RuntimeError"

    assert json.loads(ok["attributes"][attr.INPUT_VALUE])["query"] == "otlp"
    assert ok["attributes"][attr.INPUT_MIME_TYPE] == attr.JSON_MIME
    assert json.loads(ok["attributes"][attr.OUTPUT_VALUE]) == ["doc about otlp"]
    assert json.loads(failed["attributes"][attr.INPUT_VALUE]) == {"docs": ["doc about otlp"]}
    assert json.loads(root["attributes"][attr.OUTPUT_VALUE])["answer"] == "doc about otlp"
    assert root["attributes"][attr.STEP_TYPE] == attr.STEP_TYPE_WORKFLOW
    assert root["attributes"][attr.WORKFLOW_ENTRYPOINT] == "app:answer"
    # The secret was redacted before it left the process: nowhere in what Phoenix stored.
    assert json.loads(ok["attributes"][attr.INPUT_VALUE])["api_key"] != secret
    assert secret not in raw


def _stored_span_count(db: Path, run_id: str) -> tuple[str, int]:
    """(run status, span count) read straight from the SQLite file."""
    assert db.is_file(), f"no store at {db}"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute(
            f"SELECT r.{schema.RUN_STATUS}, count(s.{schema.SPAN_ID}) "
            f"FROM {schema.RUNS} r JOIN {schema.SPANS} s ON s.{schema.SPAN_RUN_PK} = r.{schema.RUN_PK} "
            f"WHERE r.{schema.RUN_ID} = ? GROUP BY r.{schema.RUN_PK}",
            (run_id,),
        ).fetchone()
    finally:
        conn.close()
    assert row is not None, f"run {run_id} is not in the store"
    return str(row[0]), int(row[1])


def _project() -> str:
    return f"spanflow-test-{uuid.uuid4().hex[:10]}"


@pytest.mark.phoenix
def test_http_protobuf_via_configure(phoenix: Phoenix, tmp_path: Path) -> None:
    project = _project()
    setup = f"spanflow.configure(otlp_endpoint={phoenix.base_url!r}, service_name={project!r})"
    run_id, secret, db = _run_workflow(tmp_path, setup, {})

    _check_phoenix_spans(phoenix, project, run_id, secret)
    assert _stored_span_count(db, run_id) == ("ok", 3)
    assert secret.encode() not in db.read_bytes()


@pytest.mark.phoenix
def test_standard_env_vars_alone(phoenix: Phoenix, tmp_path: Path) -> None:
    project = _project()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.base_url, "OTEL_SERVICE_NAME": project}
    run_id, secret, db = _run_workflow(tmp_path, "", env)

    _check_phoenix_spans(phoenix, project, run_id, secret)
    assert _stored_span_count(db, run_id) == ("ok", 3)


@pytest.mark.phoenix
def test_grpc(phoenix: Phoenix, tmp_path: Path) -> None:
    project = _project()
    setup = (
        f"spanflow.configure(otlp_endpoint={phoenix.grpc_endpoint!r}, otlp_protocol='grpc', "
        f"service_name={project!r})"
    )
    run_id, secret, db = _run_workflow(tmp_path, setup, {})

    _check_phoenix_spans(phoenix, project, run_id, secret)
    assert _stored_span_count(db, run_id) == ("ok", 3)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_dead_endpoint_costs_at_most_a_few_seconds(tmp_path: Path, protocol: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # bound, noted, closed: nobody listens there
    baseline_setup = "spanflow.configure()"
    dead_setup = f"spanflow.configure(otlp_endpoint={dead!r}, otlp_protocol={protocol!r})"
    env = _clean_env(SPANFLOW_DB=str(tmp_path / "traces.db"))

    base, base_s = _run_script(tmp_path, MANY_STEPS.format(setup=baseline_setup), [], env)
    done, dead_s = _run_script(tmp_path, MANY_STEPS.format(setup=dead_setup), [], env)

    expected = f"result {sum(2 * i for i in range(20))}"
    assert base.stdout.strip() == expected
    assert done.stdout.strip() == expected  # the app's own output, unharmed
    assert dead_s - base_s < 6.0, (
        f"dead endpoint cost {dead_s - base_s:.1f} s ({base_s:.1f} s base)"
    )
    conn = sqlite3.connect(f"file:{tmp_path / 'traces.db'}?mode=ro", uri=True)
    try:
        (runs,) = conn.execute(f"SELECT count(*) FROM {schema.RUNS}").fetchone()
    finally:
        conn.close()
    assert runs == 2  # the local store kept both runs regardless of the exporter


def test_a_server_that_dies_at_startup_fails_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "phoenix"
    fake.write_text("#!/bin/sh\necho 'address already in use' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError) as info, running(fake, tmp_path):
        pass
    message = str(info.value)
    assert "exited with code 3" in message and "address already in use" in message
