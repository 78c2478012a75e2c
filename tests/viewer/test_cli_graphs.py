"""``spanflow show`` and ``export`` on hostile span graphs and on huge runs, as real processes."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spanflow import attributes as attr
from spanflow.exporters.file_formats import parse_otlp_json
from spanflow.exporters.store import Store

from tests.viewer.test_cli import MS, T0, span, subprocess_env, workflow_root, write_store

RUN = "c" * 32
ROOT = "1" * 16


def insert_spans(db: Path, rows: list[tuple[str, str | None, str, str, int]]) -> None:
    """Raw ``(span_id, parent_id, name, status, start_ns)`` rows into RUN, as a foreign writer
    might leave them (the store's own writer never makes cycles or duplicate ids)."""
    with sqlite3.connect(db) as conn:
        (pk,) = conn.execute("SELECT pk FROM runs WHERE id = ?", (RUN,)).fetchone()
        conn.executemany(
            "INSERT INTO spans (run_pk, span_id, parent_id, name, kind, status, status_message,"
            " start_ns, end_ns, attributes, resource_pk) VALUES (?, ?, ?, ?, 'INTERNAL', ?, ?,"
            " ?, ?, ?, NULL)",
            [
                (
                    pk,
                    span_id,
                    parent,
                    name,
                    status,
                    "it broke" if status == "ERROR" else None,
                    start,
                    start + MS,
                    json.dumps({attr.RUN_ID: RUN, attr.STEP_NAME: name}),
                )
                for span_id, parent, name, status, start in rows
            ],
        )
    conn.close()


def proc(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spanflow.viewer.cli", *map(str, args)],
        cwd=cwd,
        env=subprocess_env(COLUMNS="120"),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def cyclic_db(tmp_path: Path) -> Path:
    db = write_store(tmp_path / "cycles.db", [workflow_root(RUN)])
    insert_spans(
        db,
        [
            ("a" * 16, "b" * 16, "cycle-a", "UNSET", T0 + 1 * MS),  # A -> B -> A
            ("b" * 16, "a" * 16, "cycle-b", "ERROR", T0 + 2 * MS),
            ("5" * 16, "5" * 16, "self-parent", "UNSET", T0 + 3 * MS),
            ("6" * 16, ROOT, "dup-first", "UNSET", T0 + 4 * MS),  # the same id twice
            ("6" * 16, ROOT, "dup-second", "UNSET", T0 + 5 * MS),
            ("7" * 16, "6" * 16, "under-dup", "UNSET", T0 + 6 * MS),
            ("8" * 16, "9" * 16, "three-a", "UNSET", T0 + 7 * MS),  # a 3-cycle
            ("9" * 16, "d" * 16, "three-b", "UNSET", T0 + 8 * MS),
            ("d" * 16, "8" * 16, "three-c", "UNSET", T0 + 9 * MS),
            ("e" * 16, "a" * 16, "below-cycle", "UNSET", T0 + 10 * MS),
        ],
    )
    return db


NAMES = [
    "crafted",
    "cycle-a",
    "cycle-b",
    "self-parent",
    "dup-first",
    "dup-second",
    "under-dup",
    "three-a",
    "three-b",
    "three-c",
    "below-cycle",
]


def test_show_draws_every_span_of_a_cyclic_graph_once(cyclic_db: Path, tmp_path: Path) -> None:
    for extra in ([], ["--all"]):
        started = time.monotonic()
        done = proc("show", RUN, "--db", cyclic_db, *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 30
        out = done.stdout.split("\nspans\n", 1)[1]
        for name in NAMES:
            assert len(re.findall(rf"── {name} ", out)) == 1, (name, out)
        assert re.search(r"cycle-a .*\(cycle\)", out), out
        assert re.search(r"self-parent .*\(self-parent\)", out), out
        assert re.search(r"dup-second .*\(duplicate span id\)", out), out
        # One member of each cycle is on top; the others hang below it as recorded.
        assert re.search(r"cycle-a.*\n(.*\n)*.*── cycle-b", out), out


@pytest.mark.parametrize("fmt", ["jaeger", "otlp-json"])
def test_export_of_a_cyclic_graph_keeps_every_span(
    cyclic_db: Path, tmp_path: Path, fmt: str
) -> None:
    done = proc("export", RUN, "--format", fmt, "--db", cyclic_db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    if fmt == "jaeger":
        names = [s["operationName"] for s in doc["data"][0]["spans"]]
    else:
        names = [s.name for s in parse_otlp_json(done.stdout)]
    assert sorted(names) == sorted(NAMES)


def test_a_unit_forest_terminates_on_any_parent_links() -> None:
    from spanflow.viewer import span_forest

    ids = [f"{i:016x}" for i in range(1, 41)]
    # Every span's parent is the next one, the last one's is the first: one 40-cycle, plus
    # every span once more under a duplicate id.
    spans = [span(RUN, ids[i], ids[(i + 1) % 40], f"n{i}", T0 + i, T0 + i + 1) for i in range(40)]
    spans += [span(RUN, ids[i], ids[i], f"d{i}", T0 + i, T0 + i + 1) for i in range(40)]
    forest = span_forest.build(spans)
    entries = span_forest.layout(forest, everything=True)
    drawn = sorted(e.span for e in entries if e.span >= 0)
    assert drawn == list(range(80))
    assert forest.why[0] == "cycle" and len(forest.duplicates) == 40


# -- huge runs -------------------------------------------------------------------------------------

HUGE = 200_000
FAILED_AT = (1234, 150_000)


@pytest.fixture(scope="module")
def huge_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = write_store(tmp_path_factory.mktemp("huge") / "huge.db", [workflow_root(RUN)])
    insert_spans(
        db,
        [
            (f"{i + 0x100:016x}", ROOT, f"item{i}", "ERROR" if i in FAILED_AT else "OK", T0 + i)
            for i in range(HUGE - 1)
        ],
    )
    return db


def test_show_of_a_huge_run_is_quick_and_bounded(huge_db: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    done = proc("show", RUN, "--db", huge_db, cwd=tmp_path)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) < 200, len(lines)
    assert took < 15, took  # 40 s before spans were read only where they are drawn
    for i in (0, 1, *FAILED_AT, HUGE - 2):
        assert re.search(rf"\bitem{i} ", done.stdout), i
    hidden = [int(n.replace(",", "")) for n in re.findall(r"… ([\d,]+) more spans", done.stdout)]
    drawn = len(re.findall(r"\bitem\d+ ", done.stdout))
    assert drawn + sum(hidden) == HUGE - 1, (drawn, hidden)
    assert "--all" in done.stdout


def test_show_all_of_a_run_draws_every_span(tmp_path: Path) -> None:
    db = write_store(tmp_path / "many.db", [workflow_root(RUN)])
    insert_spans(db, [(f"{i + 0x100:016x}", ROOT, f"item{i}", "OK", T0 + i) for i in range(500)])
    collapsed = proc("show", RUN, "--db", db, cwd=tmp_path).stdout
    everything = proc("show", RUN, "--db", db, "--all", cwd=tmp_path).stdout
    assert "more spans" in collapsed and "more spans" not in everything
    assert len(re.findall(r"\bitem\d+ ", everything)) == 500
    as_json = json.loads(proc("show", RUN, "--db", db, "--json", cwd=tmp_path).stdout)
    assert len(as_json["spans"]) == 501
    with Store.open(db) as store:
        assert len(store.spans(RUN)) == 501


#: Peak memory that exporting the huge run must stay under (it was 2.4-2.6 GB before export
#: streamed; now about 60 MB).
EXPORT_RSS_MB = 300


EXPORT = [sys.executable, "-m", "spanflow.viewer.cli", "export", RUN, "--format"]


@pytest.mark.parametrize("fmt", ["jaeger", "otlp-json"])
def test_export_of_a_huge_run_streams_in_bounded_memory(
    huge_db: Path, tmp_path: Path, fmt: str
) -> None:
    target = tmp_path / "huge.json"
    measure = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, *EXPORT, fmt, "--db", str(huge_db), "-o", str(target)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.strip()) / 1024
    assert peak_mb < EXPORT_RSS_MB, peak_mb
    text = target.read_text(encoding="utf-8")
    if fmt == "jaeger":
        spans = json.loads(text)["data"][0]["spans"]
        assert len(spans) == HUGE
        failed = [
            s["operationName"]
            for s in spans
            if {"key": "error", "type": "bool", "value": True} in s["tags"]
        ]
        assert failed == [f"item{i}" for i in FAILED_AT]
    else:
        assert len(parse_otlp_json(text)) == HUGE


@pytest.mark.parametrize("fmt", ["jaeger", "otlp-json"])
def test_streamed_export_is_the_document_to_jaeger_and_to_otlp_json_make(
    tmp_path: Path, fmt: str
) -> None:
    from spanflow.exporters.file_formats import to_jaeger, to_otlp_json
    from spanflow.exporters.records import EventRecord, LinkRecord, SpanRecord

    wide = {f"k{i}": [i, str(i)] if i % 3 else i for i in range(5000)}
    spans = [
        workflow_root(RUN, "crafted", error="attribute of that name", x=1.5),
        SpanRecord(
            run_id=RUN,
            span_id="2" * 16,
            parent_id=ROOT,
            name="wide",
            status="ERROR",
            status_message="no",
            start_ns=T0 + MS,
            end_ns=T0 + 2 * MS,
            attributes={attr.RUN_ID: RUN, **wide},
            events=[EventRecord(name="log", time_ns=T0 + MS, attributes={"m": "\ud800 lone"})],
            links=[LinkRecord(trace_id="d" * 32, span_id="3" * 16, attributes={"a": 1})],
            resource={"service.name": "other"},
        ),
    ]
    db = write_store(tmp_path / "s.db", spans)
    done = proc("export", RUN, "--format", fmt, "--db", db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Store.open(db) as store:
        run, stored = store.get_run(RUN), store.spans(RUN)
    expected = to_jaeger(run, stored) if fmt == "jaeger" else to_otlp_json(run, stored)
    assert json.loads(done.stdout) == expected
