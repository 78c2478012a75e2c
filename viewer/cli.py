"""The ``spanflow`` command: list, show, replay, export, import and prune stored runs.

It reads the store through ``spanflow.exporters.store`` and never loads the recording runtime,
except ``spanflow replay``, which has to run the user's workflow again. Start-up is kept to what
Python itself costs: listing runs uses the store's plain records (no pydantic), and anything
heavier (rich, file formats, the web server, package metadata) is imported by the command that
needs it. Problems are reported as
one line on stderr with exit status 2; a replay that fails again exits with 1, and one that
diverged from its recording under ``--strict`` with 3.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from spanflow.errors import SpanflowError, UnknownRunError
from spanflow.exporters.store import Store

from . import render
from .plaintext import Text

if TYPE_CHECKING:
    from spanflow.exporters.records import AnySpan

    from .plaintext import Tree

PROG: Final = "spanflow"
DEFAULT_DB: Final = Path(".spanflow") / "traces.db"
DB_ENV: Final = "SPANFLOW_DB"
EXIT_OK: Final = 0
EXIT_REPLAY_FAILED: Final = 1
EXIT_USAGE: Final = 2
#: ``replay --strict`` found calls that diverged from the recording; ``check`` found differences.
EXIT_DIVERGED: Final = 3
EXIT_DIFFERENT: Final = 3
EXIT_INTERRUPTED: Final = 130
#: The reader of stdout went away (`spanflow runs | head`): rich's console exits with 1 then.
EXIT_BROKEN_PIPE: Final = 1
RUN_STATUSES: Final = ("running", "ok", "failed", "crashed")
COMMANDS: Final = (
    "runs",
    "show",
    "replay",
    "diff",
    "check",
    "export",
    "import",
    "gc",
    "ui",
    "serve",
)
FORMATS: Final = ("jaeger", "otlp-json")

_SINCE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_SINCE_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_SIZE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_SIZE_POWERS: Final = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


class CliError(Exception):
    """A problem reported as one line on stderr, exit status 2."""


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter, sized without ``shutil``.

    argparse builds a formatter for every ``add_argument`` call, and the stock one imports
    ``shutil`` (with zlib, bz2 and lzma) to measure the terminal: ~3 ms of every command.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    """What ``shutil.get_terminal_size().columns`` says: ``COLUMNS``, stdout's size, or 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns or 80


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (raised, so ``main`` returns 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `{self.prog} --help`)")


# -- argument types -------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0 lets the system choose)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text!r}")
    return value


def parse_size(text: str) -> int:
    """Bytes from ``500MB``, ``1.5GiB``, ``200k``, ``4096`` (KB/MB/GB are powers of 1000).

    Raises:
        argparse.ArgumentTypeError: not a size.
    """
    m = _SIZE.match(text)
    if not m or (m.group(3) and not m.group(2)):
        raise argparse.ArgumentTypeError(
            f"expected a size such as 500MB, 2GB, 800KiB or a number of bytes, got {text!r}"
        )
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** _SIZE_POWERS[m.group(2).lower()])


def parse_since(text: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """An aware datetime from ``30m``, ``2h``, ``1d``, ``1w`` (ago) or an ISO 8601 date/time.

    An ISO value without a time zone is local time, like the times ``spanflow runs`` shows.

    Raises:
        CliError: neither form.
    """
    now = now or _dt.datetime.now(_dt.UTC)
    m = _SINCE.match(text)
    if m:
        seconds = float(m.group(1)) * _SINCE_UNITS[m.group(2).lower()]
        try:
            return now - _dt.timedelta(seconds=seconds)
        except OverflowError:
            return _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
    try:
        value = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"--since {text!r}: expected a duration such as 30m, 2h, 1d or 1w, or an ISO date "
            "such as 2024-05-01 or 2024-05-01T14:30"
        ) from None
    return value.astimezone() if value.tzinfo is None else value


def _print_json(value: Any) -> None:
    render.write(render.json_text(value) + "\n")


def _one_line(message: str) -> str:
    return render.clean(" ".join(message.split()), newlines=False)


# -- the store ------------------------------------------------------------------------------------


