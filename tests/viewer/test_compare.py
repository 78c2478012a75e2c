"""``spanflow diff`` and ``spanflow check`` driven as a user drives them: real runs recorded by a
script in its own process, the CLI in a subprocess, a real store file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from spanflow.errors import ReplayError
from spanflow.exporters.records import SpanRecord
from spanflow.exporters.store import Store
from spanflow.replayer.check import check
from spanflow.replayer.diff import diff_spans

SPANFLOW = Path(sys.executable).with_name("spanflow")

PIPELINE = """
from __future__ import annotations
import os, pathlib
import spanflow

def _mark(name: str) -> None:
    with pathlib.Path(os.environ["CALLS_FILE"]).open("a") as f:
        f.write(name + "\\n")

def build_prompt(ticket: str) -> str:
    return "Classify this ticket: " + ticket + os.environ.get("PROMPT_EXTRA", "")

@spanflow.step(kind="llm")
def complete(prompt: str) -> str:
    _mark("complete")  # the paid model call
    return "label:" + ("billing" if "refund" in prompt else "other")

@spanflow.step
def classify(ticket: str) -> str:
    return complete(build_prompt(ticket)).split(":", 1)[1]

@spanflow.step
def route(label: str) -> str:
    _mark("route")
    if os.environ.get("ROUTE_BUG") == "1":
        raise KeyError(label)
    return {"billing": "finance", "other": "support"}[label] + os.environ.get("TEAM_SUFFIX", "")

@spanflow.workflow
def support(ticket: str) -> dict[str, str]:
    label = classify(ticket)
    return {"label": label, "team": route(label)}

if __name__ == "__main__":
    print(support("I want a refund"))
