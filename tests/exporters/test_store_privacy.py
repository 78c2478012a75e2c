"""A new store is private to its owner: folders 0700, files 0600, whatever the umask."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.exporters.conftest import child_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")

CHILD = """
import json, os, stat, sys
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from spanflow.attributes import RUN_ID, STEP_NAME, STEP_TYPE
from spanflow.exporters.sqlite_store import SQLiteSpanProcessor

os.umask(int(sys.argv[2], 8))
path = sys.argv[1]
proc = SQLiteSpanProcessor(path)
provider = TracerProvider()
provider.add_span_processor(proc)
with provider.get_tracer("t").start_as_current_span("job", context=Context()) as root:
    rid = f"{root.get_span_context().trace_id:032x}"
    root.set_attributes({RUN_ID: rid, STEP_NAME: "job", STEP_TYPE: "workflow"})
assert proc.force_flush(10_000) and proc.stats()["spans_written"] == 1
# While the writer's connection is open, so the -wal and -shm exist.
modes = {p: stat.S_IMODE(os.stat(path + p).st_mode) for p in ("", "-wal", "-shm")}
provider.shutdown()
print(json.dumps(modes))
"""


def record(path: Path, umask: int) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(path), f"{umask:o}"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modes: dict[str, int] = json.loads(out.stdout)
    return modes


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_a_new_store_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "new" / "nested" / "traces.db"
    modes = record(path, umask)
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
    for folder in (path.parent, path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    modes = record(folder / "traces.db", 0o077)
    assert modes[""] == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
