"""Where a call is: the current run and the current step, carried in the OpenTelemetry context.

spanflow keeps its own per-run state in the same ``contextvars``-backed OTel ``Context`` as the
current span, so one ``attach`` per step covers both and everything that already propagates OTel
context (asyncio and trio tasks, ``anyio.to_thread``, ``with_context``) propagates runs too.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from opentelemetry import context as otel_context

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from .replayer.plan import ReplayPlan

P = ParamSpec("P")
R = TypeVar("R")

_CALL_KEY = otel_context.create_key("spanflow.call")
_REPLAY_KEY = otel_context.create_key("spanflow.replay")


# Token totals are added rarely (an LLM step's usage): one lock for every run of the process
# instead of a lock made for each run.
_USAGE_LOCK = threading.Lock()


class RunState:
    """Mutable facts about one run, shared by every step of it (all threads and tasks)."""

    __slots__ = ("input_tokens", "output_tokens", "replay", "root_span", "run_id")

    def __init__(self, run_id: str, root_span: Span, replay: ReplayPlan | None = None) -> None:
        self.run_id = run_id
        self.root_span = root_span
        self.replay = replay
        self.input_tokens = 0
        self.output_tokens = 0

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        with _USAGE_LOCK:
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens


class CallFrame:
    """One step call's place in the call tree (numbers siblings for replay matching).

    The frame also carries its run, so one context value says both where and in which run a
    call is: one ``Context`` copy per step instead of two.
    """

    __slots__ = ("children", "path", "run", "span")

    def __init__(self, path: str, span: Span, run: RunState | None = None) -> None:
        self.path = path
        self.span = span
        self.run = run
        self.children: dict[str, Iterator[int]] = {}

    def next_child(self, name: str) -> tuple[str, int]:
        """Return the child's path and its occurrence among siblings of the same name."""
        counter = self.children.get(name)
        if counter is None:
            # setdefault and next() on itertools.count are atomic: no lock needed across threads.
            counter = self.children.setdefault(name, itertools.count())
        index = next(counter)
        return f"{self.path}/{name}[{index}]", index


def current_step_span(ctx: otel_context.Context | None = None) -> Span | None:
    """The span of the innermost step being called (not an attempt or a user's own span)."""
    frame = current_frame(ctx)
    return frame.span if frame is not None else None


def current_run(ctx: otel_context.Context | None = None) -> RunState | None:
    """The run the caller is in, or None outside any run."""
    frame = current_frame(ctx)
    return frame.run if frame is not None else None


def current_run_id() -> str | None:
    """The id of the run the caller is in (32 hex, the trace id), or None outside any run."""
    run = current_run()
    return run.run_id if run is not None else None


def current_frame(ctx: otel_context.Context | None = None) -> CallFrame | None:
    frame = otel_context.get_value(_CALL_KEY, ctx)
    return frame if isinstance(frame, CallFrame) else None


def with_run(ctx: otel_context.Context, run: RunState, frame: CallFrame) -> otel_context.Context:
    """``ctx`` with ``frame`` (belonging to ``run``) as the current call."""
    frame.run = run
    return otel_context.set_value(_CALL_KEY, frame, ctx)


def current_replay(ctx: otel_context.Context | None = None) -> ReplayPlan | None:
    """The replay plan a new run starts under (set by the replay driver), or None."""
    plan = otel_context.get_value(_REPLAY_KEY, ctx)
    return plan  # type: ignore[return-value]


def with_replay(ctx: otel_context.Context, plan: ReplayPlan) -> otel_context.Context:
    """``ctx`` under which the next run replays ``plan``."""
    return otel_context.set_value(_REPLAY_KEY, plan, ctx)


def with_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind ``fn`` to the caller's context (current run, step and span).

    ``concurrent.futures`` pools and ``threading.Thread`` do not copy context, so steps called in
    them would start runs of their own. Wrap the callable at submission time instead::

        pool.submit(spanflow.with_context(fetch), url)
        pool.map(spanflow.with_context(fetch), urls)

    Each call runs in a fresh copy of the captured context, so the wrapper can be called from
    several threads at once.
    """
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def run_in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(fn, *args, **kwargs)

    return run_in_context
