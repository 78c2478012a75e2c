"""Benchmark of the ``spanflow`` command's start-up on a store of 100k runs.

Times, round after round (interleaved, so the machine's noise spreads over every case):
  a. ``python -c`` opening the store read-only with sqlite3 and selecting 20 runs (the floor:
     what Python itself costs to start and read those rows);
  b. the installed console script, ``spanflow runs --limit 20 --db DB`` into a pipe;
  c. ``spanflow show RUN --db DB`` into a pipe, RUN a failed run of four spans.
Prints min / median / max wall time of each, its median's ratio to (a), and whether every
command is within ``TARGET`` (3x) of it.

The store (100k runs of 4 spans, built with fast inserts the real reader accepts) is cached
under ``bench/.cache``. Each command runs as a user's would: byte-compiled modules are written
and used (``PYTHONDONTWRITEBYTECODE`` is dropped), and one untimed warm-up run precedes the
rounds. Run: ``python bench/bench_cli.py [--runs N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import time

from spanflow.attributes import (
    EXCEPTION_EVENT,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    INPUT_VALUE,
    OUTPUT_VALUE,
    RUN_ID,
    STEP_NAME,
    STEP_TYPE,
    STEP_TYPE_STEP,
    STEP_TYPE_WORKFLOW,
)
from spanflow.exporters import schema

CACHE = pathlib.Path(__file__).resolve().parent / ".cache"
WORKFLOWS = [f"pipeline_{i}" for i in range(8)]
SPANS_PER_RUN = 4
#: ``runs`` and ``show`` should answer within this many times what Python + sqlite3 take.
TARGET = 3.0


def build(path: pathlib.Path, n_runs: int) -> str:
    """A store of n_runs runs (every 10th failed); returns the id of the newest failed run."""
    conn = schema.open_for_writing(path)
    rng = random.Random(4)
    now = time.time_ns() - n_runs * 1_000_000
    run_ids = [f"{rng.getrandbits(128):032x}" for _ in range(n_runs)]
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO {schema.RUNS} ({schema.RUN_PK}, {schema.RUN_ID}, {schema.RUN_WORKFLOW}, "
        f"{schema.RUN_STATUS}, {schema.RUN_ERROR}, {schema.RUN_STARTED_NS}, "
        f"{schema.RUN_ENDED_NS}, {schema.RUN_DURATION_MS}, {schema.RUN_SERVICE}, "
        f"{schema.RUN_SPAN_COUNT}, {schema.RUN_ERROR_COUNT}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                pk + 1,
                run_id,
                WORKFLOWS[pk % len(WORKFLOWS)],
                "failed" if pk % 10 == 0 else "ok",
                "ValueError: no route for ticket" if pk % 10 == 0 else None,
                now + pk * 1_000_000,
                now + pk * 1_000_000 + 800_000,
                0.8,
                "bench",
                SPANS_PER_RUN,
                2 if pk % 10 == 0 else 0,
            )
            for pk, run_id in enumerate(run_ids)
        ),
    )

    def spans(pk: int, run_id: str) -> list[tuple[object, ...]]:
        start = now + pk * 1_000_000
        failed = pk % 10 == 0
        root = f"{rng.getrandbits(64):016x}"
        root_attrs = {RUN_ID: run_id, STEP_NAME: "support", STEP_TYPE: STEP_TYPE_WORKFLOW}
        status = "ERROR" if failed else "OK"
        rows: list[tuple[object, ...]] = [
            (
                pk + 1,
                root,
                None,
                WORKFLOWS[pk % 8],
                "INTERNAL",
                status,
                None,
                start,
                start + 800_000,
                json.dumps(root_attrs),
            )
        ]
        for i, name in enumerate(("load", "classify", "answer")):
            bad = failed and name == "answer"
            attrs = {
                RUN_ID: run_id,
                STEP_NAME: name,
                STEP_TYPE: STEP_TYPE_STEP,
                INPUT_VALUE: json.dumps({"ticket": f"ticket {pk}"}),
                OUTPUT_VALUE: json.dumps({"label": "billing", "score": 0.9}),
            }
            rows.append(
                (
                    pk + 1,
                    f"{rng.getrandbits(64):016x}",
                    root,
                    name,
                    "INTERNAL",
                    "ERROR" if bad else "OK",
                    None,
                    start + i * 200_000,
                    start + i * 200_000 + 1,
                    json.dumps(attrs),
                )
            )
        return rows

    all_spans = [row for pk, rid in enumerate(run_ids) for row in spans(pk, rid)]
    conn.executemany(
        f"INSERT INTO {schema.SPANS} ({', '.join(schema.SPAN_COLUMNS[:-1])}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        all_spans,
    )
    failed = [(pk, rid) for pk, rid in enumerate(run_ids) if pk % 10 == 0]
    exception = json.dumps(
        {
            EXCEPTION_TYPE: "ValueError",
            EXCEPTION_MESSAGE: "no route for ticket",
            EXCEPTION_STACKTRACE: 'Traceback (most recent call last):\n  File "app.py", '
            "line 9, in answer\nValueError: no route for ticket\n",
        }
    )
    conn.executemany(
        f"INSERT INTO {schema.EVENTS} VALUES (?, ?, 0, ?, ?, ?)",
        (
            (pk + 1, row[1], EXCEPTION_EVENT, row[7], exception)
            for pk, _ in failed
            for row in all_spans[pk * SPANS_PER_RUN : (pk + 1) * SPANS_PER_RUN]
            if row[5] == "ERROR" and row[2] is not None
        ),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return failed[-1][1]


def store(n_runs: int) -> tuple[pathlib.Path, str]:
    """The cached store of n_runs runs and its newest failed run, built if missing."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"cli-{n_runs}.db"
    marker = path.with_suffix(".run")
    if not (path.exists() and marker.exists()):
        for stale in (path, schema.wal_path(path), marker):
            stale.unlink(missing_ok=True)
        t = time.perf_counter()
        marker.write_text(build(path, n_runs))
        print(f"built {path} ({n_runs:,} runs) in {time.perf_counter() - t:.1f} s")
    return path, marker.read_text().strip()


