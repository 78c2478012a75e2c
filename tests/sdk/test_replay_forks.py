"""Replay divergence, ``--strict``, ``--json``, ``--set`` forks, service names and generator
steps, driven through the installed ``spanflow`` command in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from spanflow import attributes as attr
from spanflow.exporters.store import Store

SPANFLOW = Path(sys.executable).parent / "spanflow"

SUPPORT = """
import os
import spanflow

@spanflow.step
def normalize(text: str) -> str:
    return text.lower()

@spanflow.step
def classify(text: str) -> dict[str, str]:
    return {"label": "billing" if "refund" in normalize(text) else "other"}

@spanflow.step
def lookup(customer: str) -> str:
    return f"account of {customer}"

@spanflow.step
def extra(label: str) -> str:
    return label.upper()

@spanflow.step
def tokens(n: int):
    for i in range(n):
        yield f"t{i}"

@spanflow.step
def reply(label: str, account: str) -> str:
    if os.environ.get("BROKEN") == "1":
        raise RuntimeError("reply template missing")
    return f"{label}: {account}"

@spanflow.workflow
def support(ticket: dict[str, str]) -> str:
    label = classify(ticket["text"])["label"]
    variant = os.environ.get("VARIANT", "")
    account = "n/a" if variant == "no_lookup" else lookup(ticket["customer"])
    if variant == "added":
        extra(label)
    for t in tokens(5):
        if t == "t1":
            break  # the consumer stops early: the generator is closed
    return reply(label, account)

if __name__ == "__main__":
    support({"text": "Please REFUND me", "customer": "ada"})
