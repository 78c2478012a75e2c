"""What the ``spanflow`` command shows on a real terminal: hostile stored text, narrow screens."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import sqlite3
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
from spanflow import attributes as attr
from spanflow.exporters.records import EventRecord, SpanRecord
from spanflow.exporters.store import Store

from tests.viewer.test_cli import MS, T0, subprocess_env, write_store

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")

#: Clear screen, OSC 52 clipboard write, OSC 0 title, a raw one-byte CSI, bidi overrides, NUL,
#: DEL, carriage return, and C1/line-separator code points.
HOSTILE = (
    "\x1b[2J\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x9b31m\u202eevil\u2066x\u2069\u200f"
    "\u061c\x00\x7f\r\x85\u2028end"
)
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
SGR = re.compile(r"\x1b\[[0-9;]*m")
HOSTILE_RUN = "e" * 32


def hostile_spans(run_id: str = HOSTILE_RUN) -> list[SpanRecord]:
    """A failed run with the hostile text in every field ``show`` and ``runs`` print."""
    h = HOSTILE
    root = SpanRecord(
        run_id=run_id,
        span_id="1" * 16,
        name="wf" + h,
        status="ERROR",
        status_message="boom" + h,
        start_ns=T0,
        end_ns=T0 + 10 * MS,
        attributes={
            attr.RUN_ID: run_id,
            attr.STEP_NAME: "workflow" + h,
            attr.STEP_TYPE: "workflow" + h,
            attr.SPAN_KIND: "AGENT" + h,
            attr.REPLAY_OF: "f" * 31 + h,
            attr.WORKFLOW_ENTRYPOINT: "mod" + h + ":wf",
            attr.WORKFLOW_FILE: "/tmp/x" + h + ".py",
            attr.INPUT_VALUE: json.dumps({"q": h}, ensure_ascii=False),
            attr.OUTPUT_VALUE: "out" + h,
        },
        resource={"service.name": "svc" + h},
        events=[
            EventRecord(
                name=attr.EXCEPTION_EVENT,
                time_ns=T0 + MS,
                attributes={
                    attr.EXCEPTION_TYPE: "ValueError" + h,
                    attr.EXCEPTION_MESSAGE: "msg" + h,
                    attr.EXCEPTION_STACKTRACE: f'File "a{h}.py", line 1\n    raise x{h}\nValueError',
                },
            )
        ],
    )
    child = SpanRecord(
        run_id=run_id,
        span_id="2" * 16,
        parent_id="1" * 16,
        name="step" + h,
        start_ns=T0 + MS,
        end_ns=T0 + 2 * MS,
        attributes={
            attr.RUN_ID: run_id,
            attr.STEP_NAME: "step" + h,
            attr.STEP_TYPE: "step" + h,
            attr.SPAN_KIND: "LLM" + h,
            attr.STEP_ATTEMPTS: "3" + h,
            attr.STATE_DIFF: json.dumps([{"op": "add", "path": "/a" + h, "value": h}]),
            attr.ROUTE_BRANCH: "b" + h,
            attr.ROUTE_NAME: "r" + h,
            attr.ROUTE_REASON: "why" + h,
            attr.GEN_AI_REQUEST_MODEL: "gpt" + h,
            attr.OUTPUT_VALUE: "child" + h,
        },
        events=[
            EventRecord(
                name=attr.LOG_EVENT,
                time_ns=T0 + MS,
                attributes={
                    attr.LOG_LEVEL: "WARNING" + h,
                    attr.LOG_LOGGER: "lg" + h,
                    attr.LOG_MESSAGE: "log" + h,
                },
            ),
            EventRecord(name=attr.EXCEPTION_EVENT, time_ns=T0 + MS, attributes={"x": h}),
        ],
    )
    attempt = SpanRecord(
        run_id=run_id,
        span_id="3" * 16,
        parent_id="2" * 16,
        name="attempt" + h,
        start_ns=T0 + MS,
        end_ns=T0 + 2 * MS,
        attributes={
            attr.RUN_ID: run_id,
            attr.STEP_TYPE: attr.STEP_TYPE_ATTEMPT,
            attr.ATTEMPT_NUMBER: "1" + h,
        },
    )
    return [root, child, attempt]


def read_pty(args: list[str], env: dict[str, str], cwd: Path, columns: int) -> bytes:
    """What a program writes to a terminal ``columns`` wide (stdout and stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**env, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    with subprocess.Popen(args, stdout=slave, stderr=slave, env=env, cwd=cwd) as proc:
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
    os.close(master)
    return b"".join(chunks)


def cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "spanflow.viewer.cli", *map(str, args)]


