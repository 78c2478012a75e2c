"""Retry policies on tenacity: ``retries=N`` for the common case, tenacity's strategies for the rest.

``retry=`` takes tenacity's own building blocks — a stop, a wait, a retry condition, a tuple of
them, or a configured ``tenacity.Retrying`` — so policies read the way tenacity users write them::

    @spanflow.step(retry=(stop_after_attempt(5) | stop_after_delay(30), wait_exponential(max=8)))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias, Union

import anyio
import tenacity
from tenacity.retry import RetryBaseT, retry_base
from tenacity.stop import StopBaseT, stop_base
from tenacity.wait import WaitBaseT, wait_base

from ..errors import ConfigurationError

__all__ = ["DEFAULT_RETRIES", "RetryArg", "RetryPolicy", "RetryStrategy", "build_policy"]

#: One tenacity strategy: a stop condition, a wait, a retry condition, or a whole ``Retrying``.
RetryStrategy: TypeAlias = Union[stop_base, wait_base, retry_base, tenacity.BaseRetrying]  # noqa: UP007
#: What ``retry=`` takes: one strategy, or a tuple or list of them.
RetryArg: TypeAlias = Union[RetryStrategy, tuple[RetryStrategy, ...], list[RetryStrategy], None]  # noqa: UP007

#: Attempts when ``retry=`` names no stop condition and ``retries=`` is not given.
DEFAULT_RETRIES = 3


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again and how long to wait; makes a fresh tenacity controller per call."""

    stop: StopBaseT
    wait: WaitBaseT
    retry: RetryBaseT

    def controller(
        self, *, asynchronous: bool, before_sleep: Callable[[tenacity.RetryCallState], None]
    ) -> tenacity.BaseRetrying:
        kwargs: dict[str, Any] = {
            "stop": self.stop,
            "wait": self.wait,
            "retry": self.retry,
            "reraise": True,  # the caller sees the step's own exception, never RetryError
            "before_sleep": before_sleep,
        }
        if asynchronous:
            # anyio.sleep works on asyncio and trio alike.
            return tenacity.AsyncRetrying(sleep=anyio.sleep, **kwargs)
        return tenacity.Retrying(**kwargs)


def build_policy(retries: int | None, retry: RetryArg, *, where: str) -> RetryPolicy | None:
    """Combine ``retries=`` and ``retry=`` into a policy (None when neither asks for retries)."""
    if retries is None and retry is None:
        return None
    if retries is not None and (
        not isinstance(retries, int) or isinstance(retries, bool) or retries < 0
    ):
        raise ConfigurationError(
            f"{where}: retries={retries!r} must be an int >= 0 (retries after the first attempt)"
        )
    stop: StopBaseT | None = None
    wait: WaitBaseT | None = None
    condition: RetryBaseT | None = None
    for part in _parts(retry):
        if isinstance(part, tenacity.BaseRetrying):
            stop, wait, condition = part.stop, part.wait, part.retry
        elif isinstance(part, stop_base):
            stop = part
        elif isinstance(part, wait_base):
            wait = part
        elif isinstance(part, retry_base):
            condition = part
        else:
            raise ConfigurationError(
                f"{where}: retry= takes tenacity strategies (stop_*, wait_*, retry_if_*), a tuple "
                f"of them or a tenacity.Retrying; got {part!r}"
            )
    if retries is not None:
        by_count = tenacity.stop_after_attempt(retries + 1)
        # stop_any calls each condition: tenacity's plain-callable stops work in it too.
        stop = by_count if stop is None else tenacity.stop_any(by_count, stop)  # type: ignore[arg-type]
    if stop is None:
        stop = tenacity.stop_after_attempt(DEFAULT_RETRIES + 1)
    if wait is None:
        wait = tenacity.wait_exponential(multiplier=0.5, max=10.0) + tenacity.wait_random(0, 0.5)
    if condition is None:
        condition = tenacity.retry_if_exception_type(Exception)
    return RetryPolicy(stop=stop, wait=wait, retry=condition)


def _parts(retry: RetryArg) -> Iterable[object]:
    if retry is None:
        return ()
    if isinstance(retry, (tuple, list)):
        return retry
    return (retry,)