def db_path(args: argparse.Namespace) -> Path:
    """``--db``, else ``$SPANFLOW_DB``, else ``./.spanflow/traces.db``."""
    if args.db:
        return Path(args.db)
    env = os.environ.get(DB_ENV)
    return Path(env) if env else DEFAULT_DB


def _db_option(args: argparse.Namespace) -> str:
    """`` --db PATH`` to repeat in a suggested command when the store was chosen by flag."""
    import shlex

    return f" --db {shlex.quote(str(args.db))}" if args.db else ""


# -- commands -------------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    """``spanflow runs``: the newest runs, as a table or JSON."""
    since = parse_since(args.since) if args.since else None
    filters: dict[str, Any] = {"status": args.status, "workflow": args.workflow, "since": since}
    with Store.open(db_path(args)) as store:
        runs = store.list_run_data(limit=args.limit, **filters)
        total = store.count_runs(**filters) if len(runs) == args.limit else len(runs)
        id_chars = 0 if args.json else _unique_prefix_length(store, runs)
    if args.json:
        _print_json(
            [
                {
                    "id": r.id,
                    "workflow": r.workflow,
                    "status": r.status,
                    "started_at": render.iso_utc(r.started_at),
                    "duration_ms": r.duration_ms,
                    "error": r.error,
                    "incomplete": r.incomplete,
                }
                for r in runs
            ]
        )
        return EXIT_OK
    term = render.terminal()
    if not runs:
        if any(v is not None for v in filters.values()):
            message = f"no runs match those filters in {db_path(args)}"
        else:
            message = f"no runs in {db_path(args)} yet: call a @spanflow.workflow to record one"
        term.print_wrapped(Text(render.clean(message)))
        return EXIT_OK
    term.print(render.runs_table(runs, width=term.width, id_chars=id_chars))
    if total > len(runs):
        term.print_wrapped(
            Text(f"{len(runs)} of {total} runs shown; --limit {total} lists all", style="dim")
        )
    return EXIT_OK


def _unique_prefix_length(store: Store, runs: Sequence[Any], shortest: int = 12) -> int:
    """The shortest id prefix (``shortest`` at least) that names each listed run in ``store``."""
    return store.unique_prefix_length([run.id for run in runs], shortest)


def cmd_show(args: argparse.Namespace) -> int:
    """``spanflow show RUN``: a run's header and span tree, or its records as JSON."""
    with Store.open(db_path(args)) as store:
        if args.json:
            record = store.get_run(args.run)
            spans = store.spans(record.id)
            _print_json(render.show_json(record, spans))
            return EXIT_OK
        run = store.get_run_data(args.run)
        replays = store.replay_data(run.id)
        term = render.terminal()
        tree, roots = _span_tree(store, run.id, everything=args.all, width=term.width)
        tokens = render.stored_run_tokens(store, run.id)
    lone = render.is_lone_step(run, roots)
    term.print(
        render.run_view(
            run,
            replays,
            tree,
            lone_step=lone,
            tokens=tokens,
            width=term.width,
            ascii_only=term.ascii_only,
        )
    )
    if run.status in ("failed", "crashed") and run.entrypoint:
        hint = f"replay it after a fix: spanflow replay {run.id}{_db_option(args)}"
        term.print([Text()])
        term.print_wrapped(Text(render.clean(hint, newlines=False), style="dim"), soft_wrap=True)
    elif lone:
        note = "a step called outside any workflow is its own one-step run: replay needs a workflow"
        term.print([Text(), *Text(note, style="dim").wrap(term.width)])
    return EXIT_OK