def assert_terminal_safe(raw: bytes) -> str:
    """The terminal got colour codes at most: no other escape, C1 or bidi control."""
    text = raw.decode("utf-8")  # a raw 0x9b byte would not even decode
    plain = SGR.sub("", text).replace("\r\n", "\n")
    found = sorted({f"U+{ord(c):04X}" for c in UNSAFE.findall(plain)})
    assert not found, f"{found} reached the terminal:\n{plain}"
    return plain


@pytest.fixture
def hostile_db(tmp_path: Path) -> Path:
    return write_store(tmp_path / "hostile.db", hostile_spans())


@pytest.mark.parametrize("columns", [80, 200])
def test_show_and_runs_send_no_control_sequence_to_the_terminal(
    hostile_db: Path, tmp_path: Path, columns: int
) -> None:
    env = subprocess_env()
    shown = assert_terminal_safe(
        read_pty(cli("show", HOSTILE_RUN, "--db", hostile_db), env, tmp_path, columns)
    )
    if columns > 80:  # (at 80 columns the long escaped words are folded over lines)
        # Everything is still there, escaped so the reader sees what was planted.
        for needle in ("\\x1b[2J", "\\x1b]52;c;", "\\x9b31m", "\\u202eevil", "\\x00", "\\x7f"):
            assert needle in shown, needle
        for planted in ("workflow", "msg", "step", "LLM", "AGENT", "child", "log", "gpt", "/a"):
            assert re.search(re.escape(planted) + r"\\x1b\[2J", shown), planted
    listed = assert_terminal_safe(read_pty(cli("runs", "--db", hostile_db), env, tmp_path, columns))
    assert HOSTILE_RUN[:8] in listed and "\\x1b" in listed


