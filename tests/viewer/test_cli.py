"""The ``spanflow`` command line against real stores recorded by real workflows."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import spanflow
import tenacity
from spanflow import attributes as attr
from spanflow.exporters.file_formats import parse_otlp_json
from spanflow.exporters.records import RunRecord, SpanRecord
from spanflow.exporters.store import Store
from spanflow.viewer import cli, render
from spanflow.viewer.cli import main

from tests.conftest import Recorded

LONG_OUTPUT_CHARS = 1000
ANSI = re.compile(r"\x1b\[([0-9;]*)m")


# -- workflows recorded by the tests ---------------------------------------------------------------


class Ticket(spanflow.State):
    label: str = "new"


_attempts: dict[int, int] = {}


@spanflow.step(retries=1, retry=tenacity.wait_none())
def flaky(n: int) -> int:
    _attempts[n] = _attempts.get(n, 0) + 1
    if _attempts[n] == 1:
        raise ConnectionError("overloaded, try again")
    return n * 2


@spanflow.step
def classify(ticket: Ticket) -> None:
    ticket.label = "billing"
    spanflow.decision("escalate", reason="angry customer")
    logging.getLogger("tests.viewer").warning("customer sounds angry")


def letters(n: int) -> str:
    return "BEGIN" + "".join(chr(ord("a") + i % 26) for i in range(n))


@spanflow.step
def long_text(n: int) -> str:
    return letters(n)


def cheap_model(n: int) -> int:
    return -1


@spanflow.step(fallback=cheap_model)
def expensive_model(n: int) -> int:
    raise TimeoutError("model took too long")


@spanflow.step
def broken(x: int) -> int:
    raise ValueError(f"bad value {x}")


@spanflow.workflow
def good_pipeline(n: int) -> str:
    ticket = Ticket()
    classify(ticket)
    expensive_model(n)
    return long_text(n)


@spanflow.workflow
def bad_pipeline(n: int) -> int:
    return broken(flaky(n))


class Stored:
    """A store holding one ok and one failed run."""

    def __init__(self, db: Path, good: str, bad: str) -> None:
        self.db = db
        self.good = good
        self.bad = bad


@pytest.fixture
def stored(recorded_with_store: tuple[Recorded, Path]) -> Stored:
    _, db = recorded_with_store
    _attempts.clear()
    good_pipeline(LONG_OUTPUT_CHARS)
    with pytest.raises(ValueError, match="bad value 6"):
        bad_pipeline(3)
    assert spanflow.flush()
    with Store.open(db) as store:
        good = store.list_runs(workflow="good_pipeline")[0].id
        bad = store.list_runs(workflow="bad_pipeline")[0].id
    return Stored(db, good, bad)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("spanflow: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


# -- crafted stores --------------------------------------------------------------------------------

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def span(
    run_id: str, span_id: str, parent: str | None, name: str, start: int, end: int, **attrs: Any
) -> SpanRecord:
    return SpanRecord(
        run_id=run_id,
        span_id=span_id,
        parent_id=parent,
        name=name,
        start_ns=start,
        end_ns=end,
        attributes={attr.RUN_ID: run_id, attr.STEP_NAME: name, **attrs},
    )


def workflow_root(run_id: str, name: str = "crafted", **attrs: Any) -> SpanRecord:
    return span(
        run_id, "1" * 16, None, name, T0, T0 + 10 * MS, **{attr.STEP_TYPE: "workflow", **attrs}
    )


def write_store(path: Path, spans: list[SpanRecord]) -> Path:
    with Store.open(path, readonly=False) as store:
        store.write_spans(spans)
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SPANFLOW_DB", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "TTY_COMPATIBLE"}
        and not k.startswith("OTEL_")
    }
    env.update(extra)
    return env


def spanflow_proc(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spanflow.viewer.cli", *map(str, args)],
        cwd=cwd,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- runs ------------------------------------------------------------------------------------------


def test_runs_table_newest_first(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "runs", "--db", stored.db)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["run", "id", "workflow", "status", "started", "duration", "error"]
    assert lines[1].startswith(stored.bad[:12]) and lines[2].startswith(stored.good[:12])
    assert "bad_pipeline" in lines[1] and "failed" in lines[1]
    assert "ValueError: bad value 6" in lines[1]
    assert "good_pipeline" in lines[2] and " ok " in lines[2]
    with Store.open(stored.db) as store:
        started = store.get_run(stored.bad).started_at
    assert started.astimezone().strftime("%Y-%m-%d %H:%M:%S") in lines[1]  # local time
    assert "\x1b" not in out


def test_runs_json_shape(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "runs", "--db", stored.db, "--json")
    assert code == 0
    runs = json.loads(out)
    assert [r["id"] for r in runs] == [stored.bad, stored.good]
    for r in runs:
        assert set(r) == {
            "id",
            "workflow",
            "status",
            "started_at",
            "duration_ms",
            "error",
            "incomplete",
        }
        assert r["incomplete"] is False  # its root span is stored
        started = dt.datetime.fromisoformat(r["started_at"])
        assert started.utcoffset() == dt.timedelta(0)
        assert abs(dt.datetime.now(dt.UTC) - started) < dt.timedelta(minutes=5)
        assert isinstance(r["duration_ms"], float) and r["duration_ms"] > 0
    assert runs[0]["status"] == "failed" and runs[0]["error"] == "ValueError: bad value 6"
    assert runs[1] == runs[1] | {"workflow": "good_pipeline", "status": "ok", "error": None}


def test_runs_filters_and_limit(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    def ids(*args: str) -> list[str]:
        code, out, err = run_cli(capsys, "runs", "--db", stored.db, "--json", *args)
        assert code == 0, err
        return [r["id"] for r in json.loads(out)]

    assert ids("--status", "failed") == [stored.bad]
    assert ids("--status", "ok") == [stored.good]
    assert ids("--status", "crashed") == []
    assert ids("--workflow", "good_pipeline") == [stored.good]
    assert ids("--since", "1h") == [stored.bad, stored.good]
    assert ids("--since", "2000-01-01") == [stored.bad, stored.good]
    tomorrow = (dt.datetime.now() + dt.timedelta(days=1)).isoformat(timespec="minutes")
    assert ids("--since", tomorrow) == []
    assert ids("--limit", "1") == [stored.bad]

    code, out, _ = run_cli(capsys, "runs", "--db", stored.db, "--limit", "1")
    assert code == 0 and "1 of 2 runs shown" in out
    code, out, _ = run_cli(capsys, "runs", "--db", stored.db, "--since", tomorrow)
    assert code == 0 and out.startswith("no runs match those filters")


def test_runs_on_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = write_store(tmp_path / "empty.db", [])
    code, out, err = run_cli(capsys, "runs", "--db", db)
    assert (code, err) == (0, "")
    assert out.startswith(f"no runs in {db} yet")
    code, out, _ = run_cli(capsys, "runs", "--db", db, "--json")
    assert code == 0 and json.loads(out) == []


def test_db_defaults_to_env_then_dot_spanflow(
    stored: Stored,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPANFLOW_DB", str(stored.db))
    code, out, _ = run_cli(capsys, "runs", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    monkeypatch.delenv("SPANFLOW_DB")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "runs")
    assert_one_line_error(code, out, err, str(Path(".spanflow") / "traces.db"), "does not exist")
    assert not (tmp_path / ".spanflow").exists()


# -- show ------------------------------------------------------------------------------------------


def test_show_failed_run(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "show", stored.bad[:8], "--db", stored.db)
    assert (code, err) == (0, "")
    assert f"run {stored.bad}" in out and "bad_pipeline" in out and "failed" in out
    assert "error      ValueError: bad value 6" in out
    assert "entrypoint test_cli:bad_pipeline" in out or "entrypoint tests.viewer.test_cli" in out
    # attempts: the step's count and one child per attempt, the first one failed
    assert "attempts: 2" in out
    assert re.search(r"attempt 1 .*ERROR", out) and re.search(r"attempt 2 .* ok", out)
    assert "error: ConnectionError: overloaded, try again" in out
    # the failed step: its error, its inputs and the end of its traceback, without the
    # decorator frames in between
    assert "error: ValueError: bad value 6" in out
    assert 'raise ValueError(f"bad value {x}")' in out
    assert "in broken" in out
    assert "decorators.py" not in out
    assert 'input: {"x":6}' in out
    assert f"replay it after a fix: spanflow replay {stored.bad} --db {stored.db}" in out
    assert "\x1b" not in out


def test_show_ok_run_details(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "show", stored.good, "--db", stored.db)
    assert code == 0
    assert 'state: replace /label = "billing"' in out
    assert 'route: escalate  (reason: "angry customer")' in out
    assert "log WARNING tests.viewer: customer sounds angry" in out
    assert "fallback used" in out
    assert "handled: TimeoutError: model took too long" in out
    assert "output: -1" in out
    assert "replay it" not in out


def test_show_shortens_outputs_to_no_less_than_200_chars(
    stored: Stored, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # one output, one line: no wrapping to undo
    code, out, _ = run_cli(capsys, "show", stored.good, "--db", stored.db)
    assert code == 0
    full = json.dumps(letters(LONG_OUTPUT_CHARS))
    lines = [ln for ln in out.splitlines() if "output: " in ln and "BEGIN" in ln]
    assert lines, out
    shown = lines[0].split("output: ", 1)[1]
    assert shown.startswith(full[:200])
    assert full not in out
    assert re.search(r"… \(\+\d+ chars\)$", shown)
    assert len(shown) < len(full)


def test_show_json_shape(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "show", stored.bad, "--db", stored.db, "--json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"run", "spans"}
    run = RunRecord.model_validate(doc["run"])
    assert run.id == stored.bad and run.status == "failed"
    spans = [SpanRecord.model_validate(s) for s in doc["spans"]]
    assert {s.run_id for s in spans} == {stored.bad}
    assert {s.attributes.get(attr.STEP_NAME) for s in spans} == {"bad_pipeline", "flaky", "broken"}
    assert all("duration_ms" in s for s in doc["spans"])


def test_show_tolerates_clock_skew_orphans_and_cycles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = "c" * 32
    root = "1" * 16
    db = write_store(
        tmp_path / "skew.db",
        [
            workflow_root(run_id),
            # started "before" its parent: another host's clock
            span(run_id, "2" * 16, root, "early-child", T0 - 5 * MS, T0 + MS),
            # ended before it started
            span(run_id, "3" * 16, root, "backwards", T0 + 5 * MS, T0 + 4 * MS),
            # its parent was never stored
            span(run_id, "4" * 16, "9" * 16, "lost-parent", T0 + 2 * MS, T0 + 3 * MS),
            # parents that point at each other
            span(run_id, "5" * 16, "6" * 16, "cycle-a", T0 + 6 * MS, T0 + 7 * MS),
            span(run_id, "6" * 16, "5" * 16, "cycle-b", T0 + 6 * MS, T0 + 7 * MS),
        ],
    )
    code, out, err = run_cli(capsys, "show", run_id, "--db", db)
    assert (code, err) == (0, "")
    for name in ("crafted", "early-child", "backwards", "lost-parent", "cycle-a", "cycle-b"):
        assert name in out
    assert re.search(r"lost-parent .*\(orphan\)", out)
    assert not re.search(r"[+ ]-\d", out), out
    assert re.search(r"early-child .* \+0\.0 ms", out)


def test_show_keeps_a_very_deep_tree_on_screen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = "d" * 32
    spans, parent = [workflow_root(run_id)], "1" * 16
    for depth in range(40):
        span_id = f"{depth + 0x100:016x}"
        spans.append(span(run_id, span_id, parent, f"level{depth}", T0 + depth, T0 + depth + 1))
        parent = span_id
    code, out, _ = run_cli(capsys, "show", run_id, "--db", write_store(tmp_path / "d.db", spans))
    assert code == 0
    lines = out.splitlines()
    for depth in range(40):
        assert any(re.search(rf"\blevel{depth} ", line) for line in lines), depth
    assert "[depth 41] level39" in out
    assert max(len(line) for line in lines) <= render.PIPE_WIDTH
    indents = [len(line) - len(line.lstrip("│├└─ ")) for line in lines if "level" in line]
    assert max(indents) <= 4 * (render.MAX_DEPTH + 1)


def test_show_large_diff_and_many_logs_are_capped() -> None:
    diff = json.dumps([{"op": "add", "path": f"/items/{i}", "value": i} for i in range(50)])
    lines = render.patch_lines(diff)
    assert lines[0] == "add /items/0 = 0"
    assert lines[-1] == f"… {50 - render.MAX_ITEMS} more operations"
    assert render.patch_lines(
        '[{"op": "move", "from": "/a", "path": "/b"}, {"op": "remove", "path": "/c"}]'
    ) == ["move /a -> /b", "remove /c"]
    assert render.patch_lines("not json") == ["not json"]


def test_captured_text_cannot_drive_the_terminal() -> None:
    assert render.clean("red \x1b[31mtext\x07\r") == "red \\x1b[31mtext\\x07\\x0d"
    assert render.clean("tab\tand\nnewline") == "tab\\x09and\nnewline"
    assert render.clean("one\nline", newlines=False) == "one\\x0aline"
    assert (
        render.clean("\x9b2J \u202egnp.exe \u2066\u200f") == "\\x9b2J \\u202egnp.exe \\u2066\\u200f"
    )
    assert render.safe_json('"\x7f\x85\u202e"') == '"\\u007f\\u0085\\u202e"'
    assert render.clean("lone \ud800") == "lone \\ud800"


def test_a_lone_step_is_shown_as_a_one_step_run_that_replay_refuses(
    recorded_with_store: tuple[Recorded, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, db = recorded_with_store
    assert long_text(3) == "BEGINabc"  # called outside any workflow
    assert spanflow.flush()
    with Store.open(db) as store:
        (run,) = store.list_runs()
    assert run.workflow == "long_text"
    code, out, err = run_cli(capsys, "show", run.id, "--db", db)
    assert (code, err) == (0, "")
    assert re.search(r"kind +one-step run: a step called outside any workflow", out), out
    assert "replay needs a workflow" in out and "spanflow replay" not in out
    code, out, err = run_cli(capsys, "show", stored_run_of(db, "long_text"), "--db", db, "--json")
    assert code == 0 and json.loads(out)["run"]["id"] == run.id
    code, out, err = run_cli(capsys, "replay", run.id, "--db", db)
    assert_one_line_error(code, out, err, "lone step call", "only workflows can be replayed")


def stored_run_of(db: Path, workflow: str) -> str:
    with Store.open(db) as store:
        return store.list_runs(workflow=workflow)[0].id


def test_a_workflow_run_is_not_marked_as_one_step(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "show", stored.good, "--db", stored.db)
    assert code == 0 and "one-step run" not in out


def test_show_ambiguous_and_unknown_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = "abcd" + "0" * 28, "abcd" + "1" * 28
    db = write_store(tmp_path / "two.db", [workflow_root(first), workflow_root(second)])
    code, out, err = run_cli(capsys, "show", "abcd", "--db", db)
    assert_one_line_error(code, out, err, "ambiguous", first, second)
    code, out, _ = run_cli(capsys, "show", "abcd1", "--db", db)
    assert code == 0 and f"run {second}" in out
    code, out, err = run_cli(capsys, "show", "ffff", "--db", db)
    assert_one_line_error(code, out, err, "no run ffff", str(db))
    code, out, err = run_cli(capsys, "show", "not-a-run", "--db", db)
    assert_one_line_error(code, out, err, "'not-a-run' is not a run id")


# -- export and import -----------------------------------------------------------------------------


def test_export_jaeger_to_stdout(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "export", stored.bad, "--format", "jaeger", "--db", stored.db)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    (trace,) = doc["data"]
    assert trace["traceID"] == stored.bad
    failed = {
        s["operationName"]
        for s in trace["spans"]
        if {"key": "error", "type": "bool", "value": True} in s["tags"]
    }
    assert {"bad_pipeline", "broken", "flaky #1"} <= failed


def test_export_otlp_to_file_and_import_it_elsewhere(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "run.json"
    code, out, _ = run_cli(
        capsys, "export", stored.good[:6], "--format", "otlp-json", "-o", target, "--db", stored.db
    )
    assert code == 0 and out.startswith(f"wrote run {stored.good}") and str(target) in out
    exported = parse_otlp_json(target.read_bytes())
    with Store.open(stored.db) as store:
        original = store.spans(stored.good)
    assert sorted(s.span_id for s in exported) == sorted(s.span_id for s in original)

    fresh = tmp_path / "new" / "dir" / "copy.db"  # nothing there yet: import creates it
    code, out, err = run_cli(capsys, "import", target, "--db", fresh)
    assert (code, err) == (0, "")
    assert f"imported {len(original)} spans of 1 run (1 new) from {target} into {fresh}" in out
    with Store.open(fresh) as store:
        run = store.get_run(stored.good)
        assert run.workflow == "good_pipeline" and run.status == "ok"
        assert len(store.spans(stored.good)) == len(original)
    code, out, _ = run_cli(capsys, "import", target, "--db", fresh)
    assert code == 0 and "imported 0 spans of 1 run (0 new)" in out
    assert f"; {len(original)} spans already stored, skipped" in out


def test_export_to_an_unwritable_place(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "export", stored.bad, "--format", "jaeger", "-o", tmp_path, "--db", stored.db
    )
    assert_one_line_error(code, out, err, f"cannot write {tmp_path}")


def test_import_rejects_what_is_not_otlp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": []}')  # ({"data": []} is Jaeger JSON without traces)
    db = tmp_path / "t.db"
    code, out, err = run_cli(capsys, "import", bad, "--db", db)
    assert_one_line_error(code, out, err, str(bad), "resourceSpans")
    code, out, err = run_cli(capsys, "import", tmp_path / "missing.json", "--db", db)
    assert_one_line_error(code, out, err, "cannot read", "missing.json")
    assert not db.exists()


# -- gc --------------------------------------------------------------------------------------------


def test_gc_deletes_and_reports_sizes(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    spanflow.flush()
    code, out, err = run_cli(capsys, "gc", "--keep-days", "30", "--db", stored.db)
    assert (code, err) == (0, "")
    assert out.startswith(f"deleted 0 runs (0 spans); 2 runs kept in {stored.db}\n")
    code, out, _ = run_cli(
        capsys, "gc", "--keep-days", "0", "--max-size", "500MB", "--db", stored.db
    )
    assert code == 0
    assert re.match(r"deleted 2 runs \(\d+ spans\); 0 runs kept", out), out
    assert re.search(r"^size: [\d.]+ [KM]?B -> [\d.]+ [KM]?B$", out, re.MULTILINE), out
    with Store.open(stored.db) as store:
        assert store.count_runs() == 0


def test_gc_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "t.db"
    assert_one_line_error(*run_cli(capsys, "gc", "--db", db), "--keep-days", "--max-size")
    assert_one_line_error(*run_cli(capsys, "gc", "--max-size", "lots", "--db", db), "'lots'")
    assert_one_line_error(*run_cli(capsys, "gc", "--keep-days", "-1", "--db", db), "'-1'")
    assert_one_line_error(*run_cli(capsys, "gc", "--keep-days", "1", "--db", db), "does not exist")
    assert not db.exists()  # gc never creates a store
    assert cli.parse_size("500MB") == 500_000_000
    assert cli.parse_size("2GiB") == 2 * 1024**3
    assert cli.parse_size("4096") == 4096


def test_gc_refuses_a_size_below_an_empty_store(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    spanflow.flush()
    before = stored.db.read_bytes()
    code, out, err = run_cli(capsys, "gc", "--max-size", "1KB", "--db", stored.db)
    assert_one_line_error(code, out, err, "--max-size 1.0 KB", "smallest possible store")
    smallest = int(re.search(r"\((\d+) bytes\)", err).group(1))  # type: ignore[union-attr]
    assert smallest > 1000
    assert stored.db.read_bytes() == before
    # The smallest size itself is accepted, and the store still reads as a store.
    code, out, err = run_cli(capsys, "gc", "--max-size", str(smallest), "--db", stored.db)
    assert (code, err) == (0, ""), err
    assert re.match(r"deleted \d runs? \(\d+ spans?\); \d runs? kept", out), out
    with Store.open(stored.db) as store:
        assert store.count_runs() <= 2


def test_gc_dry_run_lists_and_deletes_nothing(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    spanflow.flush()
    code, out, err = run_cli(capsys, "gc", "--keep-days", "0", "--dry-run", "--db", stored.db)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        f"would delete 2 runs ({lines[0].split('(')[1].split(')')[0]}); 0 runs would be kept "
        f"in {stored.db} (dry run: nothing deleted)"
    )
    assert {line.split()[0] for line in lines[1:3]} == {stored.good, stored.bad}
    assert any("bad_pipeline" in line and "failed" in line for line in lines[1:3])
    assert re.fullmatch(r"size: [\d.]+ [KM]?B -> [\d.]+ [KM]?B", lines[3]), lines
    with Store.open(stored.db) as store:
        assert store.count_runs() == 2
    code, out, _ = run_cli(capsys, "gc", "--keep-days", "30", "--dry-run", "--db", stored.db)
    assert out.startswith("would delete 0 runs (0 spans); 2 runs would be kept")


def test_gc_sizes_leave_out_another_writers_log(tmp_path: Path) -> None:
    db = write_store(tmp_path / "t.db", [workflow_root("a" * 32)])
    # Another writer whose log has not been checkpointed: 40 commits of one 100 KB row.
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("INSERT INTO meta (key, value) VALUES ('pad', '')")
        for i in range(40):
            writer.execute("UPDATE meta SET value = ? WHERE key = 'pad'", (str(i) * 100_000,))
        wal = db.with_name(db.name + "-wal")
        assert wal.stat().st_size > 3_000_000
        done = spanflow_proc("gc", "--keep-days", "30", "--db", db, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        before, _ = re.findall(r"([\d.]+) ([KM]?B)", done.stdout.splitlines()[1])
        assert before[1] == "KB" and float(before[0]) < 500, done.stdout  # not the 4 MB log
        assert wal.stat().st_size == 0
    finally:
        writer.close()


# -- argument and store errors ---------------------------------------------------------------------

COMMANDS_ON_A_STORE = [
    ["runs"],
    ["show", "abcd"],
    ["export", "abcd", "--format", "jaeger"],
    ["replay", "abcd"],
    ["gc", "--keep-days", "1"],
    ["ui", "--no-open"],
]


@pytest.mark.parametrize("command", COMMANDS_ON_A_STORE, ids=lambda c: c[0])
@pytest.mark.parametrize("kind", ["sqlite", "text"])
def test_a_foreign_file_is_refused_and_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], kind: str
) -> None:
    foreign = tmp_path / "notes.db"
    if kind == "sqlite":
        conn = sqlite3.connect(foreign)
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
        conn.commit()
        conn.close()
    else:
        foreign.write_text("just some text, not a database\n" * 100)
    before = foreign.read_bytes()
    assert_one_line_error(*run_cli(capsys, *command, "--db", foreign), str(foreign))
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_import_into_a_foreign_file_leaves_it_untouched(
    stored: Stored, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "run.json"
    assert (
        main(
            [
                "export",
                stored.bad,
                "--format",
                "otlp-json",
                "-o",
                str(exported),
                "--db",
                str(stored.db),
            ]
        )
        == 0
    )
    foreign = tmp_path / "other" / "notes.db"
    foreign.parent.mkdir()
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    capsys.readouterr()
    assert_one_line_error(
        *run_cli(capsys, "import", exported, "--db", foreign), "not a spanflow store"
    )
    assert foreign.read_bytes() == before
    assert [p.name for p in foreign.parent.iterdir()] == ["notes.db"]


@pytest.mark.parametrize(
    "command", [*COMMANDS_ON_A_STORE, ["import", "x.json"]], ids=lambda c: c[0]
)
def test_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    (tmp_path / "x.json").write_text('{"resourceSpans": []}')
    if command[0] == "import":
        # an import with spans, so that it gets as far as opening the store
        command = ["import", str(_one_span_file(tmp_path))]
    assert_one_line_error(*run_cli(capsys, *command, "--db", tmp_path), "is a directory")


def _one_span_file(tmp_path: Path) -> Path:
    path = tmp_path / "one.json"
    run_id = "d" * 32
    from spanflow.exporters.file_formats import to_otlp_json

    root = workflow_root(run_id)
    record = RunRecord(id=run_id, status="ok", started_at=dt.datetime.now(dt.UTC))
    path.write_text(json.dumps(to_otlp_json(record, [root])))
    return path


@pytest.mark.parametrize("command", COMMANDS_ON_A_STORE, ids=lambda c: c[0])
def test_a_missing_store_is_reported_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    db = tmp_path / "nothing" / "here.db"
    assert_one_line_error(*run_cli(capsys, *command, "--db", db), str(db), "does not exist")
    assert not db.parent.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "choose a command"),
        (["runs", "--status", "weird"], "invalid choice: 'weird'"),
        (["runs", "--limit", "0"], "expected a positive integer, got '0'"),
        (["runs", "--limit", "many"], "'many'"),
        (["runs", "--since", "last tuesday"], "--since 'last tuesday'"),
        (["runs", "--nope"], "unrecognized arguments: --nope"),
        (["show"], "the following arguments are required: RUN"),
        (["export", "abcd"], "the following arguments are required: --format"),
        (["export", "abcd", "--format", "zipkin"], "invalid choice: 'zipkin'"),
        (["ui", "--port", "http"], "'http'"),
    ],
)
def test_bad_arguments_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert_one_line_error(*run_cli(capsys, *args), needle)


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"spanflow {spanflow.__version__}"
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("runs", "show", "replay", "export", "import", "gc", "ui"):
        assert command in out


def test_since_parsing() -> None:
    now = dt.datetime(2024, 5, 2, 12, 0, tzinfo=dt.UTC)
    assert cli.parse_since("2h", now) == now - dt.timedelta(hours=2)
    assert cli.parse_since("1d", now) == now - dt.timedelta(days=1)
    assert cli.parse_since("90m", now) == now - dt.timedelta(minutes=90)
    assert cli.parse_since("2024-05-01T10:00:00+02:00") == dt.datetime(
        2024, 5, 1, 8, 0, tzinfo=dt.UTC
    )
    local = cli.parse_since("2024-05-01")
    assert local.tzinfo is not None
    assert local.replace(tzinfo=None) == dt.datetime(2024, 5, 1)
    with pytest.raises(cli.CliError):
        cli.parse_since("soon")


# -- as a real process -----------------------------------------------------------------------------


def test_subprocess_exit_codes_and_plain_output(stored: Stored, tmp_path: Path) -> None:
    done = spanflow_proc("runs", "--db", stored.db, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert stored.bad[:12] in done.stdout and "\x1b" not in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= render.PIPE_WIDTH

    done = spanflow_proc("show", stored.bad, "--db", stored.db, cwd=tmp_path)
    assert done.returncode == 0 and "\x1b" not in done.stdout and "broken" in done.stdout

    done = spanflow_proc(
        "export", stored.bad, "--format", "jaeger", "--db", stored.db, cwd=tmp_path
    )
    assert done.returncode == 0 and json.loads(done.stdout)["data"][0]["traceID"] == stored.bad

    done = spanflow_proc("show", "0000ffff", "--db", stored.db, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"spanflow: error: no run 0000ffff in {stored.db}\n"

    done = spanflow_proc("runs", "--since", "yesterday-ish", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr

    script = Path(sys.executable).with_name("spanflow")
    if script.exists():
        version = subprocess.run(
            [str(script), "--version"], capture_output=True, text=True, timeout=60, check=True
        )
        assert version.stdout.strip() == f"spanflow {spanflow.__version__}"


def _read_pty(args: list[str], env: dict[str, str], cwd: Path) -> str:
    master, slave = pty.openpty()
    with subprocess.Popen(args, stdout=slave, stderr=subprocess.DEVNULL, env=env, cwd=cwd) as proc:
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
    return b"".join(chunks).decode("utf-8", "replace")


def _colour_codes(text: str) -> list[str]:
    codes = []
    for params in ANSI.findall(text):
        for p in params.split(";"):
            if p.isdigit() and (30 <= int(p) <= 38 or 90 <= int(p) <= 97):
                codes.append(p)
    return codes


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_colour_on_a_terminal_unless_no_color(stored: Stored, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "spanflow.viewer.cli", "runs", "--db", str(stored.db)]
    env = subprocess_env(TERM="xterm-256color")
    coloured = _read_pty(args, env, tmp_path)
    assert "failed" in coloured and _colour_codes(coloured)
    plain = _read_pty(args, {**env, "NO_COLOR": "1"}, tmp_path)
    assert "failed" in plain and not _colour_codes(plain)


# -- replay ----------------------------------------------------------------------------------------

MYPIPE = textwrap.dedent(
    """
    import os
    import signal
    from pathlib import Path

    import spanflow

    HERE = Path(__file__).parent
    CALLS = HERE / "calls.log"


    def note(name: str) -> None:
        with CALLS.open("a") as f:
            f.write(name + "\\n")


    @spanflow.step
    def fetch(n: int) -> list[int]:
        note("fetch")
        return list(range(n))


    @spanflow.step
    def total(xs: list[int]) -> int:
        note("total")
        if os.environ.get("INTERRUPT") == "1":
            os.kill(os.getpid(), signal.SIGINT)
        if not (HERE / "fixed.flag").exists():
            raise ValueError("not fixed yet")
        return sum(xs)


    @spanflow.step
    def describe(n: int):  # no return annotation: replay cannot rebuild its output
        return {"n": n}


    @spanflow.workflow
    def pipeline(n: int) -> int:
        describe(n)
        return total(fetch(n))


    if __name__ == "__main__":
        pipeline(4)
    """
)


def _record_failing_run(tmp_path: Path, db: Path, module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}; {module}.pipeline(4)"],
        cwd=tmp_path,
        env=subprocess_env(SPANFLOW_DB=str(db)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "ValueError: not fixed yet" in done.stderr
    with Store.open(db) as store:
        (run,) = store.list_runs()
    assert run.entrypoint == f"{module}:pipeline"
    return run.id


@pytest.fixture
def mypipe(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    (tmp_path / "mypipe.py").write_text(MYPIPE)
    db = tmp_path / "traces.db"
    run_id = _record_failing_run(tmp_path, db, "mypipe")
    (tmp_path / "calls.log").unlink()
    yield tmp_path, db, run_id


def _summary(stdout: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in stdout.splitlines():
        if line.startswith("  ") and current:
            sections[current].append(line.strip())
        else:
            current = line.split(":")[0].split(" (")[0]
            sections[current] = []
    return sections


def test_replay_fails_again_then_succeeds_after_the_fix(mypipe: tuple[Path, Path, str]) -> None:
    tmp_path, db, run_id = mypipe

    again = spanflow_proc("replay", run_id[:10], "--db", db, cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    first_line = again.stdout.splitlines()[0]
    assert (
        first_line
        == f"replaying run {run_id}: importing mypipe:pipeline from the import path and {tmp_path}"
    )
    summary = _summary(again.stdout)
    assert summary["reused"] == ["pipeline/fetch[0]"]
    assert summary["executed"] == ["pipeline/describe[0]", "pipeline/total[0]"]
    assert summary["notes"] == [
        "pipeline/describe[0]: runs live: no return annotation to rebuild its output with"
    ]
    assert "failed again: ValueError: not fixed yet" in again.stdout
    assert "Traceback" not in again.stdout + again.stderr
    assert (tmp_path / "calls.log").read_text() == "total\n"  # fetch was not paid again

    (tmp_path / "fixed.flag").touch()
    fixed = spanflow_proc("replay", run_id, "--db", db, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert "result: 6" in fixed.stdout
    new_id = re.search(r"new run: ([0-9a-f]{32})", fixed.stdout)
    assert new_id is not None
    assert f"see it: spanflow show {new_id.group(1)} --db {db}" in fixed.stdout

    with Store.open(db) as store:
        assert store.get_run(new_id.group(1)).status == "ok"
        assert store.get_run(new_id.group(1)).replay_of == run_id
        spans = {s.attributes.get(attr.STEP_NAME): s for s in store.spans(new_id.group(1))}
        assert {r.status for r in store.replays_of(run_id)} == {"ok", "failed"}
    assert spans["pipeline"].attributes[attr.REPLAY_OF] == run_id
    assert spans["fetch"].attributes.get(attr.REPLAY_CACHED) is True
    assert not spans["total"].attributes.get(attr.REPLAY_CACHED)


def test_replay_from_a_step_executes_it_again(mypipe: tuple[Path, Path, str]) -> None:
    tmp_path, db, run_id = mypipe
    (tmp_path / "fixed.flag").touch()
    done = spanflow_proc("replay", run_id, "--from", "fetch", "--db", db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = _summary(done.stdout)
    assert summary["reused"] == []
    assert summary["executed"] == [
        "pipeline/describe[0]",
        "pipeline/fetch[0]",
        "pipeline/total[0]",
    ]
    assert (tmp_path / "calls.log").read_text() == "fetch\ntotal\n"

    done = spanflow_proc("replay", run_id, "--from", "nosuchstep", "--db", db, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "'nosuchstep': no such step" in done.stderr


def test_replay_interrupted_exits_130_quietly(mypipe: tuple[Path, Path, str]) -> None:
    tmp_path, db, run_id = mypipe
    done = spanflow_proc(
        "replay", run_id, "--db", db, cwd=tmp_path, env=subprocess_env(INTERRUPT="1")
    )
    assert done.returncode == 130
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr


def test_replay_of_a_module_that_cannot_be_imported(mypipe: tuple[Path, Path, str]) -> None:
    tmp_path, db, run_id = mypipe
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = spanflow_proc("replay", run_id, "--db", db, cwd=elsewhere)
    assert done.returncode == 2
    assert done.stderr.startswith("spanflow: error: cannot import 'mypipe'")
    assert done.stderr.count("\n") == 1


def test_replay_of_a_script_from_another_directory(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    script = scripts / "script.py"
    script.write_text(MYPIPE)
    db = tmp_path / "traces.db"
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=subprocess_env(SPANFLOW_DB=str(db)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "not fixed yet" in done.stderr
    with Store.open(db) as store:
        (run,) = store.list_runs()
        root = next(s for s in store.spans(run.id) if s.parent_id is None)
    assert root.attributes[attr.WORKFLOW_ENTRYPOINT] == "script:pipeline"
    assert root.attributes[attr.WORKFLOW_FILE] == str(script)

    (scripts / "fixed.flag").touch()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A recorded path outside the current directory is never put on the import path.
    refused = spanflow_proc("replay", run.id, "--db", db, cwd=elsewhere)
    assert refused.returncode == 2 and "is not under it" in refused.stderr
    replayed = spanflow_proc("replay", run.id, "--db", db, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith(
        f"replaying run {run.id}: importing script:pipeline from {script}\n"
    )
    assert "result: 6" in replayed.stdout
    assert _summary(replayed.stdout)["reused"] == ["pipeline/fetch[0]"]
    # the __main__ block did not run on import: only the replayed total ran
    assert (scripts / "calls.log").read_text() == "fetch\ntotal\ntotal\n"


def test_replay_refuses_an_entrypoint_that_is_not_a_workflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_id = "e" * 32
    db = write_store(
        tmp_path / "evil.db",
        [
            workflow_root(
                run_id,
                name="system",
                **{
                    attr.WORKFLOW_ENTRYPOINT: "os:system",
                    attr.INPUT_VALUE: json.dumps({"command": "touch pwned"}),
                },
            )
        ],
    )
    code, out, err = run_cli(capsys, "replay", run_id, "--db", db)
    assert code == 2
    assert out.startswith(f"replaying run {run_id}: importing os:system")
    assert err == "spanflow: error: os:system is not a @spanflow.workflow; refusing to call it\n"
    assert not (tmp_path / "pwned").exists()


def test_replay_of_an_unknown_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = write_store(tmp_path / "t.db", [workflow_root("a" * 32)])
    assert_one_line_error(*run_cli(capsys, "replay", "bbbb", "--db", db), "no run bbbb")


# -- ui --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ui_serves_the_store_until_interrupted(
    stored: Stored, tmp_path: Path, stop: signal.Signals
) -> None:
    args = [sys.executable, "-m", "spanflow.viewer.cli", "ui", "--port", "0", "--no-open"]
    with subprocess.Popen(
        [*args, "--db", str(stored.db)],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            first = proc.stdout.readline()
            url = re.search(r"http://127\.0\.0\.1:\d+/\?token=\S+", first)
            assert url is not None, first
            with urllib.request.urlopen(url.group(0), timeout=10) as response:
                assert response.status == 200
                assert "<html" in response.read().decode("utf-8").lower()
        finally:
            proc.send_signal(stop)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err  # a service manager's SIGTERM ends it as Ctrl-C does
    assert "Traceback" not in err


# -- start-up cost ---------------------------------------------------------------------------------

#: Modules a reading command must not load: each costs tens of milliseconds at start-up.
HEAVY = ("pydantic", "pydantic_core", "sqlite_utils", "opentelemetry.sdk", "importlib.metadata")
_MODULES_AFTER_MAIN = (
    "import json, sys\n"
    "from spanflow.viewer.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    "sys.exit(code)\n"
)


def _modules_loaded_by(*argv: object, cwd: Path) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER_MAIN, *map(str, argv)],
        capture_output=True,  # stdout is a pipe, as in `spanflow runs | grep`
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stderr))


def _heavy(modules: set[str], names: Sequence[str]) -> set[str]:
    return {m for m in modules if any(m == n or m.startswith(n + ".") for n in names)}


def test_reading_commands_start_without_heavy_imports(stored: Stored, tmp_path: Path) -> None:
    runtime = ("spanflow.decorators", "spanflow.runtime", "spanflow.exporters.sqlite_store")
    loaded = _modules_loaded_by("runs", "--json", "--db", stored.db, cwd=tmp_path)
    assert "spanflow.exporters.store" in loaded  # the probe did run the command
    assert _heavy(loaded, (*HEAVY, "rich", *runtime)) == set()
    # Tables and trees are drawn by rich, but without pydantic and the rest.
    for argv in (["runs"], ["runs", "--status", "failed"], ["show", stored.bad]):
        loaded = _modules_loaded_by(*argv, "--db", stored.db, cwd=tmp_path)
        assert _heavy(loaded, (*HEAVY, *runtime)) == set(), argv


def test_version_is_read_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"spanflow {spanflow.__version__}\n"


# -- import redacts ----------------------------------------------------------------------------

PASTED_KEY = "sk-proj-Qw3rTy7uIoPaSdFgHjKlZxCvBnMqWeRtYuIoP"


def _otlp_json_with_secrets(trace: str) -> dict[str, Any]:
    """A trace as another system exports it: secrets in names, values, events and resource."""
    span = {
        "traceId": trace,
        "spanId": "00000000000000a1",
        "name": f"GET /v1/models?key={PASTED_KEY}",
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000100000000",
        "attributes": [
            {"key": "http.url", "value": {"stringValue": f"https://x.test/?key={PASTED_KEY}"}},
            {"key": "password", "value": {"stringValue": "hunter2-hunter2"}},
        ],
        "events": [
            {
                "name": f"retry {PASTED_KEY}",
                "timeUnixNano": "1700000000050000000",
                "attributes": [{"key": "body", "value": {"stringValue": f"k={PASTED_KEY}"}}],
            }
        ],
        "status": {"code": 2, "message": f"401 for {PASTED_KEY}"},
    }
    resource = {"attributes": [{"key": "api_token", "value": {"stringValue": "t0k3n-t0k3n"}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}


def test_import_redacts_every_span_it_writes(tmp_path: Path) -> None:
    trace = "0123456789abcdef0123456789abcdef"
    source = tmp_path / "from-prod.json"
    source.write_text(json.dumps(_otlp_json_with_secrets(trace)), encoding="utf-8")
    db = tmp_path / "traces.db"
    done = spanflow_proc("import", source, "--db", db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for path in tmp_path.glob("traces.db*"):
        data = path.read_bytes()
        for secret in (PASTED_KEY, "hunter2-hunter2", "t0k3n-t0k3n"):
            assert secret.encode() not in data, (path.name, secret)
    with Store.open(db) as store:
        [span] = store.span_data(trace)
    assert span.name == "GET /v1/models?key=[REDACTED]"
    assert span.attributes["password"] == "[REDACTED]"
    assert span.status_message == "401 for [REDACTED]"
    assert [(e.name, e.attributes) for e in span.events] == [
        ("retry [REDACTED]", {"body": "k=[REDACTED]"})
    ]
    assert span.resource == {"api_token": "[REDACTED]"}
