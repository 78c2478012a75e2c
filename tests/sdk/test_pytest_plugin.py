"""The pytest plugin, exercised by pytest itself (``pytester``) on a tiny project: a pipeline
recorded by a real process, exported with the CLI, checked by a three-line test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SPANFLOW = Path(sys.executable).with_name("spanflow")

PIPELINE = """
from __future__ import annotations
import os
import spanflow

PROMPT = "Answer politely: {question}"

@spanflow.step(kind="llm")
def ask_model(prompt: str) -> str:
    # No model can run here: "production" (the recording process) sets the reply it gives.
    if "MODEL_REPLY" not in os.environ:
        raise RuntimeError("a test must never reach the model")
    return os.environ["MODEL_REPLY"]

@spanflow.step
def answer(question: str) -> str:
    return ask_model(PROMPT.format(question=question)).strip().capitalize()

@spanflow.workflow
def support(question: str) -> dict[str, str]:
    return {"question": question, "answer": answer(question)}
"""

RECORD = """
import pipeline
print(pipeline.support("can I get a refund?"))
"""

CHECK_TEST = """
def test_support_still_answers(spanflow_check):
    result = spanflow_check("recordings/support.json")
    assert result == {"question": "can I get a refund?", "answer": "Sure, happy to help"}
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(pipeline=PIPELINE, record=RECORD)
    db = pytester.path / "prod.db"
    env = {"SPANFLOW_DB": str(db), "PATH": "/usr/bin:/bin", "MODEL_REPLY": "  sure, happy to help "}
    proc = subprocess.run(
        [sys.executable, "record.py"], cwd=pytester.path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    runs = subprocess.run(
        [str(SPANFLOW), "runs", "--json", "--db", str(db)], capture_output=True, text=True
    )
    (run,) = json.loads(runs.stdout)
    (pytester.path / "tests" / "recordings").mkdir(parents=True)
    target = "tests/recordings/support.json"
    exported = subprocess.run(
        [
            str(SPANFLOW),
            "export",
            run["id"],
            "--format",
            "otlp-json",
            "--db",
            str(db),
            "-o",
            target,
        ],
        cwd=pytester.path,
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr
    return pytester


def test_a_check_passes_on_the_code_that_made_the_recording(project: pytest.Pytester) -> None:
    project.makepyfile(**{"tests/test_support": CHECK_TEST})
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_changed_prompt_fails_with_the_diff_and_the_runs(project: pytest.Pytester) -> None:
    project.makepyfile(**{"tests/test_support": CHECK_TEST})
    source = project.path / "pipeline.py"
    source.write_text(source.read_text().replace("Answer politely", "Answer briefly"))
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "check failed" in out
    assert "refused (not run live): support/answer[0]/ask_model[0]" in out
    assert 'input replace /prompt "Answer briefly: can I get a refund?"' in out
    assert "a test must never reach the model" not in out  # the model was not called
    # The report names the runs the test made and how to see each.
    assert "spanflow runs" in out
    result.stdout.fnmatch_lines(["*support ok*", "*spanflow show * --db *traces.db"])
    assert "support failed (spanflow.errors.StepRefused: support/answer[0]/ask_model[0]" in out


def test_spanflow_store_lists_the_runs_a_test_made(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(pipeline=PIPELINE)
    pytester.makepyfile(
        test_store="""
import spanflow

@spanflow.workflow
def hello(name: str) -> str:
    return "hi " + name

def test_store(spanflow_store, tmp_path):
    assert spanflow_store.runs() == []
    assert hello("ann") == "hi ann"
    (run,) = spanflow_store.runs()
    assert run.workflow == "hello" and run.status == "ok"
    assert spanflow_store.path.is_relative_to(tmp_path)

def test_fails_after_recording(spanflow_store):
    hello("bob")
    assert False, "boom"
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*spanflow runs*", "* hello ok", "*spanflow show * --db *"])
