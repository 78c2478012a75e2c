"""The viewer's compare page: ``/api/compare`` and ``/compare/A/B`` in a real chromium.

The store is made the way a user makes it: a pipeline script that fails part-way runs in its own
process, then ``spanflow replay`` (a subprocess) re-runs it after the fix. The hostile and huge
stores are written straight into a real SQLite store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from spanflow import attributes as attr
from spanflow.exporters.records import SpanRecord
from spanflow.exporters.store import Store
from spanflow.viewer.web import CSP, MAX_COMPARE_STEPS

from tests.viewer.conftest import Served, Watched, screenshot
from tests.viewer.test_web import get_json, request

SPANFLOW = Path(sys.executable).with_name("spanflow")
HOSTILE = '<img src=x onerror="window.__pwned=1">'

PIPELINE = """
from __future__ import annotations
import os
import spanflow

@spanflow.step(kind="llm")
def complete(prompt: str) -> str:
    return "label:" + ("billing" if "refund" in prompt else "other")

@spanflow.step
def classify(ticket: str) -> str:
    return complete("Classify this ticket: " + ticket).split(":", 1)[1]

@spanflow.step
def route(label: str) -> str:
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


@dataclass(frozen=True)
class Stores:
    db: Path
    failed: str  # a failed run, replayed twice after the fix, then checked
    replays: list[str]  # its replays, newest first
    check: str  # the check run of it, newer than its replays
    tainted: str  # another failed run, replayed with HTML in route's output
    tainted_replay: str


def _env(db: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SPANFLOW_", "OTEL_"))}
    return {**clean, "SPANFLOW_DB": str(db), **extra}


def _record(root: Path, db: Path, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "pipeline.py"], cwd=root, env=_env(db, **env), capture_output=True
    )
    assert proc.returncode != 0 or not env.get("ROUTE_BUG"), proc.stdout
    with Store.open(db) as store:
        return store.list_runs(limit=1)[0].id