def _span_tree(
    store: Store, run_id: str, *, everything: bool, width: int
) -> tuple[Tree | None, list[AnySpan]]:
    """The span tree to draw and the run's root spans.

    Only the spans drawn are read in full, so a run of 200,000 spans shows as quickly as a
    small one; ``everything`` reads and draws them all.
    """
    from . import span_forest  # only show needs it: runs starts without

    if everything:
        spans = store.span_data(run_id)
        forest = span_forest.build(spans)
        record: Callable[[int], AnySpan] = spans.__getitem__
    else:
        outline = [span_forest.Outline(*row) for row in store.span_outline(run_id)]
        forest = span_forest.build(outline)
    if not forest.spans:
        return None, []
    entries = span_forest.layout(forest, everything=everything)
    if not everything:
        wanted = span_forest.needed(forest, entries)
        by_row = store.spans_at(run_id, [outline[i].row for i in wanted])
        record = lambda i: by_row[outline[i].row]  # noqa: E731
    roots = [record(i) for i, why in forest.why.items() if why == ""]
    return render.draw_tree(forest, entries, record, width), roots


def cmd_replay(args: argparse.Namespace) -> int:
    """``spanflow replay RUN``: run the recorded workflow again with today's code."""
    # The one place the viewer loads the runtime: replaying means running the user's code.
    from spanflow.replayer import runner

    inputs, outputs = runner.parse_set(args.set)
    run_ref = _import_if_file(args, args.run, quiet=args.json)
    job = runner.load(run_ref, db_path(args), args.from_step)
    if not args.json:
        where = (
            f"from {job.workflow_file}"
            if job.workflow_file
            else f"from the import path and {Path.cwd()}"
        )
        render.write(
            render.clean(f"replaying run {job.run_id}: importing {job.entrypoint} {where}") + "\n"
        )
        sys.stdout.flush()
        outcome = runner.run(job, allow=args.allow, inputs=inputs, outputs=outputs)
    else:
        # stdout carries the JSON alone: what the workflow prints goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            outcome = runner.run(job, allow=args.allow, inputs=inputs, outputs=outputs)
    diverged = outcome.diverged
    if args.json:
        _print_json(
            {
                "run": outcome.run_id,
                "status": "ok" if outcome.error is None else "failed",
                "reused": list(outcome.plan.reused),
                "executed": list(outcome.plan.executed),
                "diverged": diverged,
            }
        )
    else:
        _print_replay_summary(args, outcome, diverged)
    if outcome.error is not None:
        return EXIT_REPLAY_FAILED
    return EXIT_DIVERGED if args.strict and diverged else EXIT_OK


def _print_replay_summary(args: argparse.Namespace, outcome: Any, diverged: list[Any]) -> None:
    import pydantic_core
    from rich.text import Text

    plan = outcome.plan
    console = render.make_console()
    summary = Text()
    if outcome.edits:
        summary.append(f"edited: {len(outcome.edits)}\n", style="bold")
        for edit in outcome.edits:
            value = render.shorten(json.dumps(edit["value"], ensure_ascii=False))
            summary.append(f"  {render.clean(edit['target'])} = {render.clean(value)}\n")
    for title, steps in (
        ("reused (recorded output, not executed)", plan.reused),
        ("executed", plan.executed),
    ):
        summary.append(f"{title}: {len(steps)}\n", style="bold")
        for step in steps:
            summary.append(f"  {render.clean(step)}\n")
    if diverged:
        summary.append(f"diverged from the recording: {len(diverged)}\n", style="bold yellow")
        for item in diverged:
            what = (
                "recorded, not called today"
                if item["kind"] == "removed"
                else "called today, not recorded"
            )
            summary.append(f"  {item['kind']}: {render.clean(item['path'])} ({what})\n")
    if plan.notes:
        summary.append("notes:\n", style="bold")
        for note in plan.notes:
            summary.append(f"  {render.clean(note)}\n", style="yellow")
    summary.append("new run: ", style="bold")
    summary.append(f"{render.clean(outcome.run_id or '(not recorded)', newlines=False)}\n")
    if outcome.error is None:
        result = pydantic_core.to_jsonable_python(outcome.value, fallback=repr)
        summary.append("result: ", style="bold green")
        summary.append(render.clean(render.shorten(json.dumps(result, ensure_ascii=False))))
    else:
        error = f"{type(outcome.error).__name__}: {outcome.error}"
        summary.append("failed again: ", style="bold red")
        summary.append(render.clean(render.shorten(error)), style="red")
    if outcome.run_id:
        see = f"see it: spanflow show {outcome.run_id}{_db_option(args)}"
        summary.append("\n" + render.clean(see, newlines=False), style="dim")
    console.print(summary, soft_wrap=True)


