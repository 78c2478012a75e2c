"""A silent OTLP endpoint costs the application about ``otlp_timeout`` at exit, however much is
queued: a real subprocess exporting to a loopback server that accepts and never answers."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from tests.exporters.conftest import child_env

CHILD = """
import atexit, json, sys
from opentelemetry.sdk.trace import TracerProvider
from spanflow.exporters.otlp import otlp_processor

processor = otlp_processor(endpoint=sys.argv[1], timeout=float(sys.argv[2]))
# Registered first, so it runs last: after the provider's own shutdown at exit.
atexit.register(lambda: print(json.dumps(processor.stats()), flush=True))
provider = TracerProvider()  # shut down at exit, as an application's provider is
provider.add_span_processor(processor)
tracer = provider.get_tracer("child")
for i in range(20_200):
    with tracer.start_as_current_span(f"s{i}"):
        pass
print(json.dumps(processor.stats()), flush=True)
"""


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT``: accepts connections, reads nothing, never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_exit_with_a_silent_endpoint_takes_about_the_timeout(silent_endpoint: str) -> None:
    timeout = 1.5
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), silent_endpoint, str(timeout)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    queued = json.loads(child.stdout.readline())  # the spans have ended: exit begins now
    began = time.monotonic()
    out, err = child.communicate(timeout=60)
    took = time.monotonic() - began
    assert child.returncode == 0, err
    assert took < timeout + 1.0, (took, err)
    final = json.loads(out)
    assert queued["spans_dropped"] > 0  # 20,200 spans do not fit the queue
    assert final["spans_exported"] == 0 and final["queue_size"] == 0
    # Every span is accounted for: dropped (queue full or out of time) or in a failed export.
    in_flight = 20_200 - final["spans_dropped"] - final["spans_failed"]
    assert 0 <= in_flight <= 512
    assert final["spans_dropped"] > queued["spans_dropped"]  # what shutdown had no time for
    assert "not exported within otlp_timeout" in err