def _replay(root: Path, db: Path, run: str, **env: str) -> str:
    proc = subprocess.run(
        [str(SPANFLOW), "replay", run, "--json"],
        cwd=root,
        env=_env(db, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout)["run"])


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    root = tmp_path_factory.mktemp("compare")
    (root / "pipeline.py").write_text(PIPELINE)
    db = root / "traces.db"
    failed = _record(root, db, ROUTE_BUG="1")
    first = _replay(root, db, failed)
    second = _replay(root, db, failed)
    checked = subprocess.run(
        [str(SPANFLOW), "check", failed, "--json"],
        cwd=root,
        env=_env(db),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 3, checked.stderr  # the fixed route differs from the recording
    tainted = _record(root, db, ROUTE_BUG="1")
    tainted_replay = _replay(root, db, tainted, TEAM_SUFFIX=HOSTILE)
    check = str(json.loads(checked.stdout)["b"])
    return Stores(db, failed, [second, first], check, tainted, tainted_replay)


@pytest.fixture
def served(stores: Stores, serve_store: Any) -> Served:
    return serve_store(stores.db)  # type: ignore[no-any-return]


def _steps(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["path"]: s for s in data["steps"]}


def _error(served: Served, path: str) -> tuple[int, str]:
    status, headers, body = request(served, path)
    assert headers["content-type"] == "application/json"
    message = json.loads(body)["error"]
    assert isinstance(message, str) and "Traceback" not in message
    return status, message


# -- the API -----------------------------------------------------------------------------------


def test_compare_defaults_to_the_latest_replay_and_marks_each_step(
    served: Served, stores: Stores
) -> None:
    # The check run is newer, but a check is not a replay of the fix: it is not the default.
    data = get_json(served, f"/api/compare?a={stores.failed}")
    assert data["a"] == stores.failed and data["b"] == stores.replays[0]
    run = get_json(served, f"/api/runs/{stores.failed}")
    assert run["latest_replay"] == stores.replays[0]
    assert [r["id"] for r in run["replays"]] == [stores.check, *stores.replays]
    assert data["runs"]["a"]["status"] == "failed" and data["runs"]["b"]["status"] == "ok"
    assert data["runs"]["b"]["replay_of"] == stores.failed
    assert data["counts"] == {"same": 2, "changed": 2, "added": 0, "removed": 0}
    assert data["truncated"] is False and data["steps_total"] == 4
    steps = _steps(data)
    assert list(steps) == [
        "support",
        "support/classify[0]",
        "support/classify[0]/complete[0]",
        "support/route[0]",
    ]
    assert steps["support/classify[0]"]["change"] == "same"
    assert steps["support/classify[0]"]["reused"] is True
    assert steps["support/classify[0]/complete[0]"]["depth"] == 2
    route = steps["support/route[0]"]
    assert route["change"] == "changed" and route["status"] == {"a": "error", "b": "ok"}
    assert route["error"]["a"].startswith("KeyError")
    assert route["output_patch"] == [{"op": "replace", "path": "", "value": "finance"}]
    assert isinstance(route["duration_ms"]["delta"], float)


def test_compare_is_what_spanflow_diff_json_prints(served: Served, stores: Stores) -> None:
    older = stores.replays[1]
    data = get_json(served, f"/api/compare?a={stores.failed}&b={older}")
    assert data["b"] == older
    proc = subprocess.run(
        [str(SPANFLOW), "diff", stores.failed, older, "--json", "--db", str(stores.db)],
        env=_env(stores.db),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    assert {k: data[k] for k in cli} == cli


def test_a_step_comes_with_both_sides_values(served: Served, stores: Stores) -> None:
    data = get_json(served, f"/api/compare?a={stores.failed}&step=support/route[0]")
    step = data["step"]
    assert step["path"] == "support/route[0]" and step["change"] == "changed"
    assert json.loads(step["values"]["a"]["input"]) == {"label": "billing"}
    assert step["values"]["a"]["output"] is None
    assert json.loads(step["values"]["b"]["output"]) == "finance"
    assert step["output_patch"] == [{"op": "replace", "path": "", "value": "finance"}]


def test_unknown_runs_and_steps_are_404(served: Served, stores: Stores) -> None:
    nobody = "f" * 32
    status, message = _error(served, f"/api/compare?a={nobody}")
    assert status == 404 and "no run" in message
    status, message = _error(served, f"/api/compare?a={stores.failed}&b={nobody}")
    assert status == 404 and "no run" in message
    status, message = _error(served, f"/api/compare?a={stores.failed}&step=support/nothing[0]")
    assert status == 404 and "no step" in message
    # A replay has no replay of its own: nothing to compare it with unless b= names one.
    status, message = _error(served, f"/api/compare?a={stores.replays[0]}")
    assert status == 404 and "has no replay" in message and "spanflow replay" in message
    status, _, _ = request(served, f"/compare/{nobody}")
    assert status == 404
    status, _, _ = request(served, f"/compare/{stores.failed}/{nobody}")
    assert status == 404


@pytest.mark.parametrize(
    "query",
    ["", "?b=abcd", "?a=", "?a=xyz", "?a=../../etc/passwd", "?a=" + "a" * 33, "?a=abcd&b=%3Cimg"],
)
def test_bad_parameters_are_400(served: Served, query: str) -> None:
    status, message = _error(served, "/api/compare" + query)
    assert status == 400 and ("a=" in message or "must be a run id" in message)


def test_compare_needs_the_token(served: Served, stores: Stores) -> None:
    for path in (f"/api/compare?a={stores.failed}", f"/compare/{stores.failed}"):
        status, _, body = request(served, path, cookie=None)
        assert status == 403 and b"token" in body
    status, headers, _ = request(served, f"/compare/{stores.failed}/{stores.replays[0]}")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == CSP


def _span(run: str, sid: int, parent: int | None, name: str, **attrs: Any) -> SpanRecord:
    return SpanRecord(
        run_id=run,
        span_id=f"{sid:016x}",
        parent_id=f"{parent:016x}" if parent is not None else None,
        name=name,
        start_ns=1_000_000 + sid * 1000,
        end_ns=1_000_000 + sid * 1000 + 500,
        attributes={
            attr.RUN_ID: run,
            attr.STEP_NAME: name,
            attr.STEP_TYPE: "workflow" if parent is None else "step",
            attr.INPUT_VALUE: "{}",
            **attrs,
        },
    )


def test_a_parent_cycle_terminates_and_is_noted(tmp_path: Path, serve_store: Any) -> None:
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    spans = [
        _span(a, 1, None, "wf"),
        _span(a, 2, 1, "ok"),
        _span(a, 5, 6, "x"),
        _span(a, 6, 5, "y"),
    ]
    spans += [_span(b, 1, None, "wf"), _span(b, 2, 1, "ok"), _span(b, 7, 7, "self")]
    spans += [_span(c, 1, 2, "wf"), _span(c, 2, 1, "loop")]  # even the root is in a cycle
    db = tmp_path / "tangled.db"
    with Store.open(db, readonly=False) as store:
        store.write_spans(spans)
    served = serve_store(db)
    data = get_json(served, f"/api/compare?a={a}&b={b}")
    assert [(s["path"], s["change"]) for s in data["steps"]] == [
        ("wf", "same"),
        ("wf/ok[0]", "same"),
    ]
    assert len(data["notes"]) == 2 and all("cycle" in n for n in data["notes"])
    status, message = _error(served, f"/api/compare?a={a}&b={c}")
    assert status == 422 and "no root" in message


def _added_and_removed(db: Path) -> tuple[str, str]:
    """Run A calls ``old``; run B calls ``new`` instead, whose output is hostile HTML."""
    a, b = "a" * 32, "b" * 32
    hostile = {attr.OUTPUT_VALUE: json.dumps(HOSTILE)}
    spans = [_span(a, 1, None, "wf"), _span(a, 2, 1, "old", **{attr.OUTPUT_VALUE: '"gone"'})]
    spans += [_span(b, 1, None, "wf"), _span(b, 3, 1, "new", **hostile)]
    with Store.open(db, readonly=False) as store:
        store.write_spans(spans)
    return a, b


def test_added_and_removed_steps_and_their_values(tmp_path: Path, serve_store: Any) -> None:
    a, b = _added_and_removed(tmp_path / "moved.db")
    served = serve_store(tmp_path / "moved.db")
    data = get_json(served, f"/api/compare?a={a}&b={b}")
    assert [(s["path"], s["change"]) for s in data["steps"]] == [
        ("wf", "same"),
        ("wf/old[0]", "removed"),
        ("wf/new[0]", "added"),
    ]
    added = get_json(served, f"/api/compare?a={a}&b={b}&step=wf/new[0]&change=added")["step"]
    assert added["values"]["a"] is None and json.loads(added["values"]["b"]["output"]) == HOSTILE
    removed = get_json(served, f"/api/compare?a={a}&b={b}&step=wf/old[0]")["step"]
    assert removed["values"]["b"] is None and removed["values"]["a"]["output"] == '"gone"'
    # An added step is looked up as added: the same path among A's steps is another step.
    status, _ = _error(served, f"/api/compare?a={a}&b={b}&step=wf/new[0]")
    assert status == 404


def test_a_run_that_changes_is_compared_afresh(tmp_path: Path, serve_store: Any) -> None:
    a, b = _added_and_removed(tmp_path / "moved.db")
    served = serve_store(tmp_path / "moved.db")
    before = get_json(served, f"/api/compare?a={a}&b={b}")
    assert before["counts"]["added"] == 1
    # B calls ``old`` as well, later (a running run's next span reaching the store).
    with Store.open(tmp_path / "moved.db", readonly=False) as store:
        store.write_spans([_span(b, 4, 1, "old", **{attr.OUTPUT_VALUE: '"gone"'})])
    after = get_json(served, f"/api/compare?a={a}&b={b}")
    assert after["counts"] == {"same": 2, "changed": 0, "added": 1, "removed": 0}


def test_a_huge_comparison_is_cut_keeping_the_differences(tmp_path: Path, serve_store: Any) -> None:
    a, b = "a" * 32, "b" * 32
    n = MAX_COMPARE_STEPS + 500
    spans: list[SpanRecord] = []
    for run in (a, b):
        spans.append(_span(run, 1, None, "bulk"))
        for i in range(n // 2):
            batch = 2 + 2 * i
            spans.append(_span(run, batch, 1, f"batch_{i}"))
            out = json.dumps("late" if run == b and i == n // 2 - 1 else "done")
            spans.append(_span(run, batch + 1, batch, "item", **{attr.OUTPUT_VALUE: out}))
    db = tmp_path / "huge.db"
    with Store.open(db, readonly=False) as store:
        store.write_spans(spans)
    served = serve_store(db)
    data = get_json(served, f"/api/compare?a={a}&b={b}")
    assert data["truncated"] is True and data["steps_total"] == n + 1
    assert len(data["steps"]) == MAX_COMPARE_STEPS
    assert data["counts"] == {"same": n, "changed": 1, "added": 0, "removed": 0}
    last = f"bulk/batch_{n // 2 - 1}[0]"
    kept = _steps(data)
    assert kept[f"{last}/item[0]"]["change"] == "changed"
    assert last in kept and "bulk" in kept  # the path down to it
    # Every listed step's parent is listed before it.
    seen: set[str] = set()
    for s in data["steps"]:
        parent = s["path"].rsplit("/", 1)[0] if "/" in s["path"] else None
        assert parent is None or parent in seen, s["path"]
        seen.add(s["path"])


# -- the page in chromium -------------------------------------------------------------------

browser_test = pytest.mark.browser


def _open(w: Watched, served: Served, path: str) -> Any:
    response = w.page.goto(served.page_url(path))
    w.page.wait_for_function("() => window.__spanflow && window.__spanflow.ready")
    return response


def _row(w: Watched, path: str) -> Any:
    return w.page.locator(f'.cmp-row[data-path="{path}"]')


@browser_test
def test_a_failed_run_compares_with_its_replay(
    watched: Watched, served: Served, stores: Stores
) -> None:
    page = watched.page
    _open(watched, served, f"/runs/{stores.failed}")
    # Several replays and a check: the button takes the latest replay, the list offers each.
    assert page.locator(".rh-compare .compare-list a").count() == 3
    page.click("text=Compare with replay")
    page.wait_for_url(f"**/compare/{stores.failed}/{stores.replays[0]}")
    page.wait_for_function("() => window.__spanflow && window.__spanflow.compare")
    cards = page.locator(".cmp-run")
    assert stores.failed in cards.nth(0).inner_text() and "failed" in cards.nth(0).inner_text()
    assert stores.replays[0] in cards.nth(1).inner_text()
    assert cards.nth(0).locator("a.cmp-run-link").get_attribute("href") == f"/runs/{stores.failed}"
    route = _row(watched, "support/route[0]")
    assert route.get_attribute("data-change") == "changed"
    assert route.locator(".cmark").inner_text().lower() == "changed"
    cells = route.locator("td").all_inner_texts()
    assert cells[2] == "error" and cells[3] == "ok"
    for path in ("support/classify[0]", "support/classify[0]/complete[0]"):
        assert _row(watched, path).locator(".cmark").inner_text().lower() == "same"
    assert "reused" in _row(watched, "support/classify[0]").inner_text()
    assert "not called" in _row(watched, "support/classify[0]/complete[0]").inner_text()
    # The first difference is open already; click the changed step to be sure it is the one.
    route.click()
    page.wait_for_selector(".cmp-detail .out-patch .op")
    patch = page.inner_text(".cmp-detail .out-patch")
    assert "replace" in patch and "(whole value)" in patch and '"finance"' in patch
    page.wait_for_selector(".cmp-detail .side-b pre.output")
    assert json.loads(page.inner_text(".cmp-detail .side-b pre.output")) == "finance"
    assert json.loads(page.inner_text(".cmp-detail .side-a pre.input")) == {"label": "billing"}
    assert "KeyError" in page.inner_text(".cmp-detail")
    screenshot(page, "compare.png")
    assert watched.errors == []


@browser_test
def test_a_replay_links_back_to_its_original(
    watched: Watched, served: Served, stores: Stores
) -> None:
    page = watched.page
    _open(watched, served, f"/runs/{stores.replays[1]}")
    page.click("text=Compare with original")
    page.wait_for_url(f"**/compare/{stores.failed}/{stores.replays[1]}")
    page.wait_for_function("() => window.__spanflow && window.__spanflow.compare")
    assert _row(watched, "support/route[0]").get_attribute("data-change") == "changed"
    page.click(f'.cmp-run a.cmp-run-link[href="/runs/{stores.replays[1]}"]')
    page.wait_for_function(
        "() => window.__spanflow && window.__spanflow.ready && !window.__spanflow.compare"
    )
    assert page.inner_text(".rh-top .rid") == stores.replays[1]
    assert watched.errors == []


@browser_test
def test_captured_html_on_the_compare_page_is_text(
    watched: Watched, served: Served, stores: Stores
) -> None:
    page = watched.page
    _open(watched, served, f"/compare/{stores.tainted}/{stores.tainted_replay}")
    _row(watched, "support/route[0]").click()
    page.wait_for_selector(".cmp-detail .side-b pre.output")
    shown = json.dumps("finance" + HOSTILE)  # a patch value is shown as its JSON
    assert shown in page.inner_text(".cmp-detail .out-patch")
    assert json.loads(page.inner_text(".cmp-detail .side-b pre.output")) == "finance" + HOSTILE
    _row(watched, "support").click()
    page.wait_for_function(
        "() => document.querySelector('.cmp-detail .cmp-path')?.textContent === 'support'"
    )
    page.wait_for_selector(".cmp-detail .side-b pre.output")
    # The failed workflow returned nothing: its patch replaces the whole value.
    assert '"team":' + shown in page.inner_text(".cmp-detail .out-patch")
    assert json.loads(page.inner_text(".cmp-detail .side-b pre.output"))["team"].endswith(HOSTILE)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert watched.errors == []


@browser_test
def test_a_comparison_that_cannot_be_made_says_why(
    watched: Watched, served: Served, stores: Stores
) -> None:
    page = watched.page
    page.goto(served.page_url(f"/compare/{stores.replays[0]}"))
    page.wait_for_selector(".notice.error")
    text = page.inner_text(".notice.error")
    assert "has no replay" in text and f"spanflow replay {stores.replays[0]}" in text
    assert watched.errors == [] or all("404" in e for e in watched.errors)


@browser_test
def test_added_and_removed_steps_read_without_colour(
    watched: Watched, tmp_path: Path, serve_store: Any
) -> None:
    a, b = _added_and_removed(tmp_path / "moved.db")
    served = serve_store(tmp_path / "moved.db")
    page = watched.page
    _open(watched, served, f"/compare/{a}/{b}")
    assert _row(watched, "wf/old[0]").locator(".cmark").inner_text().lower() == "removed"
    assert _row(watched, "wf/new[0]").locator(".cmark").inner_text().lower() == "added"
    # The first difference (the removed step) opens by itself; its B side is absent.
    page.wait_for_selector(".cmp-detail .side-a pre.output")
    assert "Not in run B." in page.inner_text(".cmp-detail .side-b")
    _row(watched, "wf/new[0]").focus()  # rows take the keyboard as well as clicks
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.cmp-detail .cmp-path')?.textContent === 'wf/new[0]'"
    )
    page.wait_for_selector(".cmp-detail .side-b pre.output")
    assert json.loads(page.inner_text(".cmp-detail .side-b pre.output")) == HOSTILE
    assert "Not in run A." in page.inner_text(".cmp-detail .side-a")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert watched.errors == []
