"""`make demo`: a support pipeline fails part-way; inspect it, fix it, replay it, then fork it
("what if the classifier had said shipping?") by editing one recorded output.

Runs every command the way a user would type it, and prints each one before its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIPELINE = HERE / "support_pipeline.py"
BIN = Path(sys.executable).parent


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    # Show commands as a user types them (with .venv/bin on PATH), run them by full path.
    words = [
        "python" if c == sys.executable else ("spanflow" if c == str(BIN / "spanflow") else c)
        for c in cmd
    ]
    shown = " ".join(c if " " not in c else repr(c) for c in words)
    prefix = " ".join(f"{k}={v}" for k, v in (env or {}).items() if k == "SUPPORT_FIXED")
    print(f"$ {prefix + ' ' if prefix else ''}{shown}", flush=True)
    # From the project's folder, as a user would: replay imports only code under the current one.
    result = subprocess.run(
        cmd,
        env={**os.environ, **(env or {})},
        text=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    print(result.stdout, end="")
    if result.stderr:
        print(result.stderr, end="", file=sys.stderr)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: {shown} exited {result.returncode}")
    return result


def main() -> None:
    db = os.environ.get("SPANFLOW_DB", ".spanflow/demo.db")
    spanflow = str(BIN / "spanflow")

    banner("1. Run the support pipeline (its last step has a bug)")
    first = run([sys.executable, str(PIPELINE)], env={"SPANFLOW_DB": db})
    if first.returncode == 0:
        raise SystemExit("demo: the pipeline was expected to fail on its first run")

    banner("2. The store lists the failed run")
    listing = run([spanflow, "runs", "--db", db, "--json"], check=True)
    failed = next(r for r in json.loads(listing.stdout) if r["status"] == "failed")
    run_id = failed["id"]
    run([spanflow, "runs", "--db", db], check=True)

    banner("3. Where and why it failed")
    run([spanflow, "show", run_id, "--db", db], check=True)

    banner("4. Fix the code (SUPPORT_FIXED=1) and replay: successful steps are reused, not re-run")
    replayed = run(
        [spanflow, "replay", run_id, "--db", db], env={"SUPPORT_FIXED": "1", "SPANFLOW_DB": db}
    )
    if replayed.returncode != 0:
        raise SystemExit(f"demo: the replay was expected to succeed (exit {replayed.returncode})")

    banner(
        "5. Fork it: what if the classifier had said 'shipping'? (--set edits a recorded output)"
    )
    forked = run(
        [spanflow, "replay", run_id, "--db", db, "--set", 'support/classify[0].output="shipping"'],
        env={"SUPPORT_FIXED": "1", "SPANFLOW_DB": db},
    )
    if forked.returncode != 0:
        raise SystemExit(
            f"demo: the forked replay was expected to succeed (exit {forked.returncode})"
        )

    banner(
        "6. Look at it in the browser (the commands above need .venv/bin on PATH: source .venv/bin/activate)"
    )
    print(f"$ spanflow ui --db {db}")
    print(
        "  then open the URL it prints (it carries the viewer's access token; the failed run shows its failing step's inputs and error)"
    )
    print(
        f"\nOther views: `spanflow export {run_id[:12]} --format jaeger --db {db} -o trace.json` "
        "(load it in Jaeger's UI), `spanflow runs --status failed --db " + db + "`"
    )


if __name__ == "__main__":
    main()
