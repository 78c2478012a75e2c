"""Replay in the field, driven through the installed ``spanflow`` command in real subprocesses:
what replay may import, killed runs, packaged apps, edited forks, divergence, files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import spanflow
from spanflow import attributes as attr
from spanflow.exporters.records import SpanRecord
from spanflow.exporters.store import Store

SPANFLOW = Path(sys.executable).parent / "spanflow"
T0 = 1_700_000_000_000_000_000


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


def crafted_store(path: Path, run_id: str, **root_attrs: Any) -> Path:
    root = SpanRecord(
        run_id=run_id,
        span_id="1" * 16,
        name="wf",
        start_ns=T0,
        end_ns=T0 + 1000,
        status="ERROR",
        attributes={
            attr.RUN_ID: run_id,
            attr.STEP_NAME: "wf",
            attr.STEP_TYPE: attr.STEP_TYPE_WORKFLOW,
            attr.INPUT_VALUE: "{}",
            **root_attrs,
        },
    )
    with Store.open(path, readonly=False) as store:
        store.write_spans([root])
    return path


def run_count(db: Path) -> int:
    with Store.open(db) as store:
        return store.count_runs()


# -- what replay may import ------------------------------------------------------------------


EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
import spanflow

@spanflow.workflow
def wf() -> int:
    return 1
"""