def _import_if_file(args: argparse.Namespace, ref: str, *, quiet: bool = False) -> str:
    """``ref`` itself when it is not a file; else the id of the one run the file holds, after
    importing it into the store (a second import of the same file adds nothing)."""
    source = Path(ref)
    if not source.is_file():
        return ref
    spans = _read_spans(source)
    run_ids = sorted({span.run_id for span in spans})
    if len(run_ids) != 1:
        raise CliError(
            f"{source} holds {_count(len(run_ids), 'run')}; replay needs a file of one run "
            "(import it with `spanflow import` and replay one of its run ids)"
        )
    line = _store_spans(args, source, spans, run_ids)
    render.write(line + "\n", sys.stderr if quiet else sys.stdout)
    return str(run_ids[0])


def cmd_diff(args: argparse.Namespace) -> int:
    """``spanflow diff RUN_A [RUN_B]``: two runs' step trees aligned as replay matches them."""
    from spanflow.replayer.diff import diff_spans

    with Store.open(db_path(args)) as store:
        a = store.get_run(args.run_a)
        if args.run_b is None:
            latest = store.latest_replay(a.id)  # a check is not a replay of a fix
            if latest is None:
                raise CliError(
                    f"run {a.id} has no replay to compare with; give RUN_B, or replay it first: "
                    f"spanflow replay {a.id}{_db_option(args)}"
                )
            b = latest
        else:
            b = store.get_run(args.run_b)
        result = diff_spans(a.id, store.spans(a.id), b.id, store.spans(b.id))
    if args.json:
        _print_json(result.to_json())
        return EXIT_OK
    _print_lines(result.lines(render.make_console().width))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """``spanflow check RUN_OR_FILE``: re-run a recording with today's code and compare."""
    # Like replay, a check runs the user's workflow: it loads the runtime.
    from spanflow.replayer.check import check

    reuse = None if args.reuse is None else [x for x in args.reuse.split(",") if x.strip()]
    result = check(args.run, db_path(args), reuse, allow=args.allow)
    if args.json:
        _print_json(
            {
                **result.diff.to_json(),
                "passed": result.passed,
                "served": result.served,
                "live": result.live,
                "refused": [{"path": r.path, "reason": r.reason} for r in result.refused],
            }
        )
    else:
        _print_lines(result.lines(render.make_console().width))
        if result.run_id:
            render.write(f"see it: spanflow show {result.run_id}{_db_option(args)}\n")
    return EXIT_OK if result.passed else EXIT_DIFFERENT


def _print_lines(lines: Sequence[tuple[str, str]]) -> None:
    from rich.text import Text

    console = render.make_console()
    for text, style in lines:
        console.print(Text(render.clean(text), style=style), soft_wrap=True)


def cmd_export(args: argparse.Namespace) -> int:
    """``spanflow export RUN``: a run as Jaeger JSON or OTLP/JSON, to stdout or a file.

    Spans are written as they are read, so a run of any size needs the memory of one span.
    """
    from spanflow.exporters.file_formats import write_jaeger, write_otlp_json

    with Store.open(db_path(args)) as store:
        run = store.get_run(args.run)
        spans = store.iter_spans(run.id, by_resource=args.format == "otlp-json")
        convert = write_jaeger if args.format == "jaeger" else write_otlp_json
        if args.output is None or args.output == "-":
            convert(run, spans, lambda text: render.write(render.safe_json(text)))
            return EXIT_OK
        target = Path(args.output)
        try:
            with target.open("w", encoding="utf-8") as out:
                count = convert(run, spans, out.write)
        except OSError as exc:
            raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    line = f"wrote run {run.id} ({_count(count, 'span')}) as {args.format} to {target}"
    render.write(render.clean(line) + "\n")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """``spanflow import FILE``: load OTLP/JSON or Jaeger JSON spans into the store (created if
    missing); spans already stored are skipped, so importing twice gives one run."""
    source = Path(args.file)
    spans = _read_spans(source)
    if not spans:
        render.write(render.clean(f"{source} holds no spans; nothing imported") + "\n")
        return EXIT_OK
    run_ids = sorted({span.run_id for span in spans})
    render.write(render.clean(_store_spans(args, source, spans, run_ids)) + "\n")
    return EXIT_OK


