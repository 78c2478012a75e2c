"""The web viewer: its HTTP surface, and the page itself in a real chromium.

The store is made by running real spanflow workflows (a failing step, a retried step, a State that
changes, parallel branches, hostile captured text), then replaying the failed run after the fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import spanflow
import tenacity
from opentelemetry.sdk.trace import TracerProvider
from spanflow import attributes as attr
from spanflow import runtime
from spanflow.errors import ConfigurationError, StoreError
from spanflow.exporters.records import SpanRecord
from spanflow.exporters.store import Store
from spanflow.viewer.web import CSP, MAX_SPANS, make_server, start_viewer

from tests.viewer.conftest import ARTIFACTS, Served, Watched, screenshot

RAW = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
TONE = "<script>window.__pwned=3</script>"
REFUSAL = 'model refused: <img src=x onerror="window.__pwned=4">'
BIG_SPANS = 10_000
REPO = Path(__file__).resolve().parents[2]
DOCS_SHOT = REPO / "docs" / "viewer.png"
EXAMPLE = REPO / "examples" / "support_pipeline.py"


# -- the pipeline the store is made of -------------------------------------------------------


class Ticket(spanflow.State):
    text: str = ""
    labels: list[str] = []
    priority: int = 0


_broken = {"respond": True}
_classify_calls = {"n": 0}


@spanflow.step
def ingest(ticket: Ticket, raw: str) -> int:
    ticket.text = raw
    return len(raw)


@spanflow.step(retries=2, retry=tenacity.wait_none())
def classify(ticket: Ticket) -> str:
    _classify_calls["n"] += 1
    if _classify_calls["n"] == 1:
        raise ConnectionError("classifier unavailable")
    ticket.labels.append("billing")
    return "billing"


@spanflow.step
async def lookup(source: str) -> str:
    await asyncio.sleep(0.005)
    return f"{source}:found"


@spanflow.step
def enrich(ticket: Ticket) -> list[str]:
    async def fan_out() -> list[str]:
        return list(await spanflow.parallel(lookup("crm"), lookup("kb"), lookup("orders")))

    found = asyncio.run(fan_out())
    ticket.labels.extend(found)
    return found


@spanflow.step
def respond(ticket: Ticket, tone: str) -> str:
    ticket.priority = 2
    if _broken["respond"]:
        raise ValueError(REFUSAL)
    return f"Thanks, we are on it ({len(tone)})"


@spanflow.workflow
def support(ticket: Ticket, raw: str) -> str:
    ingest(ticket, raw)
    classify(ticket)
    enrich(ticket)
    return respond(ticket, tone=TONE)


@spanflow.step
def count_rows(day: int) -> int:
    return day * 10


@spanflow.workflow
def nightly(day: int) -> int:
    return count_rows(day)


EXPECTED_STATES = [
    {"text": "", "labels": [], "priority": 0},
    {"text": RAW, "labels": [], "priority": 0},
    {"text": RAW, "labels": ["billing"], "priority": 0},
    {"text": RAW, "labels": ["billing", "crm:found", "kb:found", "orders:found"], "priority": 0},
    {"text": RAW, "labels": ["billing", "crm:found", "kb:found", "orders:found"], "priority": 2},
]


@dataclass(frozen=True)
class Runs:
    db: Path
    failed: str
    replay: str
    nightly: list[str]
    big: str


def _big_run(db: Path) -> str:
    """A 10,000-span run (root + 1,111 steps of 8 children), written straight into the store."""
    t0 = time.time_ns()
    run_id = os.urandom(16).hex()
    ids = iter(range(1, 1_000_000))

    def span(name: str, parent: str | None, start: int, end: int, **extra: Any) -> SpanRecord:
        attrs = {attr.RUN_ID: run_id, attr.STEP_NAME: name, **extra}
        return SpanRecord(
            run_id=run_id,
            span_id=f"{next(ids):016x}",
            parent_id=parent,
            name=name,
            start_ns=start,
            end_ns=end,
            attributes=attrs,
        )

    root = span("bulk_import", None, t0, t0 + 2_000_000_000, **{attr.STEP_TYPE: "workflow"})
    spans = [root]
    for i in range(1_111):
        start = t0 + i * 1_800_000
        batch = span(
            f"batch_{i}", root.span_id, start, start + 1_700_000, **{attr.STEP_TYPE: "step"}
        )
        spans.append(batch)
        for j in range(8):
            s = start + j * 200_000
            spans.append(
                span(f"item_{i}_{j}", batch.span_id, s, s + 150_000, **{attr.STEP_TYPE: "step"})
            )
    assert len(spans) == BIG_SPANS
    with Store.open(db, readonly=False) as store:
        store.write_spans(spans)
    return run_id


def _record_runs(db: Path) -> tuple[list[str], str, str]:
    """Three nightly runs, a failed support run, and its replay after the fix."""
    nightly_ids = []
    for day in (1, 2, 3):
        nightly(day)
        spanflow.flush()
        with Store.open(db) as store:
            nightly_ids.append(store.list_runs(limit=1)[0].id)
    with pytest.raises(ValueError):
        support(Ticket(), RAW)
    spanflow.flush()
    with Store.open(db) as store:
        failed = store.list_runs(status="failed", limit=1)[0].id
    _broken["respond"] = False
    try:
        spanflow.replay(failed, db=db)
    finally:
        _broken["respond"] = True
    spanflow.flush()
    with Store.open(db) as store:
        replay = store.replays_of(failed)[0].id
    return nightly_ids, failed, replay


def in_thread(fn: Any, *args: Any) -> Any:
    """Call ``fn`` in a fresh thread: playwright's sync API keeps an event loop in this one."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(60)
    if errors:
        raise errors[0]
    return result[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    db = tmp_path_factory.mktemp("viewer") / "traces.db"
    provider = TracerProvider()
    spanflow.configure(db=db, tracer_provider=provider)
    try:
        nightly_ids, failed, replay = in_thread(_record_runs, db)
    finally:
        runtime.reset_for_tests()
        provider.shutdown()
    big = _big_run(db)
    yield Runs(db=db, failed=failed, replay=replay, nightly=nightly_ids, big=big)


@pytest.fixture
def served(runs: Runs, serve_store: Any) -> Served:
    return serve_store(runs.db)  # type: ignore[no-any-return]


def request(
    served: Served,
    path: str,
    *,
    host: str | None = None,
    method: str = "GET",
    cookie: str | None = "",
) -> tuple[int, dict[str, str], bytes]:
    """One request; it carries the viewer's cookie unless ``cookie`` is None (or another one)."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    headers = {"Host": host or f"127.0.0.1:{served.port}"}
    if cookie is not None:
        headers["Cookie"] = cookie or served.cookie
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(served: Served, path: str) -> Any:
    status, headers, body = request(served, path)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


# -- server: setup and HTTP surface ----------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_refuses_to_listen_beyond_loopback(runs: Runs, host: str) -> None:
    with pytest.raises(ConfigurationError, match="loopback"):
        make_server(runs.db, host=host)


def test_localhost_binds_loopback(runs: Runs) -> None:
    server = make_server(runs.db, host="localhost")
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert server.url.startswith("http://127.0.0.1:")
    finally:
        server.server_close()


def test_busy_port_is_a_configuration_error(runs: Runs, served: Served) -> None:
    with pytest.raises(ConfigurationError, match="--port"):
        make_server(runs.db, port=served.port)


def test_missing_store_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    with pytest.raises(StoreError, match="does not exist"):
        make_server(missing)
    assert list(tmp_path.iterdir()) == []


def test_foreign_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="not a spanflow store"):
        make_server(other)
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/app.css", "/api/runs", "/nope"])
def test_every_response_carries_the_security_headers(served: Served, path: str) -> None:
    _, headers, _ = request(served, path)
    assert headers["content-security-policy"] == CSP
    assert "default-src 'none'" in CSP and "script-src 'self'" in CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_api_responses_are_not_cached(served: Served) -> None:
    _, headers, _ = request(served, "/api/runs")
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("host", ["evil.example:80", "evil.example", "127.0.0.1:1", ""])
def test_foreign_host_header_is_refused(served: Served, host: str) -> None:
    # What a DNS-rebinding page would send: our address, someone else's name.
    status, _, body = request(served, "/api/runs", host=host or " ")
    assert status == 403
    assert "Host" in json.loads(body)["error"]


def test_localhost_host_header_is_accepted(served: Served) -> None:
    status, _, _ = request(served, "/api/runs", host=f"localhost:{served.port}")
    assert status == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_get_and_head(served: Served, method: str) -> None:
    status, headers, _ = request(served, "/api/runs", method=method)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_head_sends_headers_without_body(served: Served) -> None:
    status, headers, body = request(served, "/", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) > 0


def test_unknown_run_is_404(served: Served) -> None:
    status, headers, body = request(served, "/api/runs/" + "ab" * 16)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert "no run" in json.loads(body)["error"]
    status, _, page = request(served, "/runs/" + "ab" * 16)
    assert status == 404 and b"app.js" in page
    assert request(served, "/api/runs/not-hex")[0] == 404


@pytest.mark.parametrize(
    "path", ["/static/../web.py", "/static/%2e%2e/web.py", "/static/index.htm", "/web.py"]
)
def test_only_the_page_files_are_served(served: Served, path: str) -> None:
    status, _, body = request(served, path)
    assert status == 404
    assert b"__future__" not in body


@pytest.mark.parametrize("query", ["status=broken", "limit=ten", "offset=x"])
def test_bad_query_is_400(served: Served, query: str) -> None:
    assert request(served, "/api/runs?" + query)[0] == 400


def test_run_list_is_newest_first_with_total_and_pages(served: Served, runs: Runs) -> None:
    data = get_json(served, "/api/runs?limit=2")
    assert data["total"] == 6
    assert [r["id"] for r in data["runs"]] == [runs.big, runs.replay]
    page2 = get_json(served, "/api/runs?limit=2&offset=2")
    assert [r["id"] for r in page2["runs"]] == [runs.failed, runs.nightly[2]]
    assert page2["offset"] == 2 and page2["limit"] == 2
    first = data["runs"][0]
    assert set(first) >= {"id", "workflow", "status", "started_at", "duration_ms", "error"}


def test_run_list_filters(served: Served, runs: Runs) -> None:
    failed = get_json(served, "/api/runs?status=failed")
    assert [r["id"] for r in failed["runs"]] == [runs.failed]
    assert failed["total"] == 1
    assert failed["runs"][0]["error"] == f"ValueError: {REFUSAL}"
    wf = get_json(served, "/api/runs?workflow=nightly")
    assert [r["id"] for r in wf["runs"]] == runs.nightly[::-1]
    both = get_json(served, "/api/runs?workflow=nightly&status=failed")
    assert both["runs"] == [] and both["total"] == 0


def test_run_detail_has_spans_and_replay_links(served: Served, runs: Runs) -> None:
    data = get_json(served, f"/api/runs/{runs.failed}")
    assert data["run"]["id"] == runs.failed and data["run"]["status"] == "failed"
    names = [s["name"] for s in data["spans"]]
    assert names[0] == "support"
    assert {"ingest", "classify", "classify #1", "classify #2", "enrich", "respond"} <= set(names)
    assert names.count("lookup") == 3
    assert [r["id"] for r in data["replays"]] == [runs.replay]
    assert data["replay_of"] is None
    assert data["replay_command"] == f"spanflow replay {runs.failed} --db {runs.db}"
    assert data["names"]["input"] == attr.INPUT_VALUE
    root = data["spans"][0]
    assert root["start"] >= 0 and root["end"] > root["start"]
    replay = get_json(served, f"/api/runs/{runs.replay}")
    assert replay["replay_of"]["id"] == runs.failed
    assert replay["run"]["status"] == "ok"


def test_run_prefix_is_accepted(served: Served, runs: Runs) -> None:
    assert get_json(served, f"/api/runs/{runs.failed[:10]}")["run"]["id"] == runs.failed


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_serving_never_modifies_the_store(runs: Runs, tmp_path: Path, serve_store: Any) -> None:
    copy = tmp_path / "copy" / "traces.db"
    copy.parent.mkdir()
    shutil.copy(runs.db, copy)
    before = _fingerprint(copy.parent)
    served = serve_store(copy)
    for path in ("/", "/api/runs", f"/api/runs/{runs.failed}", "/api/runs?status=failed"):
        assert request(served, path)[0] == 200
    assert _fingerprint(copy.parent) == before


def test_serve_prints_the_url_and_stops_on_ctrl_c(runs: Runs) -> None:
    code = "import sys, pathlib; from spanflow.viewer.web import serve; serve(pathlib.Path(sys.argv[1]), port=0)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(runs.db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "spanflow viewer for" in line and str(runs.db) in line
        url = line.split(" at ")[1].split()[0]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]{40,}", url), url
        base, token = url.split("/?token=")
        with urllib.request.urlopen(f"{base}/api/runs?limit=1&token={token}", timeout=10) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_store_being_written_is_seen_fresh(tmp_path: Path, serve_store: Any) -> None:
    db = tmp_path / "live.db"
    provider = TracerProvider()
    spanflow.configure(db=db, tracer_provider=provider)
    try:
        nightly(1)
        spanflow.flush()
        served = serve_store(db)
        assert get_json(served, "/api/runs")["total"] == 1
        nightly(2)
        spanflow.flush()
        assert get_json(served, "/api/runs")["total"] == 2
    finally:
        runtime.reset_for_tests()
        provider.shutdown()


@pytest.mark.slow
def test_100k_runs_list_fast(tmp_path: Path, serve_store: Any) -> None:
    db = tmp_path / "many.db"
    t0 = time.time_ns() - 100_000 * 1_000_000
    records = []
    for i in range(100_000):
        run_id = f"{i:032x}"
        failed = i % 50 == 0
        # model_construct: these records are known-good, and validating 100k of them is slow.
        records.append(
            SpanRecord.model_construct(
                run_id=run_id,
                span_id=f"{i + 1:016x}",
                name=f"wf{i % 7}",
                status="ERROR" if failed else "UNSET",
                status_message="ValueError: boom" if failed else None,
                start_ns=t0 + i * 1_000_000,
                end_ns=t0 + i * 1_000_000 + 500_000,
                attributes={attr.RUN_ID: run_id, attr.STEP_NAME: f"wf{i % 7}"},
            )
        )
    with Store.open(db, readonly=False) as store:
        store.write_spans(records)
    served = serve_store(db)
    timings = {}
    for query in ("", "status=failed", "workflow=wf3", "offset=99950", "status=failed&offset=1900"):
        start = time.perf_counter()
        data = get_json(served, "/api/runs?" + query)
        timings[query] = time.perf_counter() - start
        assert data["runs"], query
    assert data["total"] == 2_000
    assert get_json(served, "/api/runs")["runs"][0]["id"] == f"{99_999:032x}"
    assert max(timings.values()) < 0.5, timings


# -- the page in a real browser --------------------------------------------------------------

browser_test = pytest.mark.browser


def open_run(w: Watched, served: Served, run_id: str) -> Any:
    response = w.page.goto(served.page_url(f"/runs/{run_id}"))
    w.page.wait_for_function("() => window.__spanflow && window.__spanflow.ready")
    return response


def panel_text(w: Watched) -> str:
    # textContent: section titles are upper-cased by CSS only.
    return str(w.page.locator(".detail").text_content())


@browser_test
def test_run_list_shows_runs_and_filters_failed(
    watched: Watched, served: Served, runs: Runs
) -> None:
    page = watched.page
    response = page.goto(served.page_url("/"))
    assert response.headers["content-security-policy"] == CSP
    page.wait_for_selector("tr.run-row")
    assert page.locator("tr.run-row").count() == 6
    assert page.locator("tr.run-row").first.get_attribute("data-run-id") == runs.big
    page.click("a.seg-btn[data-status=failed]")
    page.wait_for_function("() => document.querySelectorAll('tr.run-row').length === 1")
    row = page.locator("tr.run-row")
    assert row.get_attribute("data-run-id") == runs.failed
    assert page.url.endswith("/?status=failed")
    # Captured text is text: the error reads literally, nothing was turned into elements.
    assert row.locator(".c-error").inner_text() == f"ValueError: {REFUSAL}"
    assert page.locator("img").count() == 0
    screenshot(page, "run-list-failed.png")
    row.click()
    page.wait_for_url(f"**/runs/{runs.failed}")
    page.wait_for_function("() => window.__spanflow && window.__spanflow.ready")
    assert watched.errors == []


@browser_test
def test_run_list_pages(watched: Watched, served: Served, runs: Runs) -> None:
    page = watched.page
    page.goto(served.page_url("/?limit=4"))
    page.wait_for_selector("tr.run-row")
    assert page.inner_text(".pager .count") == "1–4 of 6"
    page.click(".pager a.next")
    page.wait_for_function(
        "() => document.querySelector('.pager .count')?.textContent === '5–6 of 6'"
    )
    ids = [page.locator("tr.run-row").nth(i).get_attribute("data-run-id") for i in range(2)]
    assert ids == [runs.nightly[1], runs.nightly[0]]
    page.click(".pager a.prev")
    page.wait_for_function(
        "() => document.querySelector('.pager .count')?.textContent === '1–4 of 6'"
    )
    page.fill(".wf-filter input", "nightly")
    page.press(".wf-filter input", "Enter")
    page.wait_for_function(
        "() => document.querySelector('.pager .count')?.textContent === '1–3 of 3'"
    )
    assert watched.errors == []


@browser_test
def test_failed_run_opens_on_the_failed_step(watched: Watched, served: Served, runs: Runs) -> None:
    page = watched.page
    response = open_run(watched, served, runs.failed)
    assert response.status == 200
    assert response.headers["content-security-policy"] == CSP
    assert page.inner_text(".wf-row.sel .nm") == "respond"
    text = panel_text(watched)
    assert "respond" in page.inner_text(".d-title")
    assert f"ValueError: {REFUSAL}" in text
    inputs = json.loads(page.inner_text(".detail .inputs pre"))
    assert inputs["tone"] == TONE
    assert inputs["ticket"]["text"] == RAW
    assert "raise ValueError(REFUSAL)" in page.inner_text(".detail pre.stack")
    assert page.inner_text(".rh-error .msg") == f"ValueError: {REFUSAL}"
    assert page.locator(".detail .inputs pre").is_visible()
    assert page.locator(".detail .error-sec").is_visible()
    screenshot(page, "failed-run.png")
    assert watched.errors == []


@browser_test
def test_demo_failure_screenshot_for_the_readme(watched: Watched) -> None:
    # The README shows the run `make demo` produces: the example pipeline failing part-way.
    # A short store path reads better in the picture than pytest's tmp_path.
    with tempfile.TemporaryDirectory(prefix="spanflow-demo-") as tmp:
        db = Path(tmp) / "traces.db"
        result = subprocess.run(
            [sys.executable, str(EXAMPLE)],
            env={**os.environ, "SPANFLOW_DB": str(db)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, result.stderr
        with Store.open(db) as store:
            failed = store.list_runs(status="failed")
        assert len(failed) == 1 and failed[0].error is not None
        served = Served(db)
        try:
            page = watched.page
            open_run(watched, served, failed[0].id)
            selected = page.inner_text(".wf-row.sel .nm")
            assert page.inner_text(".d-title h2") == selected
            assert page.locator(".detail .error-sec").is_visible()
            assert page.locator(".detail .inputs pre").is_visible()
            assert failed[0].error in page.inner_text(".rh-error .msg")
            shot = screenshot(page, "demo-failed-run.png")
        finally:
            served.close()
    # The README's picture is refreshed on request only: a test run must not dirty the checkout.
    if os.environ.get("SPANFLOW_UPDATE_DOCS") == "1":
        shutil.copy(shot, DOCS_SHOT)
    assert watched.errors == []


@browser_test
def test_planted_html_never_executes(watched: Watched, served: Served, runs: Runs) -> None:
    page = watched.page
    open_run(watched, served, runs.failed)
    # Visit every span so everything captured has been on screen at least once.
    for name in ("ingest", "classify", "enrich", "support", "respond"):
        page.locator(".wf-row", has=page.locator(".nm", has_text=name)).first.click()
        page.wait_for_function(
            "n => document.querySelector('.d-title h2')?.textContent === n", arg=name
        )
    page.click("button[data-tab=state]")
    page.click("button[aria-label=Last]")
    assert json.loads(page.inner_text(".pb-state"))["text"] == RAW
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    scripts = page.eval_on_selector_all("script", "els => els.map(e => e.getAttribute('src'))")
    assert scripts == ["/static/app.js"]
    page.goto(served.url + "/?status=failed")
    page.wait_for_selector("tr.run-row")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0
    assert watched.errors == []


@browser_test
def test_clicking_a_span_updates_the_panel(watched: Watched, served: Served, runs: Runs) -> None:
    page = watched.page
    open_run(watched, served, runs.failed)
    page.locator(".wf-row", has=page.locator(".nm", has_text="classify")).first.click()
    page.wait_for_function(
        "() => document.querySelector('.d-title h2')?.textContent === 'classify'"
    )
    text = panel_text(watched)
    assert "Retries · 2 attempts" in text
    assert "ConnectionError: classifier unavailable" in text
    assert json.loads(page.inner_text(".detail .output pre")) == "billing"
    assert page.inner_text(".wf-row.sel .nm") == "classify"
    # An attempt row is its own span, reachable from the retries table.
    page.click(".detail table.grid a.span-link >> text=#1")
    page.wait_for_function(
        "() => document.querySelector('.d-title h2')?.textContent === 'classify #1'"
    )
    assert "ConnectionError" in panel_text(watched)
    # Parallel branches are three sibling rows under enrich.
    lookups = page.locator(".wf-row", has=page.locator(".nm", has_text="lookup"))
    assert lookups.count() == 3
    assert watched.errors == []


@browser_test
def test_state_playback_steps_through_the_run(watched: Watched, served: Served, runs: Runs) -> None:
    page = watched.page
    open_run(watched, served, runs.failed)
    page.click("button[data-tab=state]")
    assert "4 steps" in page.inner_text("button[data-tab=state]")

    def state() -> Any:
        return json.loads(page.inner_text(".pb-state"))

    assert state() == EXPECTED_STATES[0]
    steps = ["ingest", "classify", "enrich", "respond"]
    for i, name in enumerate(steps, start=1):
        page.click("button[aria-label='Next step']")
        assert f"Step {i} of 4" in page.inner_text(".pb-label")
        assert name in page.inner_text(".pb-label")
        assert state() == EXPECTED_STATES[i], name
        # The waterfall follows along.
        assert page.inner_text(".wf-row.sel .nm") == name
    assert page.is_disabled("button[aria-label='Next step']")
    assert "replace" in page.inner_text(".pb-ops") and "/priority" in page.inner_text(".pb-ops")
    screenshot(page, "state-playback.png")
    page.click("button[aria-label='Previous step']")
    assert state() == EXPECTED_STATES[3]
    page.click("button[aria-label=First]")
    assert state() == EXPECTED_STATES[0]
    assert watched.errors == []


@browser_test
def test_replay_links_and_command(watched: Watched, served: Served, runs: Runs) -> None:
    page = watched.page
    open_run(watched, served, runs.failed)
    command = f"spanflow replay {runs.failed} --db {runs.db}"
    assert page.input_value("#replay-cmd") == command
    page.click(".rh-cmd button.copy")
    page.wait_for_function(
        "() => document.querySelector('.rh-cmd button.copy').textContent === 'Copied'"
    )
    assert page.evaluate("navigator.clipboard.readText()") == command
    page.click(f".rh-links .replays a[href='/runs/{runs.replay}']")
    page.wait_for_url(f"**/runs/{runs.replay}")
    page.wait_for_function("() => window.__spanflow && window.__spanflow.ready")
    assert page.locator(".rh-links .replay-of a").get_attribute("href") == f"/runs/{runs.failed}"
    cached = page.locator(".wf-row.cached .nm").all_inner_texts()
    assert {"ingest", "classify", "enrich"} <= set(cached)
    assert "respond" not in cached
    screenshot(page, "replay-run.png")
    assert watched.errors == []


@browser_test
def test_10000_spans_render_under_a_second(watched: Watched, served: Served, runs: Runs) -> None:
    page = watched.page
    start = time.perf_counter()
    open_run(watched, served, runs.big)
    wall = time.perf_counter() - start
    info = page.evaluate("window.__spanflow")
    assert info["spans"] == BIG_SPANS
    assert info["renderMs"] < 1000, info
    # Only the rows on screen exist; the rest are drawn as the list scrolls.
    assert info["rows"] < 200
    page.evaluate("document.querySelector('.wf-body').scrollTop = 1e9")
    page.wait_for_function(
        "() => document.querySelector('.wf-rows').lastElementChild.textContent.includes('item_1110_7')"
    )
    print(f"10k spans: render {info['renderMs']:.0f} ms in the page, {wall * 1000:.0f} ms load")
    screenshot(page, "10k-spans.png")
    assert watched.errors == []


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return rng.randrange(5)
    if kind == 1:
        return rng.choice(["a", "b", "x/y", "t~1", ""])
    if kind == 2:
        return rng.choice([None, True, 1.5])
    if kind in (3, 4):
        keys = rng.sample(["a", "b", "c", "x/y", "m~n", ""], rng.randrange(4))
        return {k: _random_json(rng, depth + 1) for k in keys}
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


@browser_test
def test_page_json_patch_agrees_with_python_jsonpatch(watched: Watched, served: Served) -> None:
    # The playback's JSON Patch, run in the page, against the reference implementation.
    rng = random.Random(6902)
    cases: list[tuple[Any, list[dict[str, Any]]]] = []
    for _ in range(300):
        before, after = _random_json(rng), _random_json(rng)
        if rng.random() < 0.5 and isinstance(before, (dict, list)):
            after = json.loads(json.dumps(before))
            if isinstance(after, dict):
                after["moved"] = after.pop(next(iter(after)), 1) if after else 1
            else:
                after.reverse()
        cases.append((before, jsonpatch.make_patch(before, after).patch))
    cases += [
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3}]),
        ({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}]),
        ({"a": {"b": 1}}, [{"op": "move", "from": "/a/b", "path": "/b"}]),
        ({"a/b": {"~": 1}}, [{"op": "replace", "path": "/a~1b/~0", "value": 2}]),
        ({"a": 1}, [{"op": "test", "path": "/a", "value": 1}, {"op": "remove", "path": "/a"}]),
        ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]),
    ]
    failing: list[tuple[Any, list[dict[str, Any]]]] = [
        ({"a": 1}, [{"op": "test", "path": "/a", "value": 2}]),
        ({"a": 1}, [{"op": "remove", "path": "/b"}]),
        ({"a": [1]}, [{"op": "add", "path": "/a/5", "value": 0}]),
        ({"a": 1}, [{"op": "replace", "path": "/b", "value": 0}]),
        ({"a": 1}, [{"op": "add", "path": "a", "value": 0}]),
    ]
    page = watched.page
    page.goto(served.page_url("/"))
    results = page.evaluate(
        """async (cases) => {
            const { applyPatch } = await import("/static/state.js");
            return cases.map(([doc, ops]) => {
                try { return { ok: true, value: applyPatch(doc, ops) }; }
                catch (e) { return { ok: false }; }
            });
        }""",
        [list(c) for c in cases + failing],
    )
    for (doc, ops), got in zip(cases, results, strict=False):
        assert got == {"ok": True, "value": jsonpatch.apply_patch(doc, ops)}, (doc, ops)
    for (doc, ops), got in zip(failing, results[len(cases) :], strict=True):
        with pytest.raises((jsonpatch.JsonPatchException, jsonpatch.JsonPointerException)):
            jsonpatch.apply_patch(doc, ops)
        assert got == {"ok": False}, (doc, ops)
    assert watched.errors == []


@browser_test
def test_unknown_run_page_says_so(watched: Watched, served: Served) -> None:
    page = watched.page
    response = page.goto(served.page_url(f"/runs/{'cd' * 16}"))
    assert response.status == 404
    page.wait_for_selector(".notice.error")
    assert "No such run" in page.inner_text(".notice.error")


@browser_test
def test_running_run_refreshes_itself(watched: Watched, tmp_path: Path, serve_store: Any) -> None:
    db = tmp_path / "running.db"
    go = threading.Event()

    @spanflow.step
    def prepare() -> int:
        return 1

    @spanflow.step
    def wait_for_go() -> str:
        assert go.wait(30)
        return "done"

    @spanflow.workflow
    def long_job() -> str:
        prepare()
        return wait_for_go()

    provider = TracerProvider()
    spanflow.configure(db=db, tracer_provider=provider)
    worker = threading.Thread(target=long_job)
    try:
        worker.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            spanflow.flush()
            if db.exists():
                with Store.open(db) as store:
                    listed = store.list_runs()
                    if listed and store.spans(listed[0].id):
                        break
            time.sleep(0.05)
        served = serve_store(db)
        page = watched.page
        page.goto(served.page_url(f"/runs/{listed[0].id}"))
        page.wait_for_selector(".rh-top .badge.running")
        assert page.locator(".live").is_visible()
        page.wait_for_selector(".wf-row .nm >> text=prepare")
        go.set()
        worker.join(10)
        spanflow.flush()
        page.wait_for_selector(".rh-top .badge.ok", timeout=10_000)
        page.wait_for_selector(".wf-row .nm >> text=wait_for_go")
        assert page.locator(".live").count() == 0
    finally:
        go.set()
        worker.join(10)
        runtime.reset_for_tests()
        provider.shutdown()
    assert watched.errors == []


STATIC = REPO / "viewer" / "static"


@pytest.mark.parametrize("path", sorted(STATIC.iterdir()), ids=lambda p: p.name)
def test_page_code_never_parses_data_as_html_or_code(path: Path) -> None:
    text = path.read_text()
    banned = ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("]
    banned += ["new Function", 'setAttribute("style"', "javascript:"]
    for word in banned:
        assert word not in text, f"{path.name} uses {word}"
    # Works offline: nothing refers to another host.
    assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_every_page_file_is_served(served: Served) -> None:
    for path in STATIC.iterdir():
        url = "/" if path.name == "index.html" else f"/static/{path.name}"
        status, headers, body = request(served, url)
        assert status == 200 and body == path.read_bytes(), path.name
        assert headers["content-type"].startswith(("text/html", "text/css", "text/javascript"))


def test_artifacts_folder_is_ignored_by_git() -> None:
    gitignore = ARTIFACTS.parent / ".gitignore"
    assert "test-artifacts/" in gitignore.read_text().splitlines()


# -- access token ----------------------------------------------------------------------------

_OTHER_PROCESS = """
import sys, urllib.error, urllib.request
base = sys.argv[1]
for arg in sys.argv[2:]:
    method, path = arg.split(" ", 1)
    req = urllib.request.Request(base + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            print(r.status, path, r.headers.get("Set-Cookie") or "-", sep="\\t")
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace").replace("\\n", " ")
        print(e.code, path, e.headers.get("Content-Type"), body, sep="\\t")
"""


def _from_another_process(served: Served, *requests: str) -> list[list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, served.url, *requests],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def _every_route(runs: Runs) -> list[str]:
    return [
        "/",
        "/index.html",
        f"/runs/{runs.failed}",
        "/static/app.js",
        "/static/app.css",
        "/api/runs",
        "/api/runs?status=failed",
        f"/api/runs/{runs.failed}",
        f"/api/runs/{runs.big}/spans?offset=0",
        "/nope",
    ]


def test_requests_without_the_token_are_refused(served: Served, runs: Runs) -> None:
    routes = _every_route(runs)
    wrong = "x" * len(served.token)
    asked = [f"GET {r}" for r in routes] + [f"HEAD {r}" for r in routes[:3]]
    asked += ["POST /api/runs", f"GET /?token={wrong}", "GET /?token=", "GET /?token=%C3%A9"]
    answers = _from_another_process(served, *asked)
    assert len(answers) == len(asked)
    for question, answer in zip(asked, answers, strict=True):
        assert answer[0] == "403", (question, answer)
        if not question.startswith("HEAD"):
            assert answer[2] == "text/plain; charset=utf-8", (question, answer)
            assert "access token" in answer[3] and len(answer[3]) < 200, answer
    # A cookie with another value, or another port's cookie name, is no key either.
    assert request(served, "/api/runs", cookie=f"{served.server.cookie_name}={wrong}")[0] == 403
    assert request(served, "/api/runs", cookie=f"spanflow-viewer-1={served.token}")[0] == 403
    assert request(served, "/api/runs", cookie=None)[0] == 403


def test_the_token_opens_every_route_and_sets_the_cookie(served: Served, runs: Runs) -> None:
    routes = [r for r in _every_route(runs) if r != "/nope"]
    asked = [f"GET {r}{'&' if '?' in r else '?'}token={served.token}" for r in routes]
    answers = _from_another_process(served, *asked)
    for question, answer in zip(asked, answers, strict=True):
        assert answer[0] == "200", (question, answer)
        cookie = [p.strip() for p in answer[2].split(";")]
        assert cookie[0] == served.cookie, answer
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(cookie[1:]), answer
    # With the cookie alone (what the browser sends after the first visit) every route answers.
    for route in routes:
        status, headers, _ = request(served, route)
        assert status == 200, route
        assert "set-cookie" not in headers


def test_two_viewers_do_not_share_a_token(runs: Runs, serve_store: Any) -> None:
    a, b = serve_store(runs.db), serve_store(runs.db)
    assert a.token != b.token and len(a.token) >= 40
    assert request(a, "/api/runs", cookie=b.cookie.replace(str(b.port), str(a.port)))[0] == 403


def test_start_viewer_returns_a_url_with_the_token_and_stops(runs: Runs) -> None:
    viewer = start_viewer(runs.db, port=0)
    try:
        assert viewer.url == f"http://127.0.0.1:{viewer.port}/?token={viewer.token}"
        with urllib.request.urlopen(viewer.url, timeout=10) as r:
            assert r.status == 200 and b"app.js" in r.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(viewer.base_url + "api/runs", timeout=10)
        assert refused.value.code == 403
        refused.value.close()
    finally:
        viewer.stop()
    viewer.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", viewer.port), timeout=2).close()


@browser_test
def test_the_token_becomes_a_cookie_in_the_browser(
    browser: Any, watched: Watched, served: Served, runs: Runs
) -> None:
    page = watched.page
    page.goto(served.page_url("/"))
    page.wait_for_selector("tr.run-row")
    # The token left the address bar; the cookie is HttpOnly, so the page cannot read it.
    assert page.url == served.url + "/"
    assert page.evaluate("document.cookie") == ""
    (cookie,) = watched.context.cookies()
    assert cookie["name"] == served.server.cookie_name and cookie["value"] == served.token
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    # Later addresses need no token.
    response = page.goto(f"{served.url}/runs/{runs.failed}")
    assert response is not None and response.status == 200
    page.wait_for_function("() => window.__spanflow && window.__spanflow.ready")
    assert page.inner_text(".wf-row.sel .nm") == "respond"
    assert watched.errors == []
    # A browser that never had the token gets the refusal, for the page and the API alike.
    other = browser.new_context()
    try:
        stranger = other.new_page()
        for path in ("/", f"/runs/{runs.failed}", "/api/runs"):
            refused = stranger.goto(served.url + path)
            assert refused is not None and refused.status == 403, path
            assert "access token" in stranger.inner_text("body")
    finally:
        other.close()


# -- server hygiene --------------------------------------------------------------------------


def _handler_threads() -> int:
    # ThreadingHTTPServer names its request threads after process_request_thread.
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_half_open_connections_time_out_and_never_block_others(
    runs: Runs, serve_store: Any
) -> None:
    served = serve_store(runs.db, request_timeout=1.5)
    before = _handler_threads()
    stalled = []
    try:
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            s.sendall(b"GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            stalled.append(s)
        deadline = time.monotonic() + 5
        while _handler_threads() < before + 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _handler_threads() >= before + 60
        start = time.perf_counter()
        assert request(served, "/api/runs?limit=1")[0] == 200
        took = time.perf_counter() - start
        assert took < 0.5, took
        # The silent connections are closed by the server, and their threads end.
        deadline = time.monotonic() + 10
        while _handler_threads() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _handler_threads() == before
        for s in stalled:
            s.settimeout(2)
            assert s.recv(100) == b""  # closed by the server without an answer
    finally:
        for s in stalled:
            s.close()


def test_a_burst_of_connections_is_accepted_at_once(served: Served) -> None:
    assert served.server.request_queue_size >= 128
    # 120 clients connecting at the same moment: with a short listen queue some SYNs are
    # dropped and retried a second later.
    barrier = threading.Barrier(120)
    times: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        barrier.wait()
        start = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        with lock:
            times.append(time.perf_counter() - start)
        s.close()

    clients = [threading.Thread(target=client) for _ in range(120)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(30)
    assert len(times) == 120
    assert max(times) < 0.9, sorted(times)[-5:]


@pytest.mark.parametrize(
    "query",
    [
        "offset=1e30",
        "offset=-1",
        "offset=99999999999999999999999999",
        "offset=" + "9" * 5000,
        "offset=1_000",
        "offset=%EF%BC%91",  # a fullwidth digit, which int() would take
        "limit=0",
        "limit=-5",
        "limit=100000",
        "limit=1.5",
        "limit=NaN",
    ],
)
def test_bad_numbers_are_400_with_a_readable_message(
    served: Served, runs: Runs, query: str
) -> None:
    name = query.split("=")[0]
    for path in ("/api/runs?", f"/api/runs/{runs.big}/spans?"):
        status, _, body = request(served, path + query)
        assert status == 400, (path, query, body[:200])
        error = json.loads(body)["error"]
        assert error.startswith(f"{name} must be a whole number from "), error
        assert len(error) < 120, error


# -- hostile graphs --------------------------------------------------------------------------


@spanflow.step
def leaf(n: int) -> int:
    raise RuntimeError(f"leaf {n} failed")


@spanflow.step
def middle(n: int) -> int:
    return leaf(n)


@spanflow.step
def sibling(n: int) -> int:
    return n + 1


@spanflow.workflow
def tangled(n: int) -> int:
    sibling(n)
    sibling(n + 1)
    return middle(n)


def _tangled_store(db: Path, *, copy: bool = True) -> tuple[str, dict[str, str]]:
    """A failed run recorded for real, then its parent links broken with plain SQL."""
    provider = TracerProvider()
    spanflow.configure(db=db, tracer_provider=provider)

    def record() -> None:
        with pytest.raises(RuntimeError):
            tangled(1)
        spanflow.flush()

    try:
        in_thread(record)
    finally:
        runtime.reset_for_tests()
        provider.shutdown()
    with Store.open(db) as store:
        (run,) = store.list_runs()
        ids: dict[str, str] = {}
        for s in store.spans(run.id):
            ids.setdefault(s.name, s.span_id)
    conn = sqlite3.connect(db)
    try:
        with conn:
            # The root's parent is the failed leaf: tangled -> middle -> leaf -> tangled.
            conn.execute(
                "UPDATE spans SET parent_id = ? WHERE span_id = ?", (ids["leaf"], ids["tangled"])
            )
            # The first sibling is its own parent.
            conn.execute(
                "UPDATE spans SET parent_id = span_id WHERE span_id = ?", (ids["sibling"],)
            )
            if copy:
                # A second span with middle's id, under the leaf: another way round the cycle.
                conn.execute(
                    "INSERT INTO spans SELECT run_pk, span_id, ?, name || ' (copy)', kind, "
                    "'UNSET', status_message, start_ns + 1, end_ns, attributes, resource_pk "
                    "FROM spans WHERE span_id = ?",
                    (ids["leaf"], ids["middle"]),
                )
    finally:
        conn.close()
    return run.id, ids


def test_a_cyclic_run_is_served_whole(tmp_path: Path, serve_store: Any) -> None:
    run_id, ids = _tangled_store(tmp_path / "tangled.db")
    served = serve_store(tmp_path / "tangled.db")
    data = get_json(served, f"/api/runs/{run_id}")
    spans = {s["id"]: s for s in data["spans"]}
    assert data["span_total"] == len(spans) == 6
    assert spans[ids["tangled"]]["parent"] is None  # the cycle is cut at its first span
    assert spans[ids["tangled"]]["recorded_parent"] == ids["leaf"]
    assert spans[ids["sibling"]]["parent"] is None
    assert spans[ids["sibling"]]["recorded_parent"] == ids["sibling"]
    copy = spans[ids["middle"] + "#2"]
    assert copy["recorded_id"] == ids["middle"] and copy["parent"] == ids["leaf"]
    # Depth first, every parent before its children.
    seen: set[str] = set()
    for s in data["spans"]:
        assert s["parent"] is None or s["parent"] in seen
        seen.add(s["id"])


@browser_test
def test_a_cyclic_run_page_renders(watched: Watched, tmp_path: Path, serve_store: Any) -> None:
    run_id, ids = _tangled_store(tmp_path / "tangled.db")
    served = serve_store(tmp_path / "tangled.db")
    page = watched.page
    page.set_default_timeout(5_000)
    start = time.perf_counter()
    open_run(watched, served, run_id)
    assert time.perf_counter() - start < 5
    names = page.locator(".wf-row .nm").all_inner_texts()
    assert sorted(names) == sorted(
        ["tangled", "sibling", "sibling", "middle", "leaf", "middle (copy)"]
    )
    # The failure is followed down to the step that raised, and the damage is shown.
    assert page.inner_text(".wf-row.sel .nm") == "leaf"
    assert "RuntimeError: leaf 1 failed" in panel_text(watched)
    page.locator(".wf-row", has=page.locator(".nm", has_text="tangled")).first.click()
    assert ids["leaf"] in page.inner_text(".detail .facts")
    # Filtering and collapsing walk the same tree.
    page.fill(".wf-search", "leaf")
    page.wait_for_function("() => document.querySelectorAll('.wf-row').length === 3")
    page.fill(".wf-search", "")
    page.click("button[data-tab=state]")
    assert watched.errors == []


@browser_test
@pytest.mark.parametrize("copy", [False, True], ids=["cycle", "cycle-and-repeated-id"])
def test_the_page_never_loops_on_cyclic_parents(
    watched: Watched, tmp_path: Path, serve_store: Any, copy: bool
) -> None:
    # The server cuts cycles before sending; the page's own walks must end even on data that
    # still has them. The run's JSON is rewritten back to the links as recorded.
    run_id, _ = _tangled_store(tmp_path / "tangled.db", copy=copy)
    served = serve_store(tmp_path / "tangled.db")
    page = watched.page

    def as_recorded(route: Any) -> None:
        data = json.loads(route.fetch().text())
        for s in data["spans"]:
            s["parent"] = s.pop("recorded_parent", s["parent"])
            s["id"] = s.pop("recorded_id", s["id"])
        route.fulfill(json=data)

    page.route(f"**/api/runs/{run_id}", as_recorded)
    page.set_default_timeout(5_000)
    open_run(watched, served, run_id)
    assert page.locator(".wf-row").count() >= 5
    assert page.inner_text(".wf-row.sel .nm") == "leaf"
    page.click("button[data-tab=state]")
    page.fill(".wf-search", "leaf")
    page.wait_for_function("() => document.querySelectorAll('.wf-row').length >= 1")
    assert watched.errors == []


# -- huge runs -------------------------------------------------------------------------------

HUGE_SPANS = 200_000


def _huge_run(db: Path) -> str:
    """One workflow with 200,000 steps under it, the last of which failed.

    The store's writer records the root and the failed step; the 199,998 steps between them
    are plain SQL inserts (the writer's own path takes far longer for that many).
    """
    run_id = os.urandom(16).hex()
    t0 = time.time_ns()
    root_id = f"{1:016x}"

    def span(i: int, name: str, parent: str | None, **extra: Any) -> SpanRecord:
        return SpanRecord(
            run_id=run_id,
            span_id=f"{i:016x}",
            parent_id=parent,
            name=name,
            status="ERROR",
            status_message="KeyError: 'sku-199999'",
            start_ns=t0 + i * 1_000,
            end_ns=t0 + HUGE_SPANS * 1_000 if parent is None else t0 + i * 1_000 + 800,
            attributes={attr.RUN_ID: run_id, attr.STEP_NAME: name, **extra},
        )

    with Store.open(db, readonly=False) as store:
        store.write_spans(
            [
                span(1, "load_catalogue", None, **{attr.STEP_TYPE: "workflow"}),
                span(
                    HUGE_SPANS,
                    "price_lookup",
                    root_id,
                    **{attr.STEP_TYPE: "step", attr.INPUT_VALUE: '{"sku": 199999}'},
                ),
            ]
        )
    conn = sqlite3.connect(db)
    try:
        with conn:
            (run_pk,) = conn.execute("SELECT pk FROM runs WHERE id = ?", [run_id]).fetchone()
            conn.executemany(
                "INSERT INTO spans (run_pk, span_id, parent_id, name, kind, status, start_ns, "
                "end_ns, attributes) VALUES (?, ?, ?, ?, 'INTERNAL', 'UNSET', ?, ?, ?)",
                (
                    (
                        run_pk,
                        f"{i:016x}",
                        root_id,
                        f"item_{i}",
                        t0 + i * 1_000,
                        t0 + i * 1_000 + 800,
                        json.dumps({attr.RUN_ID: run_id, attr.STEP_NAME: f"item_{i}"}),
                    )
                    for i in range(2, HUGE_SPANS)
                ),
            )
            conn.execute("UPDATE runs SET span_count = ? WHERE pk = ?", [HUGE_SPANS, run_pk])
    finally:
        conn.close()
    return run_id


@browser_test
def test_a_200k_span_run_opens_on_its_failed_step(
    watched: Watched, tmp_path: Path, serve_store: Any
) -> None:
    db = tmp_path / "huge.db"
    t = time.perf_counter()
    run_id = _huge_run(db)
    print(f"200k spans: store written in {time.perf_counter() - t:.1f} s")
    served = serve_store(db)
    page = watched.page
    start = time.perf_counter()
    open_run(watched, served, run_id)
    ready = time.perf_counter() - start
    info = page.evaluate("window.__spanflow")
    assert info["total"] == HUGE_SPANS
    assert info["spans"] == MAX_SPANS + 1  # the first 10,000 and the failed step
    assert info["rows"] < 200
    assert page.inner_text(".wf-row.sel .nm") == "price_lookup"
    assert json.loads(page.inner_text(".detail .inputs pre")) == {"sku": 199999}
    assert "KeyError" in panel_text(watched)
    more = page.inner_text(".wf-more")
    assert "189,999 more spans" in more
    # The page answers input at once.
    t = time.perf_counter()
    page.fill(".wf-search", "item_9999")
    page.wait_for_function("() => document.querySelectorAll('.wf-row').length === 2")
    assert time.perf_counter() - t < 2
    page.fill(".wf-search", "")
    page.click(".wf-more button")
    page.wait_for_function(f"() => window.__spanflow.spans === {2 * MAX_SPANS + 1}")
    assert "179,999 more spans" in page.inner_text(".wf-more")
    assert page.inner_text(".d-title h2") == "price_lookup"  # the selection stays
    print(f"200k spans: page ready in {ready:.1f} s")
    assert ready < 25, ready
    # What the API sends at once stays bounded.
    status, _, body = request(served, f"/api/runs/{run_id}")
    assert status == 200 and len(body) < 8_000_000, len(body)
    assert watched.errors == []


# -- replay offers ---------------------------------------------------------------------------


def test_only_workflow_runs_offer_a_replay(tmp_path: Path, serve_store: Any) -> None:
    db = tmp_path / "lone.db"
    provider = TracerProvider()
    spanflow.configure(db=db, tracer_provider=provider)

    def record() -> None:
        count_rows(4)
        spanflow.flush()
        nightly(2)
        spanflow.flush()

    try:
        in_thread(record)
    finally:
        runtime.reset_for_tests()
        provider.shutdown()
    with Store.open(db) as store:
        wf, lone = store.list_runs()
    served = serve_store(db)
    assert get_json(served, f"/api/runs/{lone.id}")["replay_command"] is None
    assert get_json(served, f"/api/runs/{wf.id}")["replay_command"] == (
        f"spanflow replay {wf.id} --db {db}"
    )


@browser_test
def test_a_lone_step_run_page_offers_no_replay(
    watched: Watched, tmp_path: Path, serve_store: Any
) -> None:
    db = tmp_path / "lone.db"
    provider = TracerProvider()
    spanflow.configure(db=db, tracer_provider=provider)

    def record() -> None:
        count_rows(4)
        spanflow.flush()
        nightly(2)
        spanflow.flush()

    try:
        in_thread(record)
    finally:
        runtime.reset_for_tests()
        provider.shutdown()
    with Store.open(db) as store:
        wf, lone = store.list_runs()
    served = serve_store(db)
    page = watched.page
    open_run(watched, served, lone.id)
    assert page.locator("#replay-cmd").count() == 0
    assert "Not replayable" in page.inner_text(".rh-noreplay")
    open_run(watched, served, wf.id)
    assert page.input_value("#replay-cmd") == f"spanflow replay {wf.id} --db {db}"
    assert page.locator(".rh-noreplay").count() == 0
    assert watched.errors == []