def test_json_output_holds_no_raw_control_character(hostile_db: Path, tmp_path: Path) -> None:
    for args in (
        ["runs", "--json"],
        ["show", HOSTILE_RUN, "--json"],
        ["export", HOSTILE_RUN, "--format", "jaeger"],
        ["export", HOSTILE_RUN, "--format", "otlp-json"],
    ):
        done = subprocess.run(
            cli(*args, "--db", hostile_db),
            capture_output=True,
            env=subprocess_env(),
            cwd=tmp_path,
            timeout=60,
            check=True,
        )
        text = done.stdout.decode("utf-8")
        assert not UNSAFE.search(text.replace("\n", "")), args
        assert any(HOSTILE in s for s in strings(json.loads(text))), args


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(s for v in value.values() for s in strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_errors_from_a_hostile_store_are_escaped(hostile_db: Path, tmp_path: Path) -> None:
    # A run row that cannot be read: its (planted) status is echoed in the error line.
    with sqlite3.connect(hostile_db) as conn:
        conn.execute("UPDATE runs SET status = ?", ("ok" + HOSTILE,))
    conn.close()
    raw = read_pty(cli("show", HOSTILE_RUN, "--db", hostile_db), subprocess_env(), tmp_path, 80)
    plain = assert_terminal_safe(raw)
    assert plain.startswith("spanflow: error: ") and "Traceback" not in plain
    assert plain.count("\n") == 1, plain


def test_replay_refusal_of_a_hostile_lone_step_is_escaped(tmp_path: Path) -> None:
    run_id = "a" * 32
    lone: dict[str, Any] = {
        attr.RUN_ID: run_id,
        attr.STEP_NAME: "lone" + HOSTILE,
        attr.STEP_TYPE: attr.STEP_TYPE_STEP,
    }
    db = write_store(
        tmp_path / "lone.db",
        [
            SpanRecord(
                run_id=run_id,
                span_id="1" * 16,
                name="lone",
                start_ns=T0,
                end_ns=T0 + MS,
                attributes=lone,
            )
        ],
    )
    with Store.open(db) as store:
        assert store.get_run(run_id).workflow == "lone" + HOSTILE
    raw = read_pty(cli("replay", run_id, "--db", db), subprocess_env(), tmp_path, 80)
    plain = assert_terminal_safe(raw)
    assert plain.startswith("spanflow: error: "), plain


# -- narrow terminals ------------------------------------------------------------------------------

LONG_ERROR = "RuntimeError: " + "the upstream service answered with something unexpected " * 3


def width_store(tmp_path: Path) -> tuple[Path, list[str]]:
    """Runs with a long workflow name, a long error, and two ids sharing 13 characters."""
    ids = ["abcdef0123456" + "0" * 19, "abcdef0123456" + "1" * 19, "9" * 32]
    spans = []
    for i, run_id in enumerate(ids):
        spans.append(
            SpanRecord(
                run_id=run_id,
                span_id="1" * 16,
                name="w",
                status="ERROR" if i != 2 else "UNSET",
                status_message=LONG_ERROR if i != 2 else None,
                start_ns=T0 + i * MS,
                end_ns=T0 + i * MS + 1234 * MS,
                attributes={
                    attr.RUN_ID: run_id,
                    attr.STEP_NAME: ["summarise_support_tickets", "triage", "nightly_batch"][i],
                    attr.STEP_TYPE: attr.STEP_TYPE_WORKFLOW,
                },
            )
        )
    return write_store(tmp_path / "wide.db", spans), ids


@pytest.mark.parametrize("columns", [80, 120])
def test_runs_keeps_id_status_and_workflow_at_any_width(tmp_path: Path, columns: int) -> None:
    db, ids = width_store(tmp_path)
    raw = read_pty(cli("runs", "--db", db), subprocess_env(), tmp_path, columns)
    lines = assert_terminal_safe(raw).splitlines()
    assert all(len(line.rstrip()) <= columns for line in lines), lines
    assert lines[0].split()[:4] == ["run", "id", "workflow", "status"], lines
    by_id = {line.split()[0]: line for line in lines[1:] if line and not line.startswith(" ")}
    assert len(by_id) == 3, lines
    # The two runs that share 13 characters get prefixes that tell them apart.
    assert all(len(prefix) >= 8 for prefix in by_id), by_id
    for prefix, line in by_id.items():
        (run_id,) = [i for i in ids if i.startswith(prefix)]
        assert ("ok" if run_id == "9" * 32 else "failed") in line.split(), line
        assert "1.23 s" in line, line
        done = subprocess.run(
            cli("show", prefix, "--db", db), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and f"run {run_id}" in done.stdout, done.stderr
    text = "\n".join(lines)
    for workflow in ("triage", "nightly_batch"):
        assert workflow in text
    # A long workflow name is folded over lines, never dropped.
    assert (
        re.search(r"summarise_supp.*\n.*ort_tickets", text) or "summarise_support_tickets" in text
    )
    assert "RuntimeError:" in text and "…" in text  # the error was shortened, not the keys


@pytest.mark.parametrize("columns", [80, 120])
def test_show_keeps_names_durations_and_status_at_any_width(tmp_path: Path, columns: int) -> None:
    run_id = "b" * 32
    spans = [
        SpanRecord(
            run_id=run_id,
            span_id="1" * 16,
            name="w",
            start_ns=T0,
            end_ns=T0 + 50 * MS,
            attributes={
                attr.RUN_ID: run_id,
                attr.STEP_NAME: "pipeline",
                attr.STEP_TYPE: attr.STEP_TYPE_WORKFLOW,
            },
        )
    ]
    parent = "1" * 16
    for depth in range(16):
        span_id = f"{depth + 0x100:016x}"
        spans.append(
            SpanRecord(
                run_id=run_id,
                span_id=span_id,
                parent_id=parent,
                name=f"s{depth}",
                status="ERROR" if depth == 15 else "UNSET",
                status_message="failed deep down" if depth == 15 else None,
                start_ns=T0 + depth * MS,
                end_ns=T0 + depth * MS + 1234 * MS,
                attributes={
                    attr.RUN_ID: run_id,
                    attr.STEP_NAME: f"retrieve_documents_level{depth}",
                    attr.STEP_TYPE: attr.STEP_TYPE_STEP,
                    attr.SPAN_KIND: "RETRIEVER",
                    attr.OUTPUT_VALUE: json.dumps(["a long document " * 20]),
                },
            )
        )
        parent = span_id
    db = write_store(tmp_path / "deep.db", spans)
    raw = read_pty(cli("show", run_id, "--db", db), subprocess_env(), tmp_path, columns)
    plain = assert_terminal_safe(raw)
    lines = plain.splitlines()
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    for depth in range(16):
        (title,) = [line for line in lines if f"retrieve_documents_level{depth} " in line]
        # The name is whole and the duration and status follow on the same line.
        assert re.search(rf"level{depth} .*1\.23 s +{'ERROR' if depth == 15 else 'ok'}", title), (
            title
        )
    assert "a long document" in plain and "failed deep down" in plain
