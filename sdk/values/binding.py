"""Turn a call's ``*args, **kwargs`` into ``{parameter name: value}`` cheaply.

``inspect.Signature.bind`` costs several microseconds per call; most steps have plain
positional-or-keyword parameters, which a precomputed name list binds in a fraction of that.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

_PLAIN = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_EMPTY = inspect.Parameter.empty


class Binder:
    """Binds arguments of one callable by parameter name, defaults applied."""

    __slots__ = ("_defaults", "_names", "_positional", "signature", "skip_first")

    def __init__(self, fn: Callable[..., Any], *, skip_first: bool = False) -> None:
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # builtins without a text signature
            self.signature = None
        self.skip_first = skip_first
        self._names: tuple[str, ...] | None = None
        self._positional = 0
        self._defaults: dict[str, Any] = {}
        if self.signature is not None:
            params = list(self.signature.parameters.values())
            if all(p.kind in _PLAIN for p in params):
                self._names = tuple(p.name for p in params)
                self._positional = sum(
                    p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params
                )
                self._defaults = {p.name: p.default for p in params if p.default is not _EMPTY}

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The bound arguments (without ``self``/``cls`` for methods); never raises."""
        bound = self._bind_fast(args, kwargs)
        if bound is None:
            bound = self._bind_slow(args, kwargs)
        if self.skip_first and bound:
            bound.pop(next(iter(bound)))
        return bound

    def _bind_fast(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        names = self._names
        if names is None or len(args) > self._positional:
            return None
        bound = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key in bound or key not in names:
                return None
            bound[key] = value
        if len(bound) < len(names):
            for name in names:
                if name not in bound:
                    if name not in self._defaults:
                        return None  # a missing argument: let the real call raise
                    bound[name] = self._defaults[name]
            bound = {name: bound[name] for name in names}
        return bound

    def _bind_slow(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if self.signature is not None:
            try:
                ba = self.signature.bind(*args, **kwargs)
            except TypeError:
                pass
            else:
                ba.apply_defaults()
                return dict(ba.arguments)
        return {"args": list(args), "kwargs": dict(kwargs)}
