"""``spanflow runs`` and ``spanflow show`` start fast: what they import, and how they draw.

The timing itself is a benchmark (``bench/bench_cli.py``, ``make bench``), not a test; here the
imports are checked (a heavy module loaded by the command is a failure) and the plain-text
renderer that replaced rich for these two commands is held to rich's layout rules and to the
terminal's width with wide (CJK) characters.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spanflow import attributes as attr
from spanflow.exporters.records import EventRecord, SpanRecord
from spanflow.viewer import plaintext

from tests.viewer.test_cli import MS, T0, subprocess_env, write_store

#: What ``runs`` and ``show`` must not load: each costs milliseconds to tens of them.
HEAVY = (
    "rich",
    "pydantic",
    "pydantic_core",
    "sqlite_utils",
    "importlib.metadata",
    "opentelemetry",
    "dataclasses",
    "inspect",
    "shutil",
    "tempfile",
    "spanflow.decorators",
    "spanflow.runtime",
    "spanflow.recording",
)
SGR = re.compile(r"\x1b\[[0-9;]*m")
PROBE = (sys.executable, "-X", "importtime", "-m", "spanflow.viewer.cli")
CJK_RUN = "c" * 32
CJK_WORKFLOW = "要約パイプライン_サポート_チケット"
CJK_ERROR = "エラー：上流サービスが予期しない応答を返しました " * 3


def cells(text: str) -> int:
    """Terminal cells of ``text``, measured independently of the code under test."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


@pytest.fixture
def cjk_db(tmp_path: Path) -> Path:
    root = SpanRecord(
        run_id=CJK_RUN,
        span_id="1" * 16,
        name="w",
        status="ERROR",
        status_message=CJK_ERROR,
        start_ns=T0,
        end_ns=T0 + 5 * MS,
        attributes={
            attr.RUN_ID: CJK_RUN,
            attr.STEP_NAME: CJK_WORKFLOW,
            attr.STEP_TYPE: attr.STEP_TYPE_WORKFLOW,
            attr.WORKFLOW_ENTRYPOINT: "app:summarise",
            attr.OUTPUT_VALUE: json.dumps(
                {"答え": "これは長い答えです。" * 12}, ensure_ascii=False
            ),
        },
        events=[
            EventRecord(
                name=attr.EXCEPTION_EVENT,
                time_ns=T0 + MS,
                attributes={
                    attr.EXCEPTION_TYPE: "ValueError",
                    attr.EXCEPTION_MESSAGE: "値が不正です。" * 8,
                },
            )
        ],
    )
    child = SpanRecord(
        run_id=CJK_RUN,
        span_id="2" * 16,
        parent_id="1" * 16,
        name="c",
        start_ns=T0 + MS,
        end_ns=T0 + 2 * MS,
        attributes={
            attr.RUN_ID: CJK_RUN,
            attr.STEP_NAME: "検索ステップ",
            attr.STEP_TYPE: attr.STEP_TYPE_STEP,
            attr.OUTPUT_VALUE: json.dumps(["文書 " * 40], ensure_ascii=False),
        },
    )
    other = SpanRecord(
        run_id="d" * 32,
        span_id="3" * 16,
        name="w",
        start_ns=T0 + 10 * MS,
        end_ns=T0 + 11 * MS,
        attributes={
            attr.RUN_ID: "d" * 32,
            attr.STEP_NAME: "nightly",
            attr.STEP_TYPE: attr.STEP_TYPE_WORKFLOW,
        },
    )
    return write_store(tmp_path / "cjk.db", [root, child, other])


def run_on_pty(args: list[str], env: dict[str, str], cwd: Path, columns: int) -> tuple[str, str]:
    """(what a terminal ``columns`` wide shows, stderr) of a program; stdout is the terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    with subprocess.Popen(
        args, stdout=slave, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True
    ) as proc:
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
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err
    os.close(master)
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n"), err


def imported(importtime: str) -> set[str]:
    """Module names from ``python -X importtime`` output."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime.splitlines()
        if line.startswith("import time:") and "|" in line
    } - {"package"}


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