def _read_spans(source: Path) -> list[Any]:
    from spanflow.exporters.file_formats import parse_trace_file

    try:
        data = source.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        return parse_trace_file(data)
    except ValueError as exc:
        raise CliError(f"{source}: {exc}") from None


def _store_spans(
    args: argparse.Namespace, source: Path, spans: list[Any], run_ids: list[str]
) -> str:
    path = db_path(args)
    with Store.open(path, readonly=False) as store:
        new_runs = sum(1 for run_id in run_ids if not _has_run(store, run_id))
        inserted = store.write_spans(spans)
    skipped = len(spans) - inserted
    line = (
        f"imported {_count(inserted, 'span')} of {_count(len(run_ids), 'run')} "
        f"({new_runs} new) from {source} into {path}"
    )
    if skipped:
        line += f"; {_count(skipped, 'span')} already stored, skipped"
    return line


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _has_run(store: Store, run_id: str) -> bool:
    try:
        store.get_run(run_id)
    except UnknownRunError:
        return False
    return True


#: Runs listed by ``spanflow gc --dry-run`` before "… N more".
GC_LISTED: Final = 50


def cmd_gc(args: argparse.Namespace) -> int:
    """``spanflow gc``: delete old runs (by age and/or total size) and compact the file.

    Sizes are measured after the write-ahead log has been moved into the file, so a
    concurrent writer's pending log does not count. ``--dry-run`` runs the same clean-up on a
    copy of the store in a temporary folder and lists what it deleted there.
    """
    if args.keep_days is None and args.max_size is None:
        raise CliError("gc needs --keep-days N, --max-size SIZE, or both")
    path = db_path(args)
    # Refuse a missing or foreign file first: opening for writing would create a store there.
    Store.open(path).close()
    if args.max_size is not None:
        smallest = _empty_store_bytes()
        if args.max_size < smallest:
            raise CliError(
                f"--max-size {render.format_bytes(args.max_size)} is below the smallest "
                f"possible store: an empty one takes {render.format_bytes(smallest)} "
                f"({smallest} bytes)"
            )
    options: dict[str, Any] = {"keep_days": args.keep_days, "max_bytes": args.max_size}
    if args.dry_run:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="spanflow-gc-") as tmp:
            copy = Path(tmp) / "copy.db"
            with Store.open(path) as store:
                runs = store.list_runs(limit=store.count_runs() + 1)
                store.copy_to(copy)
            with Store.open(copy, readonly=False) as trial:
                before = trial.bytes_on_disk()
                result = trial.gc(**options)
                kept = {r.id for r in trial.list_runs(limit=result.runs_kept + 1)}
        doomed = [r for r in runs if r.id not in kept]
        lines = [
            f"would delete {_count(result.runs_deleted, 'run')} "
            f"({_count(result.spans_deleted, 'span')}); {_count(result.runs_kept, 'run')} "
            f"would be kept in {path} (dry run: nothing deleted)"
        ]
        lines += [
            f"  {r.id}  {r.status:<7}  {render.local_time(r.started_at)}  "
            f"{render.one_line(r.workflow or '?', 60)}"
            for r in doomed[:GC_LISTED]
        ]
        if len(doomed) > GC_LISTED:
            lines.append(f"  … {len(doomed) - GC_LISTED} more")
        lines.append(
            f"size: {render.format_bytes(before)} -> {render.format_bytes(result.bytes_after)}"
        )
    else:
        with Store.open(path, readonly=False) as store:
            before = store.bytes_on_disk()
            result = store.gc(**options)
            after = store.bytes_on_disk()
        lines = [
            f"deleted {_count(result.runs_deleted, 'run')} "
            f"({_count(result.spans_deleted, 'span')}); {_count(result.runs_kept, 'run')} "
            f"kept in {path}",
            f"size: {render.format_bytes(before)} -> {render.format_bytes(after)}",
        ]
    render.write("".join(render.clean(line, newlines=False) + "\n" for line in lines))
    return EXIT_OK


