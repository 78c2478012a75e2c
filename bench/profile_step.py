"""Where a recorded step's or run's time goes: pyinstrument over what bench_core.py times.

    python bench/profile_step.py [--case step|run|both] [-n CALLS] [--no-store] [--html FILE]

``step`` profiles a step inside a long workflow, ``run`` a one-step run (the decorated function
called outside any run, as from a web handler: a run row and a trace of its own each call);
``both`` (the default, what ``make profile`` runs) prints one tree after the other.

Prints the call tree of the application thread (the store's writer thread runs beside it and is
measured by bench_store.py). Read it against bench_core.py's "bare OTel span" row: everything
under ``opentelemetry`` is what any span costs; the rest is spanflow's share.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import spanflow
from common import batch_provider
from pyinstrument import Profiler
from spanflow import runtime


def answer(query: str, k: int = 3) -> dict[str, Any]:
    return {"answer": query.upper(), "k": k}


def profile(case: str, n: int, db: Path | bool, html: Path | None) -> None:
    spanflow.configure(tracer_provider=batch_provider(), db=db)
    step = spanflow.step(answer)

    @spanflow.workflow(name="profile")
    def in_workflow(calls: int) -> None:
        for _ in range(calls):
            step("refund please", k=3)

    def one_step_runs(calls: int) -> None:
        for _ in range(calls):
            step("refund please", k=3)

    loop = in_workflow if case == "step" else one_step_runs
    loop(1_000)  # warm caches (redaction verdicts, prepared statements) first
    spanflow.flush()
    profiler = Profiler(interval=0.0002)
    profiler.start()
    loop(n)
    spanflow.flush()
    profiler.stop()
    title = "a step inside a workflow" if case == "step" else "one-step runs"
    print(f"== {title}: {n} calls ==")
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if html:
        html.write_text(profiler.output_html())
    runtime.reset_for_tests()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=("step", "run", "both"), default="both")
    parser.add_argument("-n", type=int, default=50_000, help="recorded calls to profile")
    parser.add_argument("--no-store", action="store_true", help="leave the SQLite store off")
    parser.add_argument(
        "--html", type=Path, help="also write pyinstrument's HTML view here (CASE is added)"
    )
    args = parser.parse_args()
    cases = ("step", "run") if args.case == "both" else (args.case,)
    with tempfile.TemporaryDirectory() as d:
        for case in cases:
            db: Path | bool = False if args.no_store else Path(d) / f"{case}.db"
            html = args.html
            if html is not None and len(cases) > 1:
                html = html.with_name(f"{html.stem}-{case}{html.suffix}")
            profile(case, args.n, db, html)


if __name__ == "__main__":
    main()
