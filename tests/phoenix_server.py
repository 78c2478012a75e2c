"""Arize Phoenix as a real OTLP receiver for the tests: start, query, stop.

Phoenix takes OTLP over HTTP (``/v1/traces``) and gRPC, and answers what it stored on a REST
API, so a test can check what actually arrived. ``make test`` installs it in its own virtualenv
and passes the path of its ``phoenix`` executable in ``SPANFLOW_PHOENIX``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_EXECUTABLE = "SPANFLOW_PHOENIX"
ENV_REQUIRE = "SPANFLOW_REQUIRE_SERVICES"
#: Where ``make`` installs Phoenix; used when ``SPANFLOW_PHOENIX`` is not set.
CACHED_EXECUTABLE = Path.home() / ".cache" / "spanflow" / "phoenix-20.26.1" / "bin" / "phoenix"
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
HOST = "127.0.0.1"


def services_required() -> bool:
    """Whether a missing service fails the test instead of skipping it (``make test``)."""
    return os.environ.get(ENV_REQUIRE, "").strip().lower() in {"1", "true", "yes"}


def find_executable() -> Path | None:
    """The ``phoenix`` executable: ``$SPANFLOW_PHOENIX``, else the one ``make`` caches."""
    configured = os.environ.get(ENV_EXECUTABLE)
    candidate = Path(configured) if configured else CACHED_EXECUTABLE
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def unavailable_reason() -> str:
    """Why :func:`find_executable` found nothing, for the skip or failure message."""
    configured = os.environ.get(ENV_EXECUTABLE)
    if configured:
        return f"{ENV_EXECUTABLE}={configured!r} is not an executable file"
    return (
        f"Arize Phoenix is not installed: set {ENV_EXECUTABLE} to its `phoenix` executable "
        "(`make test` installs it)"
    )


def free_port() -> int:
    """A localhost TCP port nobody listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Phoenix:
    """A running Phoenix server."""

    http_port: int
    grpc_port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        """OTLP/HTTP base endpoint (``/v1/traces`` is appended by the exporter) and REST API."""
        return f"http://{HOST}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        """OTLP/gRPC endpoint."""
        return f"http://{HOST}:{self.grpc_port}"

    def get(self, path: str, **query: str | int) -> tuple[int, str]:
        """(status, body text) of a GET on the REST API."""
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode("utf-8", "replace")

    def spans(self, project: str, *, expect: int, timeout: float = 30.0) -> tuple[list[Any], str]:
        """The spans of ``project`` once at least ``expect`` arrived, and the raw answer text.

        Ingestion is asynchronous and the project exists only after its first span, so this
        polls (404 meanwhile).

        Raises:
            AssertionError: fewer spans than expected arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        status, body = 0, ""
        while True:
            status, body = self.get(
                f"/v1/projects/{urllib.parse.quote(project, safe='')}/spans", limit=1000
            )
            if status == 200:
                data = json.loads(body)["data"]
                if len(data) >= expect:
                    return data, body
            elif status != 404:
                raise AssertionError(f"Phoenix answered {status}: {body[:500]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{expect} spans of project {project!r} did not reach Phoenix within "
                    f"{timeout:.0f} s; last answer {status}: {body[:500]}\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError as exc:
            return f"(no Phoenix log: {exc})"
        return "--- Phoenix log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


def _ready(server: Phoenix) -> bool:
    try:
        status, _ = server.get("/readyz")
    except OSError:
        return False
    return status == 200


@contextlib.contextmanager
def running(executable: Path, workdir: Path) -> Iterator[Phoenix]:
    """Start ``phoenix serve`` on free localhost ports, wait until ready, stop it on exit.

    Raises:
        RuntimeError: it exited or was not ready within ``STARTUP_TIMEOUT_S``; the message
            carries the tail of its log.
    """
    server = Phoenix(http_port=free_port(), grpc_port=free_port(), log_path=workdir / "phoenix.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
    env.update(
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_HOST=HOST,
        PHOENIX_PORT=str(server.http_port),
        PHOENIX_GRPC_PORT=str(server.grpc_port),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
    )
    started = time.monotonic()
    with server.log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "serve"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while not _ready(server):
            if process.poll() is not None:
                raise RuntimeError(
                    f"Phoenix exited with code {process.returncode} before it was ready\n"
                    + server.log_tail()
                )
            if time.monotonic() - started > STARTUP_TIMEOUT_S:
                raise RuntimeError(
                    f"Phoenix was not ready within {STARTUP_TIMEOUT_S:.0f} s "
                    f"(GET {server.base_url}/readyz)\n" + server.log_tail()
                )
            time.sleep(0.25)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