def test_a_recorded_file_outside_the_current_directory_is_never_imported(
    tmp_path: Path,
) -> None:
    evil_dir = tmp_path / "x"
    evil_dir.mkdir()
    marker = tmp_path / "marker"
    (evil_dir / "evilmod.py").write_text(EVIL.format(marker=str(marker)))
    run_id = "e1" * 16
    db = crafted_store(
        tmp_path / "t.db",
        run_id,
        **{
            attr.WORKFLOW_ENTRYPOINT: "evilmod:wf",
            attr.WORKFLOW_FILE: str(evil_dir / "evilmod.py"),
        },
    )
    project = tmp_path / "project"
    project.mkdir()
    done = cli("replay", run_id, "--db", db, cwd=project)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "cannot import 'evilmod'" in done.stderr
    assert "is not under it: replay from a directory that contains it" in done.stderr
    assert not marker.exists()
    assert run_count(db) == 1

    # Naming the module does not put the recorded folder on the import path either.
    done = cli("replay", run_id, "--db", db, "--allow", "evilmod", cwd=project)
    assert done.returncode == 2 and not marker.exists(), done.stderr

    # Under the current directory it is the user's own code: imported, called, recorded.
    done = cli("replay", run_id, "--db", db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker.exists() and "result: 1" in done.stdout


def test_a_standard_library_module_is_refused_before_it_is_imported(tmp_path: Path) -> None:
    run_id = "e2" * 16
    db = crafted_store(tmp_path / "t.db", run_id, **{attr.WORKFLOW_ENTRYPOINT: "this:x"})
    done = cli("replay", run_id, "--db", db, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("spanflow: error: refusing to import 'this' for this:x")
    assert "--allow this" in done.stderr and done.stderr.count("\n") == 1
    # `import this` prints the Zen of Python: nothing of it may appear.
    assert "Beautiful is better" not in done.stdout + done.stderr


def test_a_module_on_no_path_is_not_offered_allow(tmp_path: Path) -> None:
    run_id = "e6" * 16
    db = crafted_store(tmp_path / "t.db", run_id, **{attr.WORKFLOW_ENTRYPOINT: "gonemod:wf"})
    done = cli("replay", run_id, "--db", db, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot import 'gonemod'" in done.stderr
    assert "run replay from the project's directory (the one holding 'gonemod')" in done.stderr
    assert "PYTHONPATH" in done.stderr and "--allow" not in done.stderr


def test_a_package_module_is_located_without_importing_its_parents(tmp_path: Path) -> None:
    outside = tmp_path / "site"
    (outside / "pkgx").mkdir(parents=True)
    marker = tmp_path / "parent-imported"
    (outside / "pkgx" / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
    )
    (outside / "pkgx" / "wf.py").write_text("")
    run_id = "e3" * 16
    db = crafted_store(tmp_path / "t.db", run_id, **{attr.WORKFLOW_ENTRYPOINT: "pkgx.wf:wf"})
    project = tmp_path / "project"
    project.mkdir()
    done = cli("replay", run_id, "--db", db, cwd=project, PYTHONPATH=str(outside))
    assert done.returncode == 2, done.stderr
    assert "refusing to import 'pkgx.wf'" in done.stderr and "--allow pkgx" in done.stderr
    assert not marker.exists()


def test_allow_names_a_module_the_user_trusts(tmp_path: Path) -> None:
    outside = tmp_path / "site"
    outside.mkdir()
    (outside / "trusted.py").write_text(
        "import spanflow\n\n@spanflow.workflow\ndef wf() -> int:\n    return 7\n"
    )
    run_id = "e4" * 16
    db = crafted_store(tmp_path / "t.db", run_id, **{attr.WORKFLOW_ENTRYPOINT: "trusted:wf"})
    project = tmp_path / "project"
    project.mkdir()
    refused = cli("replay", run_id, "--db", db, cwd=project, PYTHONPATH=str(outside))
    assert refused.returncode == 2 and "refusing to import 'trusted'" in refused.stderr
    allowed = cli(
        "replay", run_id, "--db", db, "--allow", "trusted", cwd=project, PYTHONPATH=str(outside)
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "result: 7" in allowed.stdout


def test_python_api_takes_allow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "site"
    outside.mkdir()
    (outside / "trusted_api.py").write_text(
        "import spanflow\n\n@spanflow.workflow\ndef wf() -> int:\n    return 8\n"
    )
    run_id = "e5" * 16
    db = crafted_store(tmp_path / "t.db", run_id, **{attr.WORKFLOW_ENTRYPOINT: "trusted_api:wf"})
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(outside))
    try:
        with pytest.raises(spanflow.ReplayError, match="allow=\\['trusted_api'\\]"):
            spanflow.replay(run_id, db=db)
        assert "trusted_api" not in sys.modules
        assert spanflow.replay(run_id, db=db, allow=["trusted_api"]) == 8
    finally:
        sys.modules.pop("trusted_api", None)
        spanflow.runtime.reset_for_tests()


# -- killed runs -----------------------------------------------------------------------------

SIX = """
import os, pathlib, time
import spanflow

HERE = pathlib.Path(__file__).parent

def note(name: str) -> None:
    with (HERE / "calls.log").open("a") as f:
        f.write(name + "\\n")

@spanflow.step
def one(x: int) -> int:
    note("one")
    return x + 1

@spanflow.step
def two(x: int) -> int:
    note("two")
    return x * 2

@spanflow.step
def three(x: int) -> int:
    note("three")
    return x + 3

@spanflow.step
def four(x: int) -> int:
    note("four")
    if os.environ.get("HANG") == "1":
        (HERE / "ready").write_text("3 steps ended")
        time.sleep(120)
    return x * 4

@spanflow.step
def five(x: int) -> int:
    note("five")
    return x + 5

@spanflow.step
def six(x: int) -> int:
    note("six")
    return x * 6

@spanflow.workflow
def six_steps(x: int) -> int:
    return six(five(four(three(two(one(x))))))

if __name__ == "__main__":
    six_steps(1)
"""


def _finished_spans(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with Store.open(db) as store:
            runs = store.list_runs()
            return sum(1 for s in store.spans(runs[0].id) if s.parent_id) if runs else 0
    except spanflow.SpanflowError:
        return 0


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_a_killed_run_resumes_reusing_every_step_that_ended(tmp_path: Path, sig: str) -> None:
    import signal
    import time

    (tmp_path / "six.py").write_text(SIX)
    db = tmp_path / "traces.db"
    proc = subprocess.Popen(
        [sys.executable, "six.py"],
        cwd=tmp_path,
        env=env(SPANFLOW_DB=str(db), HANG="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists() or _finished_spans(db) < 3:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the workflow never reached its fourth step"
            time.sleep(0.05)
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    with Store.open(db) as store:
        (run,) = store.list_runs()
    assert run.status == "crashed" if sig == "SIGKILL" else run.status in ("crashed", "failed")

    shown = cli("show", run.id, "--db", db, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "(orphan)" not in shown.stdout
    root_line = next(ln for ln in shown.stdout.splitlines() if "── six_steps  " in ln)
    # The root, marked as the run reads (crashed or running), with its inputs.
    assert "workflow" in root_line and (run.status in root_line or "running" in root_line)
    assert 'input: {"x":1}' in shown.stdout
    assert all(f"── {name}  " in shown.stdout for name in ("one", "two", "three"))

    (tmp_path / "calls.log").unlink()
    done = cli("replay", run.id, "--db", db, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reused (recorded output, not executed): 3" in done.stdout
    assert "executed: 3" in done.stdout
    assert "result: 198" in done.stdout  # six(five(four(7))): what a run to the end returns
    assert (tmp_path / "calls.log").read_text().split() == ["four", "five", "six"]
    with Store.open(db) as store:
        (replayed,) = store.replays_of(run.id)
    assert replayed.status == "ok"


# -- entrypoints and arguments ---------------------------------------------------------------


def _package(root: Path, flow: str) -> None:
    pkg = root / "shop"
    (pkg / "flows").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "flows" / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("def price(n: int) -> int:\n    return n * 10\n")
    (pkg / "flows" / "order.py").write_text(textwrap.dedent(flow))


ORDER = """
    import os
    import spanflow
    from ..helpers import price

    @spanflow.step
    def quote(n: int) -> int:
        return price(n)

    @spanflow.step
    def pay(total: int) -> str:
        if not os.environ.get("FIXED"):
            raise RuntimeError("card declined")
        return f"paid {total}"

    @spanflow.workflow
    def checkout(n: int) -> str:
        return pay(quote(n))

    if __name__ == "__main__":
        checkout(3)
"""


def _record_module_run(root: Path, db: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "shop.flows.order"],
        cwd=root,
        env=env(SPANFLOW_DB=str(db)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "card declined" in done.stderr, done.stderr
    with Store.open(db) as store:
        (run,) = store.list_runs()
    return run.id


def test_a_package_module_run_with_python_m_replays_with_relative_imports(
    tmp_path: Path,
) -> None:
    _package(tmp_path, ORDER)
    db = tmp_path / "traces.db"
    run_id = _record_module_run(tmp_path, db)
    with Store.open(db) as store:
        run = store.get_run(run_id)
    assert run.entrypoint == "shop.flows.order:checkout" and run.workflow_file is None
    done = cli("replay", run_id, "--db", db, cwd=tmp_path, FIXED="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'result: "paid 30"' in done.stdout
    assert "reused (recorded output, not executed): 1\n  checkout/quote[0]\n" in done.stdout


def test_a_signature_change_is_refused_before_anything_runs(tmp_path: Path) -> None:
    _package(tmp_path, ORDER)
    db = tmp_path / "traces.db"
    run_id = _record_module_run(tmp_path, db)
    order = tmp_path / "shop" / "flows" / "order.py"
    for changed, needle in (
        ("def checkout(n: int, coupon: str) -> str:", "requires parameter 'coupon'"),
        ("def checkout(count: int) -> str:", "recorded argument 'n'"),
        ("def checkout(n: list[str]) -> str:", "argument 'n' no longer fits"),
    ):
        order.write_text(textwrap.dedent(ORDER).replace("def checkout(n: int) -> str:", changed))
        done = cli("replay", run_id, "--db", db, cwd=tmp_path, FIXED="1")
        assert done.returncode == 2, done.stdout + done.stderr
        assert needle in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert run_count(db) == 1


METHOD = """
import spanflow

class Bot:
    @spanflow.workflow
    def answer(self, q: str) -> str:
        return q

    @staticmethod
    @spanflow.workflow
    def echo(q: str) -> str:
        return q

if __name__ == "__main__":
    Bot().answer("hi")
    Bot.echo("hi")
"""


def test_a_workflow_that_needs_self_is_refused_with_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "bot.py").write_text(METHOD)
    db = tmp_path / "traces.db"
    subprocess.run(
        [sys.executable, "bot.py"], cwd=tmp_path, env=env(SPANFLOW_DB=str(db)), check=True
    )
    with Store.open(db) as store:
        runs = {r.entrypoint: r.id for r in store.list_runs()}
    done = cli("replay", runs["bot:Bot.answer"], "--db", db, cwd=tmp_path)
    assert done.returncode == 2
    assert "needs an instance (self)" in done.stderr and "@staticmethod" in done.stderr
    assert run_count(db) == 2
    done = cli("replay", runs["bot:Bot.echo"], "--db", db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