def _empty_store_bytes() -> int:
    """The size of a store with no runs (the schema alone), measured on a fresh one."""
    import tempfile

    with (
        tempfile.TemporaryDirectory(prefix="spanflow-gc-") as tmp,
        Store.open(Path(tmp) / "empty.db", readonly=False) as empty,
    ):
        return empty.bytes_on_disk()


def cmd_ui(args: argparse.Namespace) -> int:
    """``spanflow ui``: serve the web viewer on 127.0.0.1."""
    path = db_path(args)
    Store.open(path).close()  # a bad path is a one-line error, not a server that shows nothing
    try:
        web = importlib.import_module("spanflow.viewer.web")
    except ImportError as exc:
        raise CliError(f"the web viewer cannot be loaded: {exc}") from None
    options: dict[str, Any] = {"open_browser": not args.no_open}
    if args.port is not None:
        options["port"] = args.port
    web.serve(path, **options)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """``spanflow serve``: receive OTLP/HTTP traces into the store and serve the web viewer."""
    try:
        receiver = importlib.import_module("spanflow.viewer.serve")
    except ImportError as exc:
        raise CliError(f"the OTLP receiver cannot be loaded: {exc}") from None
    options: dict[str, Any] = {"open_browser": not args.no_open}
    if args.port is not None:
        options["port"] = args.port
    if args.otlp_port is not None:
        options["otlp_port"] = args.otlp_port
    receiver.serve(db_path(args), **options)
    return EXIT_OK


# -- the parser -----------------------------------------------------------------------------------


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("spanflow")
    except metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``: reads the installed version only when asked (importlib.metadata is slow)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        render.write(f"{PROG} {_version()}\n")
        parser.exit()