"""


@dataclass
class Project:
    root: Path
    db: Path
    calls: Path

    def env(self, **extra: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPANFLOW_", "OTEL_"))}
        return {**clean, "SPANFLOW_DB": str(self.db), "CALLS_FILE": str(self.calls), **extra}

    def record(self, **env: str) -> str:
        """Run the pipeline script; the id of the run it recorded."""
        subprocess.run(
            [sys.executable, "pipeline.py"], cwd=self.root, env=self.env(**env), capture_output=True
        )
        with Store.open(self.db) as store:
            return store.list_runs(limit=1)[0].id

    def cli(
        self, *args: str, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        self.calls.write_text("")
        return subprocess.run(
            [str(SPANFLOW), *args],
            cwd=cwd or self.root,
            env={**self.env(**env), "COLUMNS": "80"},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def called(self) -> list[str]:
        return self.calls.read_text().split()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pipeline.py").write_text(PIPELINE)
    return Project(root, tmp_path / "traces.db", tmp_path / "calls.txt")


def _steps(out: str) -> dict[str, dict[str, Any]]:
    return {s["path"]: s for s in json.loads(out)["steps"]}


def test_diff_of_a_run_and_its_replay(project: Project) -> None:
    failed = project.record(ROUTE_BUG="1")
    replayed = project.cli("replay", failed)
    assert replayed.returncode == 0, replayed.stderr
    proc = project.cli("diff", failed, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["a"] == failed and data["b"] != failed
    steps = _steps(proc.stdout)
    assert list(steps) == [
        "support",
        "support/classify[0]",
        "support/classify[0]/complete[0]",
        "support/route[0]",
    ]
    # The reused steps are the same; the fixed step and the workflow changed.
    assert steps["support/classify[0]"]["change"] == "same"
    assert steps["support/classify[0]"]["reused"] is True
    assert steps["support/classify[0]/complete[0]"]["change"] == "same"
    route = steps["support/route[0]"]
    assert route["change"] == "changed" and route["status"] == {"a": "error", "b": "ok"}
    assert route["error"]["a"].startswith("KeyError")
    assert route["output_patch"] == [{"op": "replace", "path": "", "value": "finance"}]
    assert steps["support"]["change"] == "changed"
    assert isinstance(steps["support"]["duration_ms"]["delta"], float)

    text = project.cli("diff", failed)  # RUN_B defaults to the latest replay
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "2 same, 2 changed, 0 added, 0 removed" in text.stdout
    assert any(line.startswith("~   route[0]") and "error→ok" in line for line in lines)
    assert any(line.startswith("=   classify[0]") and "reused" in line for line in lines)


def test_diff_takes_the_latest_replay_not_a_later_check(project: Project) -> None:
    failed = project.record(ROUTE_BUG="1")
    replay = project.cli("replay", failed, "--json")
    assert replay.returncode == 0, replay.stderr
    checked = project.cli("check", failed, "--json")
    assert checked.returncode == 3, checked.stdout + checked.stderr  # route is fixed: it differs
    replay_id, check_id = json.loads(replay.stdout)["run"], json.loads(checked.stdout)["b"]
    with Store.open(project.db) as store:
        roots = {
            run: next(s for s in store.spans(run) if s.parent_id is None).attributes
            for run in (replay_id, check_id)
        }
        assert [r.id for r in store.replays_of(failed)] == [check_id, replay_id]
    assert roots[check_id]["spanflow.replay.check"] is True
    assert roots[check_id]["spanflow.replay.of"] == failed
    assert "spanflow.replay.check" not in roots[replay_id]
    proc = project.cli("diff", failed, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["b"] == replay_id


def test_diff_without_a_replay_is_a_usage_error(project: Project) -> None:
    run = project.record()
    assert project.cli("check", run).returncode == 0  # a check is not a replay
    proc = project.cli("diff", run)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "has no replay" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_passes_on_an_unchanged_pipeline_without_calling_the_model(
    project: Project,
) -> None:
    run = project.record()
    proc = project.cli("check", run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check passed" in proc.stdout
    assert project.called() == ["route"]  # the llm step was served, the rest ran live


def test_a_passing_check_says_how_many_steps_it_served_and_ran_live(project: Project) -> None:
    run = project.record()
    proc = project.cli("check", run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    head = " ".join(line.strip() for line in proc.stdout.splitlines()[:2])
    assert head.startswith("check passed: run ") and f"matches recording {run}" in head
    assert head.endswith("(1 step served, 2 run live)"), head
    assert all(len(line) <= 80 for line in proc.stdout.splitlines()), proc.stdout
    data = json.loads(project.cli("check", run, "--json").stdout)
    assert data["served"] == ["support/classify[0]/complete[0]"]
    assert data["live"] == ["support/classify[0]", "support/route[0]"]


def test_check_refuses_a_reuse_item_that_selects_nothing(project: Project) -> None:
    run = project.record()
    with Store.open(project.db) as store:
        before = len(store.list_runs())
    proc = project.cli("check", run, "--reuse", "llm,clasify")  # a typo of the step "classify"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "cannot reuse 'clasify'" in proc.stderr
    assert "its kinds: chain, llm; its steps: classify, complete, route, support" in proc.stderr
    assert project.called() == []  # nothing ran live
    with Store.open(project.db) as store:
        assert len(store.list_runs()) == before  # and no check run was recorded
    with pytest.raises(ReplayError, match="cannot reuse 'clasify'"):
        check(run, project.db, ["clasify"])
    # A kind the recording happens not to hold still selects by kind: not an error.
    proc = project.cli("check", run, "--reuse", "retriever,classify")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_exits_3_when_a_live_steps_logic_changes(project: Project) -> None:
    run = project.record()
    proc = project.cli("check", run, "--json", TEAM_SUFFIX="-eu")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] is False and data["refused"] == []
    steps = {s["path"]: s for s in data["steps"]}
    assert steps["support/route[0]"]["output_patch"] == [
        {"op": "replace", "path": "", "value": "finance-eu"}
    ]
    assert steps["support"]["output_patch"] == [
        {"op": "replace", "path": "/team", "value": "finance-eu"}
    ]
    assert steps["support/classify[0]/complete[0]"]["change"] == "same"
    text = project.cli("check", run, TEAM_SUFFIX="-eu")
    assert text.returncode == 3
    assert "check failed" in text.stdout and 'output replace / "finance-eu"' in text.stdout


def test_check_refuses_to_call_a_model_whose_prompt_changed(project: Project) -> None:
    run = project.record()
    proc = project.cli("check", run, PROMPT_EXTRA=" (be brief)")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert project.called() == []  # neither the model nor anything after it ran
    out = proc.stdout
    assert "refused (not run live): support/classify[0]/complete[0]" in out
    assert "its inputs changed" in out
    assert 'input replace /prompt "Classify this ticket: I want a refund (be brief)"' in out
    data = json.loads(project.cli("check", run, "--json", PROMPT_EXTRA=" (be brief)").stdout)
    complete = {s["path"]: s for s in data["steps"]}["support/classify[0]/complete[0]"]
    assert complete["change"] == "changed"
    assert complete["input_patch"] == [
        {
            "op": "replace",
            "path": "/prompt",
            "value": "Classify this ticket: I want a refund (be brief)",
        }
    ]
    assert complete["error"]["b"].startswith("StepRefused")
    assert [r["path"] for r in data["refused"]] == ["support/classify[0]/complete[0]"]


def test_check_reuse_names_a_step_and_an_empty_list_runs_everything_live(
    project: Project,
) -> None:
    run = project.record()
    proc = project.cli("check", run, "--reuse", "classify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert project.called() == ["route"]  # classify served, so its model call never happened
    proc = project.cli("check", run, "--reuse", "")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert project.called() == ["complete", "route"]


def test_a_check_that_cannot_import_the_workflow_says_check_and_what_would_help(
    project: Project, tmp_path: Path
) -> None:
    script = "import pipeline; pipeline.support('I want a refund')"  # the module, not __main__
    subprocess.run([sys.executable, "-c", script], cwd=project.root, env=project.env(), check=True)
    with Store.open(project.db) as store:
        run = store.list_runs(limit=1)[0].id
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Not on the import path at all: --allow could not help, so it is not offered.
    lost = project.cli("check", run, cwd=elsewhere)
    assert lost.returncode == 2, lost.stdout + lost.stderr
    assert lost.stderr.count("\n") == 1 and "Traceback" not in lost.stderr
    assert "cannot import 'pipeline'" in lost.stderr
    assert "run check from the project's directory" in lost.stderr
    assert "PYTHONPATH" in lost.stderr and "--allow" not in lost.stderr
    assert "replay" not in lost.stderr
    # On the import path but outside the current directory: --allow is what it takes.
    outside = project.cli("check", run, cwd=elsewhere, PYTHONPATH=str(project.root))
    assert outside.returncode == 2, outside.stdout + outside.stderr
    assert "refusing to import 'pipeline'" in outside.stderr
    assert "check imports only your own code" in outside.stderr
    assert "--allow pipeline" in outside.stderr and "replay" not in outside.stderr
    allowed = project.cli(
        "check", run, "--allow", "pipeline", cwd=elsewhere, PYTHONPATH=str(project.root)
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert project.called() == ["route"]


def test_check_imports_an_otlp_file_once(project: Project, tmp_path: Path) -> None:
    run = project.record()
    recording = tmp_path / "support.json"
    exported = project.cli("export", run, "--format", "otlp-json", "-o", str(recording))
    assert exported.returncode == 0, exported.stderr
    fresh = tmp_path / "fresh.db"
    for _ in range(2):
        proc = project.cli("check", str(recording), "--db", str(fresh))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    with Store.open(fresh) as store:
        runs = store.list_runs()
    assert sum(1 for r in runs if r.id == run) == 1 and len(runs) == 3
    missing = project.cli("check", str(tmp_path / "nope.json"), "--db", str(fresh))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def _span(sid: int, parent: int | None, name: str, run: str = "a" * 32, **attrs: Any) -> SpanRecord:
    return SpanRecord(
        run_id=run,
        span_id=f"{sid:016x}",
        parent_id=f"{parent:016x}" if parent is not None else None,
        name=name,
        start_ns=sid,
        end_ns=sid + 10,
        attributes={
            "spanflow.step.name": name,
            "spanflow.step.type": "workflow" if parent is None else "step",
            "input.value": "{}",
            **attrs,
        },
    )


def test_diff_terminates_on_a_parent_cycle_and_marks_added_and_removed() -> None:
    a = [_span(1, None, "wf"), _span(2, 1, "old"), _span(5, 6, "loop"), _span(6, 5, "loop")]
    b = [_span(1, None, "wf", run="b" * 32), _span(3, 1, "new", run="b" * 32)]
    result = diff_spans("a" * 32, a, "b" * 32, b)
    assert [(s.path, s.change) for s in result.steps] == [
        ("wf", "same"),
        ("wf/old[0]", "removed"),
        ("wf/new[0]", "added"),
    ]
    assert result.notes and "cycle" in result.notes[0]


def test_the_readme_loop_failed_run_replay_export_check(project: Project, tmp_path: Path) -> None:
    failed = project.record(ROUTE_BUG="1")
    replayed = project.cli("replay", failed)
    assert replayed.returncode == 0, replayed.stderr
    with Store.open(project.db) as store:
        fixed = store.replays_of(failed)[0].id
    recording = tmp_path / "support.json"
    assert (
        project.cli("export", fixed, "--format", "otlp-json", "-o", str(recording)).returncode == 0
    )
    # classify was reused by the replay, so the recording holds its output but not its model
    # call: the check serves it whole rather than refusing the call it cannot see.
    proc = project.cli("check", str(recording), "--db", str(tmp_path / "ci.db"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert project.called() == ["route"]
    changed = project.cli("check", str(recording), "--db", str(tmp_path / "ci.db"), TEAM_SUFFIX="!")
    assert changed.returncode == 3 and "route[0]" in changed.stdout
