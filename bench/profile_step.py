"""Where a recorded step's time goes: pyinstrument over the same step bench_core.py times.

    python bench/profile_step.py [-n CALLS] [--no-store] [--html FILE]

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=50_000, help="recorded calls to profile")
    parser.add_argument("--no-store", action="store_true", help="leave the SQLite store off")
    parser.add_argument("--html", type=Path, help="also write pyinstrument's HTML view here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        db: Path | bool = False if args.no_store else Path(d) / "profile.db"
        spanflow.configure(tracer_provider=batch_provider(), db=db)
        step = spanflow.step(answer)

        @spanflow.workflow(name="profile")
        def loop(n: int) -> None:
            for _ in range(n):
                step("refund please", k=3)

        loop(1_000)  # warm caches (redaction verdicts, prepared statements) first
        profiler = Profiler(interval=0.0002)
        profiler.start()
        loop(args.n)
        spanflow.flush()
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
        if args.html:
            args.html.write_text(profiler.output_html())
        runtime.reset_for_tests()


if __name__ == "__main__":
    main()