class _Unused:
    """Stands in for the parser of a command that is not being run (argparse spends ~0.3 ms
    on each command's parser and arguments)."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass


def build_parser(command_name: str | None = None) -> argparse.ArgumentParser:
    """The ``spanflow`` argument parser with its subcommands.

    With ``command_name`` only that command's parser is built: enough to parse a command line
    that starts with that command.
    """
    parser = _Parser(
        prog=PROG,
        description="Inspect, replay and export the runs spanflow recorded.",
        epilog=f"The store is --db PATH, else ${DB_ENV}, else {DEFAULT_DB}.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show program's version number and exit"
    )
    db = _Parser(add_help=False)
    db.add_argument("--db", metavar="PATH", help=f"the store (default: ${DB_ENV} or {DEFAULT_DB})")
    # prog= spares argparse a help formatter (and the shutil import) just to spell "spanflow".
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, prog=PROG)

    def command(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> Any:
        if command_name is not None and name != command_name:
            return _Unused()
        p = sub.add_parser(name, parents=[db], help=text, description=text)
        p.set_defaults(handler=handler)
        return p

    p = command("runs", cmd_runs, "List runs, newest first.")
    p.add_argument("--status", choices=RUN_STATUSES, help="only runs with this status")
    p.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
    p.add_argument(
        "--since", metavar="WHEN", help="only runs started since: 30m, 2h, 1d, 1w or an ISO date"
    )
    p.add_argument("--limit", type=positive_int, default=20, metavar="N", help="at most N (20)")
    p.add_argument("--json", action="store_true", help="print a JSON array")

    p = command("show", cmd_show, "Show one run: its span tree, errors, diffs and outputs.")
    p.add_argument("run", metavar="RUN", help="run id, or a unique prefix of at least 4 chars")
    p.add_argument("--json", action="store_true", help="print the run and span records as JSON")
    p.add_argument(
        "--all",
        action="store_true",
        help="draw every span (by default long lists of siblings are collapsed)",
    )

    p = command("replay", cmd_replay, "Re-run a recorded run with today's code.")
    p.add_argument(
        "run",
        metavar="RUN",
        help="run id, a unique prefix of at least 4 chars, or an OTLP/JSON or Jaeger JSON file "
        "(imported into the store first)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TARGET=JSON",
        help="replace a workflow argument (input.<param>[.<key>...]=JSON) or a recorded step "
        "output (<step path>.output=JSON) before replaying; repeatable",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 when calls diverged from the recording (removed or added steps)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"run", "status", "reused", "executed", "diverged"} as JSON',
    )
    p.add_argument(
        "--from",
        dest="from_step",
        metavar="STEP",
        help="execute this step and everything after it, even where it succeeded",
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="MODULE",
        help="also import MODULE (and its submodules) from outside the current directory; "
        "repeatable",
    )

    p = command("diff", cmd_diff, "Compare two runs step by step (default: a run and its replay).")
    p.add_argument("run_a", metavar="RUN_A", help="run id, or a unique prefix of at least 4 chars")
    p.add_argument(
        "run_b", metavar="RUN_B", nargs="?", help="default: RUN_A's latest replay (not a check)"
    )
    p.add_argument("--json", action="store_true", help="print the aligned steps as JSON")

    p = command("check", cmd_check, "Re-run a recording with today's code; exit 3 if it differs.")
    p.add_argument("run", metavar="RUN_OR_FILE", help="run id, or an OTLP/JSON file to import")
    p.add_argument(
        "--reuse",
        metavar="KIND_OR_NAME,...",
        help="serve these kinds or steps from the recording (default: llm,tool,retriever,embedding)",
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module the check may import although it is not under the current directory",
    )
    p.add_argument("--json", action="store_true", help="print the differences as JSON")

    p = command("export", cmd_export, "Write a run as Jaeger JSON or OTLP/JSON.")
    p.add_argument("run", metavar="RUN", help="run id, or a unique prefix of at least 4 chars")
    p.add_argument("--format", choices=FORMATS, required=True, help="jaeger or otlp-json")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")

    p = command("import", cmd_import, "Load OTLP/JSON or Jaeger JSON spans into the store.")
    p.add_argument(
        "file",
        metavar="FILE",
        help="an OTLP/JSON file (one document or JSON lines) or a Jaeger JSON file",
    )

    p = command("gc", cmd_gc, "Delete old runs and compact the store.")
    p.add_argument(
        "--keep-days", type=non_negative_float, metavar="N", help="delete runs older than N days"
    )
    p.add_argument(
        "--max-size",
        type=parse_size,
        metavar="SIZE",
        help="then delete the oldest runs until the store fits in SIZE (500MB, 2GB)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs that would be deleted and the size after, deleting nothing",
    )

    p = command("ui", cmd_ui, "Serve the web viewer on 127.0.0.1.")
    p.add_argument(
        "--port", type=port_number, default=None, metavar="N", help="port (0: any free one)"
    )
    p.add_argument("--no-open", action="store_true", help="do not open a browser")

    p = command("serve", cmd_serve, "Receive OTLP/HTTP traces into the store and serve the viewer.")
    p.add_argument(
        "--port", type=port_number, default=None, metavar="N", help="viewer port (0: any free one)"
    )
    p.add_argument(
        "--otlp-port",
        type=port_number,
        default=None,
        metavar="N",
        help="OTLP/HTTP receiver port (default 4318; 0: any free one)",
    )
    p.add_argument("--no-open", action="store_true", help="do not open a browser")
    return parser


# -- entry point ----------------------------------------------------------------------------------


def _fail(message: str) -> int:
    render.write(f"{PROG}: error: {_one_line(message)}\n", sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``spanflow`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        handler = getattr(args, "handler", None)
        if handler is None:
            raise CliError(f"choose a command: {', '.join(COMMANDS)} (see `{PROG} --help`)")
        return int(handler(args))
    except (CliError, SpanflowError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        return _fail(str(exc))
    except Exception as exc:
        if os.environ.get("SPANFLOW_DEBUG"):
            raise
        return _fail(
            f"unexpected {type(exc).__name__}: {exc} (set SPANFLOW_DEBUG=1 to see the traceback)"
        )


def _silence_stdout() -> None:
    # The reader went away (`spanflow runs | head`): point stdout at /dev/null so the
    # interpreter's final flush does not complain either.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