def time_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()}")
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the store")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args()
    path, failed_run = store(args.runs)
    bindir = pathlib.Path(sys.executable).parent
    spanflow = str(bindir / "spanflow")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.pop("COLUMNS", None)
    query = (
        "import sqlite3; c = sqlite3.connect('file:' + DB + '?mode=ro', uri=True); "
        "c.execute('SELECT * FROM runs ORDER BY started_ns DESC LIMIT 20').fetchall()"
    )
    cases = {
        "python -c sqlite3 (20 rows)": [
            sys.executable,
            "-c",
            f"DB = {str(path.absolute())!r}; {query}",
        ],
        "spanflow runs --limit 20": [spanflow, "runs", "--limit", "20", "--db", str(path)],
        "spanflow show RUN": [spanflow, "show", failed_run, "--db", str(path)],
    }
    for argv in cases.values():
        time_once(argv, env)  # warm the page cache and write the byte-compiled modules
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, argv in cases.items():
            samples[name].append(time_once(argv, env))
    floor = statistics.median(next(iter(samples.values())))
    print(
        f"\nCLI start-up on {args.runs:,} runs ({path.stat().st_size / 1e6:.0f} MB), "
        f"{args.rounds} interleaved rounds, wall ms: min / median / max (median / floor)"
    )
    for name, values in samples.items():
        med = statistics.median(values)
        print(
            f"  {name:30s} {min(values):6.1f} / {med:6.1f} / {max(values):6.1f}   "
            f"x{med / floor:.2f}"
        )
    over = [name for name, values in samples.items() if statistics.median(values) > TARGET * floor]
    verdict = "met" if not over else f"missed by {', '.join(over)}"
    print(f"  target: every command within x{TARGET:.0f} of the floor (medians): {verdict}")


if __name__ == "__main__":
    main()