"""


def env(**extra: str) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SPANFLOW_DB", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "PYTHONPATH"}
        and not k.startswith("OTEL_")
    }
    clean.update(extra)
    return clean


def cli(*args: str | Path, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SPANFLOW), *map(str, args)],
        cwd=cwd,
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def record(tmp_path: Path, **extra: str) -> tuple[Path, str]:
    """Run the support script once; returns the store and the run id."""
    (tmp_path / "support.py").write_text(SUPPORT)
    db = tmp_path / "traces.db"
    subprocess.run(
        [sys.executable, "support.py"],
        cwd=tmp_path,
        env=env(SPANFLOW_DB=str(db), **extra),
        capture_output=True,
        timeout=120,
    )
    with Store.open(db) as store:
        runs = store.list_runs()
    assert len(runs) == 1
    return db, runs[0].id


def replay_json(tmp_path: Path, db: Path, run_id: str, *args: str, **extra: str) -> Any:
    done = cli("replay", run_id, "--db", db, "--json", *args, cwd=tmp_path, **extra)
    assert done.returncode in (0, 1, 3), done.stderr
    summary = json.loads(done.stdout)
    summary["exit"] = done.returncode
    return summary


def root_attributes(db: Path, run_id: str) -> dict[str, Any]:
    with Store.open(db) as store:
        spans = store.spans(run_id)
    return next(s.attributes for s in spans if s.parent_id is None)


# -- divergence and --strict -----------------------------------------------------------------


def test_json_summary_has_the_documented_shape(tmp_path: Path) -> None:
    db, run_id = record(tmp_path)
    summary = replay_json(tmp_path, db, run_id, "--strict")
    assert set(summary) == {"run", "status", "reused", "executed", "diverged", "exit"}
    assert summary["status"] == "ok" and summary["exit"] == 0
    assert summary["reused"] == ["support/classify[0]", "support/lookup[0]", "support/reply[0]"]
    # A generator step executes (its items stream) and counts as one call, not one per item.
    assert summary["executed"] == ["support/tokens[0]"]
    # classify was reused, so normalize (its child) was not called: that is not a removal.
    assert summary["diverged"] == []
    with Store.open(db) as store:
        assert store.get_run(summary["run"]).replay_of == run_id
    assert json.loads(root_attributes(db, summary["run"])[attr.REPLAY_DIVERGED]) == []


def test_strict_exits_3_for_a_removed_step(tmp_path: Path) -> None:
    db, run_id = record(tmp_path)
    summary = replay_json(tmp_path, db, run_id, "--strict", VARIANT="no_lookup")
    assert summary["exit"] == 3 and summary["status"] == "ok"
    assert summary["diverged"] == [{"path": "support/lookup[0]", "kind": "removed"}]
    # reply ran with other inputs: a changed call, not a removed and an added one.
    assert "support/reply[0]" in summary["executed"]
    stored = json.loads(root_attributes(db, summary["run"])[attr.REPLAY_DIVERGED])
    assert stored == summary["diverged"]

    # Without --strict the same replay succeeds, and the summary says what diverged.
    done = cli("replay", run_id, "--db", db, cwd=tmp_path, VARIANT="no_lookup")
    assert done.returncode == 0, done.stderr
    assert "removed: support/lookup[0] (recorded, not called today)" in done.stdout


def test_strict_exits_3_for_an_added_step_of_a_failed_run(tmp_path: Path) -> None:
    db, run_id = record(tmp_path, BROKEN="1")
    # The fix alone: reply was the failing step, nothing else changed shape.
    fixed = replay_json(tmp_path, db, run_id, "--strict")
    assert fixed["exit"] == 0 and fixed["diverged"] == []
    # A new step before the point where the recording failed is a call the recording lacks.
    added = replay_json(tmp_path, db, run_id, "--strict", VARIANT="added")
    assert added["exit"] == 3
    assert added["diverged"] == [{"path": "support/extra[0]", "kind": "added"}]
    # Failing again takes precedence over divergence.
    again = replay_json(tmp_path, db, run_id, "--strict", VARIANT="added", BROKEN="1")
    assert again["exit"] == 1 and again["status"] == "failed"


# -- forks: --set ----------------------------------------------------------------------------


def test_set_replaces_a_field_of_an_input(tmp_path: Path) -> None:
    db, run_id = record(tmp_path)
    done = cli(
        "replay", run_id, "--db", db, "--set", 'input.ticket.text="my printer jams"', cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert 'result: "other: account of ada"' in done.stdout
    assert 'input.ticket.text = "my printer jams"' in done.stdout
    with Store.open(db) as store:
        new = store.list_runs()[0]
    root = root_attributes(db, new.id)
    assert json.loads(root[attr.REPLAY_EDITS]) == [
        {"target": "input.ticket.text", "value": "my printer jams"}
    ]
    assert json.loads(root[attr.INPUT_VALUE])["ticket"]["text"] == "my printer jams"
    shown = cli("show", new.id, "--db", db, cwd=tmp_path)
    assert 'edited: input.ticket.text = "my printer jams"' in shown.stdout


def test_set_replaces_a_recorded_step_output_before_reuse(tmp_path: Path) -> None:
    db, run_id = record(tmp_path)
    summary = replay_json(
        tmp_path, db, run_id, "--set", 'support/classify[0].output={"label": "sales"}'
    )
    assert summary["exit"] == 0
    assert "support/classify[0]" in summary["reused"]
    assert "support/reply[0]" in summary["executed"]  # its inputs changed with the edit
    with Store.open(db) as store:
        spans = store.spans(summary["run"])
    root = next(s for s in spans if s.parent_id is None)
    assert json.loads(root.attributes[attr.OUTPUT_VALUE]) == "sales: account of ada"
    assert json.loads(root.attributes[attr.REPLAY_EDITS]) == [
        {"target": "support/classify[0].output", "value": {"label": "sales"}}
    ]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("input.ticket=oops", "'oops' is not JSON"),
        ("input.nope=1", "the workflow has no parameter 'nope' (its parameters are ticket)"),
        ("input.ticket.zz.y=1", "ticket has no field 'zz'"),
        ("support/nope[0].output=1", "has no step call 'support/nope[0]'"),
        ("support/classify[0]=1", "expected input.<param>[.<key>...] or <step path>.output"),
    ],
)
def test_a_bad_set_exits_2_with_one_line(tmp_path: Path, option: str, message: str) -> None:
    db, run_id = record(tmp_path)
    done = cli("replay", run_id, "--db", db, "--set", option, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert message in done.stderr
    with Store.open(db) as store:
        assert store.count_runs() == 1  # nothing ran


def test_python_api_takes_inputs_and_outputs(tmp_path: Path) -> None:
    db, run_id = record(tmp_path)
    script = (
        "import spanflow, sys\n"
        f"print(spanflow.replay({run_id!r}, db={str(db)!r}, inputs={{'ticket.customer': 'bo'}},"
        " outputs={'support/classify[0]': {'label': 'vip'}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "vip: account of bo"


# -- what a replay keeps ---------------------------------------------------------------------


def test_a_replay_keeps_the_service_name_and_the_workflow_file(tmp_path: Path) -> None:
    db, run_id = record(tmp_path, OTEL_SERVICE_NAME="support-bot")
    summary = replay_json(tmp_path, db, run_id)
    with Store.open(db) as store:
        original, new = store.get_run(run_id), store.get_run(summary["run"])
    assert original.service == "support-bot"
    assert new.service == "support-bot"
    assert new.workflow_file == original.workflow_file == str(tmp_path / "support.py")


def test_a_generator_closed_early_records_the_items_it_gave(tmp_path: Path) -> None:
    db, run_id = record(tmp_path)
    with Store.open(db) as store:
        spans = store.spans(run_id)
    gen = next(s for s in spans if s.name == "tokens")
    assert gen.attributes[attr.GENERATOR_CLOSED] is True
    assert json.loads(gen.attributes[attr.OUTPUT_VALUE]) == ["t0", "t1"]


# -- replay from a file ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jaeger", "otlp-json"])
def test_export_import_replay_gives_the_same_result(tmp_path: Path, fmt: str) -> None:
    db, run_id = record(tmp_path, BROKEN="1", OTEL_SERVICE_NAME="support-bot")
    here = replay_json(tmp_path, db, run_id)
    assert here["status"] == "ok"
    trace = tmp_path / f"trace-{fmt}.json"
    exported = cli("export", run_id, "--db", db, "--format", fmt, "-o", trace, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr

    fresh = tmp_path / "fresh" / "traces.db"
    fresh.parent.mkdir()
    there = replay_json(tmp_path, fresh, str(trace))
    assert there["status"] == here["status"] == "ok"
    assert (there["reused"], there["executed"], there["diverged"]) == (
        here["reused"],
        here["executed"],
        here["diverged"],
    )
    mine = json.loads(root_attributes(db, here["run"])[attr.OUTPUT_VALUE])
    theirs = json.loads(root_attributes(fresh, there["run"])[attr.OUTPUT_VALUE])
    assert theirs == mine == "billing: account of ada"
    with Store.open(fresh) as store:
        assert store.get_run(run_id).status == "failed"
        assert store.get_run(there["run"]).service == "support-bot"

    # Importing the same file again (by replay or import) adds no second run.
    again = replay_json(tmp_path, fresh, str(trace))
    assert again["status"] == "ok"
    imported = cli("import", trace, "--db", fresh, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "(0 new)" in imported.stdout and "already stored, skipped" in imported.stdout
    with Store.open(fresh) as store:
        runs = store.list_runs()
    assert sum(1 for r in runs if r.id == run_id) == 1
    assert len(runs) == 3  # the imported run and its two replays


def test_a_file_that_is_no_trace_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    done = cli("replay", bad, "--db", tmp_path / "t.db", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "bad.json" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "t.db").exists()


def test_summary_paths_under_a_changed_step_carry_no_marks(tmp_path: Path) -> None:
    db, run_id = record(tmp_path)
    summary = replay_json(tmp_path, db, run_id, "--set", 'input.ticket.text="printer"')
    # classify ran with other inputs; normalize, its child, is shown as the path a user types.
    assert "support/classify[0]/normalize[0]" in summary["executed"]
    assert not any("~" in p for p in summary["executed"] + summary["reused"])
    assert summary["diverged"] == []