@pytest.mark.parametrize(
    "argv",
    [
        ["runs"],
        ["runs", "--status", "failed", "--limit", "1"],
        ["show", CJK_RUN],
        ["show", CJK_RUN, "--all"],
    ],
)
@pytest.mark.parametrize("where", ["pipe", "terminal"])
def test_runs_and_show_load_no_heavy_module(
    cjk_db: Path, tmp_path: Path, argv: list[str], where: str
) -> None:
    args = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "spanflow.viewer.cli",
        *argv,
        "--db",
        str(cjk_db),
    ]
    env = subprocess_env(TERM="xterm-256color")
    if where == "pipe":
        done = subprocess.run(
            args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
        )
        assert done.returncode == 0, done.stderr
        out, err = done.stdout, done.stderr
    else:
        out, err = run_on_pty(args, env, tmp_path, 100)
        assert SGR.search(out)  # it did draw in colour
    assert CJK_RUN[:12] in out
    modules = imported(err)
    assert "spanflow.exporters.store" in modules  # the probe saw the command's imports
    assert heavy(modules) == set()


def test_the_console_script_loads_no_heavy_module(cjk_db: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("spanflow")
    if not script.exists():
        pytest.skip("spanflow is not installed as a console script beside this Python")
    for argv in (["runs"], ["show", CJK_RUN]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", str(script), *argv, "--db", str(cjk_db)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            cwd=tmp_path,
            timeout=60,
        )
        assert done.returncode == 0 and CJK_RUN[:12] in done.stdout, done.stderr
        assert heavy(imported(done.stderr)) == set(), argv


def test_other_commands_still_draw_with_rich(cjk_db: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [*PROBE, "diff", "cccc", "dddd", "--db", str(cjk_db)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "rich.console" in imported(done.stderr)


# -- wide characters on a real terminal --------------------------------------------------------------


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_runs_fits_the_terminal_with_cjk(cjk_db: Path, tmp_path: Path, columns: int) -> None:
    args = [sys.executable, "-m", "spanflow.viewer.cli", "runs", "--db", str(cjk_db)]
    shown, _ = run_on_pty(args, subprocess_env(TERM="xterm-256color"), tmp_path, columns)
    lines = SGR.sub("", shown).splitlines()
    assert all(cells(line) <= columns for line in lines), "\n".join(lines)
    row = next(line for line in lines if line.startswith(CJK_RUN[:12]))
    assert "failed" in row.split()  # the id and the status are whole, on the first line
    if columns >= 120:
        # The name needs 36 cells: at this width it has them, on one line.
        assert CJK_WORKFLOW in row
    else:
        # Folded over lines in its column (the id column and its gap take 14 cells).
        at = lines.index(row)
        rest = lines[at + 1 :]
        ends = next((n for n, line in enumerate(rest) if not line.startswith(" ")), len(rest))
        folded = "".join(line[14:].split(" ")[0] for line in [row, *rest[:ends]])
        assert folded.startswith(CJK_WORKFLOW), lines
    assert "Valu" in row and "…" in row  # the error is shortened, not the key columns


@pytest.mark.parametrize("columns", [50, 80])
def test_show_fits_the_terminal_with_cjk(cjk_db: Path, tmp_path: Path, columns: int) -> None:
    args = [sys.executable, "-m", "spanflow.viewer.cli", "show", CJK_RUN, "--db", str(cjk_db)]
    shown, _ = run_on_pty(args, subprocess_env(TERM="xterm-256color"), tmp_path, columns)
    plain = SGR.sub("", shown)
    lines = plain.splitlines()
    too_wide = [line for line in lines if cells(line) > columns]
    # The replay hint is one line on purpose (the terminal wraps it, copying keeps it whole).
    assert [line for line in too_wide if "spanflow replay" not in line] == [], plain
    assert lines[0].startswith(f"run {CJK_RUN}")
    assert "検索ステップ" in plain and "これは長い答えです。" in plain
    assert any(line.startswith("└── ") for line in lines), plain


def test_colour_follows_force_color_no_color_and_dumb_terminals(
    cjk_db: Path, tmp_path: Path
) -> None:
    args = [sys.executable, "-m", "spanflow.viewer.cli", "runs", "--db", str(cjk_db)]

    def piped(**env: str) -> str:
        done = subprocess.run(
            args, capture_output=True, text=True, env=subprocess_env(**env), timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "\x1b" not in piped()
    forced = piped(FORCE_COLOR="1")
    assert "\x1b[1;31mfailed\x1b[0m" in forced and "\x1b[1mrun id" in forced
    no_colour = piped(FORCE_COLOR="1", NO_COLOR="1")
    assert "\x1b[1mfailed\x1b[0m" in no_colour and "31m" not in no_colour
    assert "\x1b" not in piped(TTY_COMPATIBLE="0", FORCE_COLOR="1")
    dumb, _ = run_on_pty(args, subprocess_env(TERM="dumb"), tmp_path, 100)
    assert "\x1b" not in dumb and "failed" in dumb


# -- the renderer follows rich's layout rules ------------------------------------------------------

WORDS = st.text(alphabet="abcdefgh要約パイ", min_size=1, max_size=14)
LINES = st.lists(WORDS, min_size=0, max_size=12).map(" ".join)
TEXTS = st.lists(LINES, min_size=1, max_size=3).map("\n".join)


@settings(max_examples=120, deadline=None)
@given(text=TEXTS, width=st.integers(min_value=2, max_value=30))
def test_wrapping_matches_rich(text: str, width: int) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(width=width, color_system=None, file=open(os.devnull, "w"))  # noqa: SIM115
    try:
        expected = [line.plain for line in Text(text).wrap(console, width)]
    finally:
        console.file.close()
    assert [line.plain for line in plaintext.Text(text).wrap(width)] == expected


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(min_value=0, max_value=5), min_size=0, max_size=12),
    labels=st.lists(TEXTS, min_size=13, max_size=13),
    width=st.integers(min_value=12, max_value=40),
)
def test_trees_match_rich(shape: list[int], labels: list[str], width: int) -> None:
    import io

    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    ours = plaintext.Tree(plaintext.Text(labels[0]))
    theirs = Tree(Text(labels[0]))
    nodes = [(ours, theirs)]
    for n, parent in enumerate(shape, start=1):
        mine, rich_node = nodes[parent % len(nodes)]
        nodes.append((mine.add(plaintext.Text(labels[n])), rich_node.add(Text(labels[n]))))
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(theirs)
    assert [line.plain for line in ours.lines(width)] == out.getvalue().splitlines()


def test_cells_of_wide_and_combining_characters() -> None:
    assert plaintext.cell_len("abc") == 3
    assert plaintext.cell_len("要約") == 4
    assert plaintext.cell_len("🚀") == 2
    assert plaintext.cell_len("e\u0301") == 1  # e + combining acute
    assert plaintext.set_cell_size("要約x", 3) == "要 "  # a wide character is never cut in half
    cut = plaintext.Text("値が不正です", "red").wrap(8, overflow="ellipsis", no_wrap=True)
    assert [line.plain for line in cut] == ["値が不 …"]


# -- the queries ---------------------------------------------------------------------------------


def root_span(run_id: str, n: int) -> SpanRecord:
    return SpanRecord(
        run_id=run_id,
        span_id=f"{n + 1:016x}",
        name="w",
        start_ns=T0 + n * MS,
        end_ns=T0 + n * MS + MS,
        attributes={attr.RUN_ID: run_id, attr.STEP_NAME: "w", attr.STEP_TYPE: "workflow"},
    )


def test_unique_prefixes_name_each_listed_run_alone(tmp_path: Path) -> None:
    from spanflow.errors import UnknownRunError
    from spanflow.exporters.store import Store

    # Ids sharing 0, 13, 19 and 30 characters with a neighbour, and many that share few.
    ids = ["0" * 32, "abcdef0123456" + "0" * 19, "abcdef0123456" + "1" * 19]
    ids += ["f" * 19 + "0" * 13, "f" * 19 + "1" * 13, "9" * 30 + "01", "9" * 30 + "02"]
    ids += [f"{n * 7919:032x}" for n in range(1, 40)]
    db = write_store(tmp_path / "ids.db", [root_span(i, n) for n, i in enumerate(ids)])
    with Store.open(db) as store:
        for group in (ids[:1], ids[1:3], ids[3:5], ids[5:7], ids[7:], ids):
            length = store.unique_prefix_length(group)
            assert length >= 12 and (length - 12) % 4 == 0
            for run_id in group:  # each prefix names its run alone ...
                assert store.get_run_data(run_id[:length]).id == run_id
            if length > 12:  # ... and a step shorter would not, for one of them
                shorter = length - 4
                with pytest.raises(UnknownRunError):
                    for run_id in group:
                        store.get_run_data(run_id[:shorter])
        assert store.unique_prefix_length(ids[5:7]) == 32
        assert store.unique_prefix_length([]) == 12


def test_runs_reads_the_store_in_a_few_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    from spanflow.viewer import cli

    ids = [f"{n * 104729:032x}" for n in range(1, 61)]
    db = write_store(tmp_path / "many.db", [root_span(i, n) for n, i in enumerate(ids)])
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)  # observes the real connection
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    assert cli.main(["runs", "--limit", "50", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "50 of 60 runs shown" in out and ids[-1][:12] in out
    # Opening (format, schema version), the page of runs, the count, the id prefixes: not one
    # lookup per listed run.
    assert len(statements) <= 10, statements
