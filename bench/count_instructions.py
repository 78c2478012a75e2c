"""Instructions per recorded call, counted by callgrind: steadier than time on a loaded machine.

    python bench/count_instructions.py [--case bare|run|step|run10 ...] [-n CALLS]

Each case runs twice under ``valgrind --tool=callgrind --separate-threads=yes``: once with
CALLS calls, once with none (the same start-up, warm-up and flush); the difference divided by
CALLS is what one call costs, per thread. ``bare`` is a bare OTel span (BatchSpanProcessor,
discarding exporter), ``run`` a one-step run, ``step`` a step inside a workflow, ``run10`` a
run of ten steps (per run), each with the SQLite store as spanflow's only exporter.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import sys, tempfile
from pathlib import Path
sys.path.insert(0, {bench!r})
from common import batch_provider
case, n = {case!r}, {n}
d = tempfile.mkdtemp()
if case == "bare":
    provider = batch_provider()
    tracer = provider.get_tracer("bench")
    def call():
        with tracer.start_as_current_span("answer") as span:
            pass
    def flush():
        provider.force_flush()
else:
    import spanflow
    from opentelemetry.sdk.trace import TracerProvider
    spanflow.configure(tracer_provider=TracerProvider(), db=Path(d) / "b.db")

    @spanflow.step
    def answer(query, k=3):
        return {{"answer": query.upper(), "k": k}}

    @spanflow.workflow(name="w")
    def ten():
        for _ in range(10):
            answer("refund please", k=3)

    if case == "run":
        def call():
            answer("refund please", k=3)
    elif case == "run10":
        call = ten
    else:
        @spanflow.workflow(name="long")
        def long(m):
            for _ in range(m):
                answer("refund please", k=3)
        call = None
    flush = spanflow.flush
if case == "step":
    long(200); flush()
    long(n); flush()
else:
    for _ in range(200):
        call()
    flush()
    for _ in range(n):
        call()
    flush()
"""


def _run(case: str, n: int, out: Path) -> dict[str, int]:
    bench = str(Path(__file__).resolve().parent)
    script = out / f"{case}-{n}.py"
    script.write_text(_CHILD.format(bench=bench, case=case, n=n))
    prefix = out / f"cg-{case}-{n}"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={prefix}.%p",
            sys.executable,
            str(script),
        ],
        check=True,
        capture_output=True,
    )
    totals: dict[str, int] = {}
    for f in out.glob(f"cg-{case}-{n}.*"):
        text = f.read_text(errors="replace")
        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(
            r"^totals:\s+(\d+)", text, re.M
        )
        thread = re.search(r"^thread:\s*(\d+)", text, re.M)
        key = thread.group(1) if thread else f.name
        totals[key] = totals.get(key, 0) + (int(m.group(1)) if m else 0)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", action="append", choices=("bare", "run", "step", "run10"))
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    for case in args.case or ["bare", "run", "step", "run10"]:
        n = args.n if case != "run10" else max(args.n // 10, 1)
        with tempfile.TemporaryDirectory() as d:
            with_calls = _run(case, n, Path(d))
            without = _run(case, 0, Path(d))
        per = {t: (with_calls.get(t, 0) - without.get(t, 0)) / n for t in with_calls}
        main_thread = per.get("1", 0.0)
        others = sum(v for t, v in per.items() if t != "1")
        print(
            f"{case:6} per call: application thread {main_thread / 1e3:,.0f}k, "
            f"other threads {others / 1e3:,.0f}k, all {(main_thread + others) / 1e3:,.0f}k",
            flush=True,
        )


if __name__ == "__main__":
    main()
