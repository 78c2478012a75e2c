"""Browser fixtures for the web viewer: a real server on 127.0.0.1 and Debian's chromium.

Playwright's own browser download cannot work here, so the tests drive the system chromium
(``SPANFLOW_CHROMIUM``, default ``/usr/bin/chromium``). Without it browser tests are skipped,
unless ``SPANFLOW_REQUIRE_SERVICES=1`` (set by ``make test``) makes that a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from spanflow.viewer.web import Viewer, ViewerServer, start_viewer

CHROMIUM = os.environ.get("SPANFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class Served:
    """A viewer server running in a background thread (:func:`start_viewer`)."""

    def __init__(self, db: Path, *, request_timeout: float | None = None) -> None:
        if request_timeout is None:
            self.viewer: Viewer = start_viewer(db, port=0)
        else:
            self.viewer = start_viewer(db, port=0, request_timeout=request_timeout)
        self.server: ViewerServer = self.viewer.server
        self.url = self.server.url.rstrip("/")
        self.port = self.viewer.port
        self.token = self.viewer.token
        #: What a browser that visited the token URL sends with every request.
        self.cookie = f"{self.server.cookie_name}={self.token}"

    def page_url(self, path: str = "/") -> str:
        """``path`` on this viewer with the access token, as the URL ``spanflow ui`` prints."""
        sep = "&" if "?" in path else "?"
        return f"{self.url}{path}{sep}token={self.token}"

    def close(self) -> None:
        self.viewer.stop()


@pytest.fixture
def serve_store() -> Iterator[Any]:
    """Start viewers for store paths; every one is stopped after the test."""
    started: list[Served] = []

    def start(db: Path, *, request_timeout: float | None = None) -> Served:
        served = Served(db, request_timeout=request_timeout)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def _missing_browser(reason: str) -> None:
    if os.environ.get("SPANFLOW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (SPANFLOW_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Debian chromium driven by playwright, shared by one test module.

    Not by the session: playwright's sync API keeps an asyncio loop marked running in the main
    thread while it is open, and every later test that starts an event loop (anyio, asyncio.run)
    would fail with "Cannot run the event loop while another loop is running".
    """
    if not Path(CHROMIUM).exists():
        _missing_browser(f"no chromium at {CHROMIUM}; install Debian's chromium package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing_browser("playwright for Python is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watched:
    """A page plus what it tried to do that it should not: leave localhost, log errors."""

    page: Any
    context: Any
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    """A fresh page whose requests may only go to 127.0.0.1; console errors are collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    w = Watched(page, context)

    def guard(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host == "127.0.0.1":
            route.continue_()
        else:
            w.foreign.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    # A CSP violation (an inline style or script the page should not have) is a console error.
    page.on("console", lambda m: w.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: w.errors.append(str(e)))
    yield w
    context.close()
    assert w.foreign == [], f"the page tried to load external resources: {w.foreign}"


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot under test-artifacts/ and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path
