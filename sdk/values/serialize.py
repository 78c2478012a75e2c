"""Values to bounded, redacted JSON: what a span records as ``input.value`` / ``output.value``.

:func:`encode` turns any Python value into JSON text of at most ``max_bytes`` UTF-8 bytes and never
raises. It walks the value (again, smaller, only when a cut overshoots), converting what JSON
cannot hold (models, dataclasses, dates, bytes, sets, exceptions, arbitrary objects), replacing
secrets (see :mod:`spanflow.values.redact`) and cutting long strings, lists and mappings while it walks,
so a 10 MB value costs about as much as a ``max_bytes`` one. What is cut or replaced is marked
in place:

* a string keeps its head: ``"abc…[+1234 chars]"``;
* a list ends with ``"…[+N items]"``, a mapping with the key ``"…[+N items]"``;
* a container nested deeper than :data:`MAX_DEPTH` becomes ``"…[depth limit]"``, a container
  that contains itself becomes ``"[cycle]"`` where it repeats;
* values under a key that names a secret (see :mod:`spanflow.values.redact`) become ``"[REDACTED]"``
  whatever their type, except ``None`` and booleans, which hold no secret and say whether one
  was given;
* if nothing structural fits, the whole value becomes
  ``{"__truncated__": true, "size": <estimated bytes of the full JSON>, "preview": "<head>"}``.

Size bound: ``len(Encoded.json.encode("utf-8")) <= max(max_bytes, MIN_MAX_BYTES)``, exactly.
"""

from __future__ import annotations

import dataclasses
import json
import json.encoder
import logging
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set, ValuesView
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Final, NamedTuple
from uuid import UUID

import pydantic
from pydantic import BaseModel, RootModel
from pydantic_core import to_jsonable_python

from .._stats import count
from .redact import REDACTED, Redactor

__all__ = [
    "CYCLE",
    "DEPTH_MARKER",
    "MAX_DEPTH",
    "MIN_MAX_BYTES",
    "Encoded",
    "Flags",
    "encode",
    "to_jsonable",
]

logger = logging.getLogger("spanflow")

MAX_DEPTH: Final = 64
"""Containers nested deeper than this are replaced by :data:`DEPTH_MARKER`."""
MIN_MAX_BYTES: Final = 64
"""``max_bytes`` below this is raised to it (room for the smallest truncation envelope)."""
CYCLE: Final = "[cycle]"
DEPTH_MARKER: Final = "…[depth limit]"

_REPR_CHARS: Final = 200
_PREVIEW_BYTES: Final = 32
# Text scanned for secrets past a cut, so a secret straddling the cut is still recognised.
_SCAN_SLACK: Final = 512
# A cut string is only worth its marker when it drops more than this many characters.
_MIN_CUT: Final = 24
_ATTEMPTS: Final = 12
_MARKER_ROOM: Final = 24
_FLAT_ITEMS: Final = 16
# Arrays with more elements than this are recorded as shape, dtype and this many first items.
_ARRAY_ITEMS: Final = 64
_FLAT_CHARS: Final = 256
_UNBOUNDED: Final = sys.maxsize
_SECRET_TYPES: tuple[type, ...] = tuple(
    t for t in (pydantic.SecretStr, pydantic.SecretBytes, getattr(pydantic, "Secret", None)) if t
)
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR: Final = re.compile("[\ud800-\udbff][\udc00-\udfff]")


class Encoded(NamedTuple):
    """One value as recorded (a named tuple: made for every recorded value, it must be cheap).

    Attributes:
        json: valid JSON text, at most ``max(max_bytes, MIN_MAX_BYTES)`` UTF-8 bytes.
        truncated: something was cut (or left out) to fit ``max_bytes``.
        redacted: at least one secret (by key or by value pattern) was replaced.
        lossless: ``TypeAdapter(annotation).validate_python(json.loads(json))`` can rebuild the
            value: false after truncation, redaction, byte previews, reprs of unknown objects,
            cycles, depth cuts, non-finite floats and exceptions.
    """

    json: str
    truncated: bool
    redacted: bool
    lossless: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Flags:
    """What :func:`to_jsonable` had to change; see :class:`Encoded` for the meanings."""

    truncated: bool
    redacted: bool
    lossless: bool


def _no_default(o: object) -> object:
    raise TypeError(f"not converted to JSON: {type(o).__name__}")


def _make_dumps() -> Callable[[object], str]:
    # JSONEncoder.encode builds a C encoder on every call; building it once is ~3x faster for the
    # small values that dominate. The C constructor is private, so it is checked against the
    # public encoder before use.
    public = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return public.encode
    try:
        c_encoder = make(
            None, _no_default, json.encoder.encode_basestring, None, ":", ",", False, False, False
        )

        def dumps(o: object) -> str:
            return "".join(c_encoder(o, 0))

        probe = {"a": [1, 2.5, 'é\n"', None, True, {"b": -(10**30)}], "": ""}
        if dumps(probe) == public.encode(probe) and dumps("x") == '"x"':
            return dumps
    except Exception:
        logger.debug("spanflow: falling back to json.JSONEncoder", exc_info=True)
    return public.encode


_dumps: Final = _make_dumps()


def _escape_surrogate(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def _finish(text: str) -> tuple[str, int, bool]:
    """The JSON text made valid UTF-8, its size in bytes, and whether json.loads gives back
    exactly the strings that went in."""
    if text.isascii():
        return text, len(text), True
    try:
        return text, len(text.encode("utf-8")), True
    except UnicodeEncodeError:
        # Lone surrogates can only sit inside string literals, where a \uXXXX escape keeps
        # the JSON valid and json.loads gives the same Python string back, except for a high
        # surrogate followed by a low one, which json.loads joins into one character.
        exact = _SURROGATE_PAIR.search(text) is None
        text = _SURROGATE.sub(_escape_surrogate, text)
        return text, len(text.encode("utf-8")), exact


def _safe_repr(v: object) -> str:
    try:
        text = repr(v)
        if isinstance(text, str):
            return text
    except Exception as exc:
        return f"<repr failed: {type(exc).__name__}>"
    return "<repr failed>"


def _type_name(t: type) -> str:
    try:
        return f"{t.__module__}.{t.__qualname__}"
    except Exception:
        return "?"


_MODEL_INFO: dict[type, tuple[tuple[str, ...], bool]] = {}
_DATACLASS_FIELDS: dict[type, tuple[str, ...]] = {}
_NOT_PYDANTIC: set[type] = set()
_TYPE_CACHE_SIZE: Final = 1024


def _cache(cache: dict[type, Any], t: type, value: Any) -> None:
    if len(cache) >= _TYPE_CACHE_SIZE:
        cache.clear()
    cache[t] = value


def _model_info(t: type[BaseModel]) -> tuple[tuple[str, ...], bool]:
    """Field names a model dumps, and whether validating them by name rebuilds the model."""
    info = _MODEL_INFO.get(t)
    if info is None:
        fields = getattr(t, "__pydantic_fields__", None) or t.model_fields
        config = t.model_config
        by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
        names, ok = [], True
        for name, fi in fields.items():
            if fi.exclude:
                continue
            names.append(name)
            alias = fi.validation_alias if fi.validation_alias is not None else fi.alias
            if alias is not None and alias != name and not by_name:
                ok = False
        info = (tuple(names), ok)
        _cache(_MODEL_INFO, t, info)
    return info


def _dataclass_fields(t: type) -> tuple[str, ...]:
    names = _DATACLASS_FIELDS.get(t)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(t))
        _cache(_DATACLASS_FIELDS, t, names)
    return names


class _Walker:
    """One conversion: builds the JSON-safe copy of a value within a byte budget."""

    __slots__ = (
        "budget",
        "cap",
        "lossless",
        "path",
        "redacted",
        "redactor",
        "skipped",
        "truncated",
    )

    def __init__(self, redactor: Redactor, budget: int, cap: int) -> None:
        self.redactor = redactor
        self.budget = budget  # estimated bytes left; containers stop adding items at 0
        self.cap = cap  # longest string kept whole, in characters
        self.truncated = False
        self.redacted = False
        self.lossless = True
        self.skipped = 0  # estimated bytes left out, for the envelope's "size"
        self.path: set[int] = set()  # ids of the containers being walked, to see cycles

    def walk(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is str:
            return self.text(v)
        if t is int:
            return self.integer(v)
        if v is None or t is bool:
            self.budget -= 6
            return v
        if t is float:
            return self.real(v)
        if t is dict:
            return self.mapping(v, v.items(), len(v), depth)
        if t is list or t is tuple:
            return self.sequence(v, v, len(v), depth)
        try:
            convert = _BY_TYPE.get(t)
            if convert is not None:
                return convert(self, v, depth)
            return self.other(v, t, depth)
        except Exception:
            logger.debug("spanflow: converting a %s failed", _type_name(t), exc_info=True)
            return self.unknown(v)

    # -- leaves -------------------------------------------------------------------------------

    def text(self, s: str) -> str:
        n = len(s)
        if n <= self.cap and n < self.budget:
            if s.isascii() or self.cap == _UNBOUNDED:
                self.budget -= n + 3
            else:
                self.budget -= len(s.encode("utf-8", "surrogatepass")) + 3
            out, hit = self.redactor.redact_text(s)
            if hit:
                self.redacted = True
            return out
        return self.cut(s, redact=True)

    def cut(self, s: str, *, redact: bool) -> str:
        n = len(s)
        keep = max(0, min(self.cap, self.budget - _MIN_CUT))
        if keep and not s.isascii():
            # Budgets are bytes: keep fewer characters when they encode wider.
            width = len(s[:keep].encode("utf-8", "surrogatepass"))
            keep = keep * keep // max(width, 1)
        if n - keep <= _MIN_CUT:  # the marker would cost about what the cut saves
            self.budget -= n + 3
            return self.redact(s) if redact else s
        head = s[: keep + _SCAN_SLACK]
        if redact:
            head = self.redact(head)
        out = f"{head[:keep]}…[+{n - keep} chars]"
        self.budget -= len(out) + 5
        self.truncated = True
        self.skipped += n - keep
        return out

    def redact(self, s: str) -> str:
        out, hit = self.redactor.redact_text(s)
        if hit:
            self.redacted = True
        return out

    def integer(self, v: int) -> int | str:
        bits = v.bit_length()
        if bits > 3000:
            limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
            if limit and bits * 0.30103 + 2 > limit:
                # Beyond the interpreter's int->str limit json.dumps would raise; hex has none.
                self.lossless = False
                return self.text(hex(v))
        self.budget -= (bits * 77 >> 8) + 2  # ~ decimal digits + sign/comma
        return v

    def real(self, v: float) -> float | str:
        if math.isfinite(v):
            self.budget -= 10
            return v
        self.lossless = False
        self.budget -= 12
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")

    def fit(self, s: str) -> str:
        """Charge an already redacted string to the budget, cutting it if needed."""
        n = len(s)
        if n <= self.cap and n < self.budget:
            self.budget -= n + 3
            return s
        return self.cut(s, redact=False)

    # -- containers ---------------------------------------------------------------------------

    def mapping(self, obj: object, items: Iterable[tuple[Any, Any]], n: int, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            return self.mark(DEPTH_MARKER)
        oid = id(obj)
        path = self.path
        if oid in path:
            return self.mark(CYCLE)
        path.add(oid)
        # The loop is the hot path of every call (bound arguments, model fields): strings,
        # small ints, None and bools are handled inline instead of through walk().
        redact_key, text, walk = self.redactor.redact_key, self.text, self.walk
        cap = self.cap
        child = depth + 1
        out: dict[str, Any] = {}
        start = self.budget = self.budget - 2
        i = 0
        try:
            for k, v in items:
                if self.budget <= 0:
                    self.capped(start, i, n)
                    out[f"…[+{n - i} items]"] = "…"
                    break
                i += 1
                key, secret, hit = redact_key(k) if type(k) is str else self.key(k)
                if hit:
                    self.redacted = True
                if len(key) > cap:
                    key = self.cut(key, redact=False)
                    cost = 4
                else:
                    cost = len(key) + 4
                t = type(v)
                if secret and v is not None and t is not bool:
                    self.redacted = True
                    self.budget -= cost + 12
                    out[key] = REDACTED
                elif t is str:
                    self.budget -= cost
                    out[key] = text(v)
                elif v is None or t is bool:
                    self.budget -= cost + 6
                    out[key] = v
                elif t is int and (bits := v.bit_length()) < 64:
                    self.budget -= cost + (bits * 77 >> 8) + 2
                    out[key] = v
                else:
                    self.budget -= cost
                    out[key] = walk(v, child)
        finally:
            path.discard(oid)
        if len(out) < i:  # distinct keys that coerced to the same string
            self.lossless = False
        return out

    def sequence(self, obj: object, items: Iterable[Any], n: int, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            return self.mark(DEPTH_MARKER)
        oid = id(obj)
        path = self.path
        if oid in path:
            return self.mark(CYCLE)
        path.add(oid)
        text, walk = self.text, self.walk
        child = depth + 1
        out: list[Any] = []
        append = out.append
        start = self.budget = self.budget - 2
        try:
            for v in items:
                if self.budget <= 0:
                    i = len(out)
                    self.capped(start, i, n)
                    append(f"…[+{n - i} items]")
                    break
                t = type(v)
                if t is str:
                    self.budget -= 1
                    append(text(v))
                elif t is int and (bits := v.bit_length()) < 64:
                    self.budget -= (bits * 77 >> 8) + 3
                    append(v)
                else:
                    self.budget -= 1
                    append(walk(v, child))
        finally:
            path.discard(oid)
        return out

    def capped(self, start: int, kept: int, n: int) -> None:
        self.truncated = True
        self.skipped += (start - self.budget) * (n - kept) // max(kept, 1)
        self.budget -= 20

    def key(self, k: Any) -> tuple[str, bool, bool]:
        """A non-str mapping key as text, spelled as JSON spells the scalar it is."""
        try:
            if isinstance(k, Enum):
                k = k.value
            if k is None or isinstance(k, bool):
                text = "null" if k is None else ("true" if k else "false")
            elif isinstance(k, str):
                text = str.__str__(k)
            elif isinstance(k, int):
                number = self.integer(int.__int__(k))
                text = number if isinstance(number, str) else str(number)
            elif isinstance(k, float):
                real = self.real(float.__float__(k))
                text = real if isinstance(real, str) else repr(real)
            else:
                self.lossless = False
                text = str(k)
        except Exception:
            self.lossless = False
            text = _safe_repr(k)
        return self.redactor.redact_key(text)

    def mark(self, marker: str) -> str:
        """A depth or cycle marker in place of a container."""
        self.lossless = False
        self.budget -= len(marker) + 3
        return marker

    # -- everything else ----------------------------------------------------------------------

    def other(self, v: Any, t: type, depth: int) -> Any:
        if depth >= MAX_DEPTH:  # also ends objects whose conversion yields another object
            return self.mark(DEPTH_MARKER)
        if isinstance(v, Enum):
            value = v.value
            if type(value) not in _SCALARS:  # a tuple value comes back as a list: no match
                self.lossless = False
            return self.walk(value, depth + 1)
        if isinstance(v, str):
            return self.text(str.__str__(v))
        if isinstance(v, int):
            return self.integer(int.__int__(v))
        if isinstance(v, float):
            return self.real(float.__float__(v))
        if isinstance(v, BaseModel):
            return self.model(v, t, depth)
        if isinstance(v, _SECRET_TYPES):
            self.redacted = True
            self.budget -= 12
            return REDACTED
        if isinstance(v, dict):
            return self.mapping(v, dict.items(v), len(v), depth)
        if isinstance(v, (list, tuple)):
            return self.sequence(v, v, len(v), depth)
        if hasattr(t, "__dataclass_fields__") and dataclasses.is_dataclass(v):
            return self.dataclass(v, t, depth)
        if isinstance(v, Mapping):
            return self.mapping(v, v.items(), len(v), depth)
        for types, convert in _CONVERSIONS:
            if isinstance(v, types):
                return convert(self, v, depth)
        if isinstance(v, BaseException):
            return self.exception(v)
        if isinstance(v, Iterator):  # generators, files, cursors: iterating would consume them
            return self.unknown(v)
        shape = getattr(v, "shape", None)
        if isinstance(shape, tuple) and shape and getattr(v, "dtype", None) is not None:
            return self.array(v, shape, depth)  # numpy arrays, torch tensors, jax arrays
        tolist = getattr(v, "tolist", None)
        if callable(tolist):  # numpy scalars, array.array
            return self.walk(tolist(), depth + 1)
        if isinstance(v, (Sequence, ValuesView)):
            return self.sequence(v, v, len(v), depth)
        if t not in _NOT_PYDANTIC:
            try:
                # Types pydantic knows (IP addresses, URLs, patterns...) as pydantic spells them.
                plain = to_jsonable_python(v)
            except Exception:
                if len(_NOT_PYDANTIC) < _TYPE_CACHE_SIZE:
                    _NOT_PYDANTIC.add(t)
            else:
                return self.walk(plain, depth + 1)
        return self.unknown(v)

    def array(self, v: Any, shape: tuple[Any, ...], depth: int) -> Any:
        """An n-dimensional array: whole when small, else its shape, dtype and first items, in
        time independent of its size (embeddings and tensors can hold millions of values)."""
        dims = [int(d) for d in shape]
        if math.prod(dims) <= _ARRAY_ITEMS:
            return self.walk(v.tolist(), depth + 1)
        self.lossless = False
        self.truncated = True
        # The first items of the first row: a view, not a copy, for numpy, torch and jax alike.
        head = v[(0,) * (len(dims) - 1) + (slice(0, _ARRAY_ITEMS),)]
        self.budget -= 48
        return {
            "__array__": self.fit(_type_name(type(v))),
            "shape": dims,
            "dtype": self.fit(str(v.dtype)),
            "head": self.walk(head.tolist(), depth + 1),
        }

    def model(self, v: BaseModel, t: type[BaseModel], depth: int) -> Any:
        if isinstance(v, RootModel):
            return self.walk(v.root, depth + 1)
        names, ok = _model_info(t)
        if not ok:
            self.lossless = False
        values = v.__dict__
        pairs = [(name, values[name]) for name in names if name in values]
        extra = v.__pydantic_extra__
        if extra:
            pairs.extend(extra.items())
        return self.mapping(v, pairs, len(pairs), depth)

    def dataclass(self, v: Any, t: type, depth: int) -> Any:
        pairs = []
        for name in _dataclass_fields(t):
            try:
                pairs.append((name, getattr(v, name)))
            except AttributeError:  # an init=False field never set
                self.lossless = False
        return self.mapping(v, pairs, len(pairs), depth)

    def collection(self, v: Any, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            return self.mark(DEPTH_MARKER)
        n = len(v)
        start = self.budget = self.budget - 2
        items: list[Any] = []
        for x in v:
            if self.budget <= 0:
                self.capped(start, len(items), n)
                break
            items.append(self.walk(x, depth + 1))
            self.budget -= 1
        # Sorted when the converted items compare, so equal sets give equal JSON.
        kinds = {type(x) for x in items}
        if kinds == {str} or (kinds and kinds <= {int, float}):
            items.sort()
        if len(items) < n:
            items.append(f"…[+{n - len(items)} items]")
        return items

    def binary(self, v: bytes | bytearray | memoryview, depth: int) -> dict[str, Any]:
        self.lossless = False
        if isinstance(v, memoryview):
            size = v.nbytes
            head = v.cast("B")[:_PREVIEW_BYTES].tobytes() if v.c_contiguous else b""
        else:
            size = len(v)
            head = bytes(v[:_PREVIEW_BYTES])
        preview = head.hex()
        # A cut may split a multi-byte character: try the prefix without its last 1-3 bytes.
        for trim in range(4 if size > _PREVIEW_BYTES else 1):
            try:
                decoded = head[: len(head) - trim].decode("utf-8")
            except UnicodeDecodeError:
                continue
            if not _CONTROL.search(decoded):
                preview = decoded
            break
        self.budget -= 26
        return {"__bytes__": size, "preview": self.text(preview)}

    def exception(self, e: BaseException) -> dict[str, Any]:
        self.lossless = False
        try:
            message = str(e)
        except Exception:
            message = _safe_repr(e)
        self.budget -= 30
        return {"__exception__": self.fit(type(e).__qualname__), "message": self.text(message)}

    def unknown(self, v: object) -> dict[str, Any]:
        self.lossless = False
        text = _safe_repr(v)
        if len(text) > _REPR_CHARS:
            head, hit = self.redactor.redact_text(text[: _REPR_CHARS + _SCAN_SLACK])
            text = head[:_REPR_CHARS] + "…"
        else:
            text, hit = self.redactor.redact_text(text)
        if hit:
            self.redacted = True
        self.budget -= 22
        return {"__type__": self.fit(_type_name(type(v))), "repr": self.fit(text)}


def _isoformat(w: _Walker, v: date | time, depth: int) -> str:
    return w.fit(v.isoformat())


def _seconds(w: _Walker, v: timedelta, depth: int) -> float | str:
    return w.real(v.total_seconds())


def _as_str(w: _Walker, v: object, depth: int) -> str:
    return w.text(str(v))


_Convert = Callable[[_Walker, Any, int], Any]
_CONVERSIONS: tuple[tuple[tuple[type, ...], _Convert], ...] = (
    ((datetime, date, time), _isoformat),
    ((timedelta,), _seconds),
    ((UUID, Decimal, type(Path()), PurePath), _as_str),
    ((bytes, bytearray, memoryview), _Walker.binary),
    ((set, frozenset, Set), _Walker.collection),
)
# Exact types take one dict lookup; subclasses are found by isinstance() in _Walker.other.
_BY_TYPE: dict[type, _Convert] = {t: f for types, f in _CONVERSIONS for t in types}


# -- public entry points ----------------------------------------------------------------------

_DEFAULT_REDACTOR: Final = Redactor()


def to_jsonable(value: object, *, redactor: Redactor | None = None) -> tuple[object, Flags]:
    """Convert ``value`` to plain JSON types (no size limit), secrets redacted.

    Args:
        value: anything.
        redactor: the secrets policy; ``None`` uses the built-in defaults (pass
            ``Redactor(defaults=False)`` to redact nothing).

    Returns:
        The structure (dicts with str keys, lists, str, int, float, bool, None) and its flags.
        Never raises: a value that cannot be walked at all becomes ``{"__unserializable__": ...}``.
    """
    walker = _Walker(redactor or _DEFAULT_REDACTOR, _UNBOUNDED, _UNBOUNDED)
    try:
        out = walker.walk(value, 0)
    except Exception as exc:
        _report(value, exc)
        return {"__unserializable__": type(exc).__name__}, Flags(True, False, False)
    return out, Flags(False, walker.redacted, walker.lossless and not walker.redacted)


def encode(value: object, *, max_bytes: int = 4096, redactor: Redactor | None = None) -> Encoded:
    """Encode ``value`` as redacted JSON of at most ``max(max_bytes, MIN_MAX_BYTES)`` bytes.

    Args:
        value: anything; it is read, never changed or consumed (iterators are not iterated).
        max_bytes: size limit of the JSON text in UTF-8 bytes.
        redactor: the secrets policy; ``None`` uses the built-in defaults.

    Returns:
        The JSON and what happened to the value on the way. Never raises.
    """
    try:
        return _encode(value, max(max_bytes, MIN_MAX_BYTES), redactor or _DEFAULT_REDACTOR)
    except Exception as exc:
        _report(value, exc)
        text, _, _ = _finish(_dumps({"__unserializable__": type(exc).__name__[:36]}))
        return Encoded(text, True, False, False)


def _is_flat(value: dict[Any, Any], redactor: Redactor) -> bool:
    """Whether a dict is a few str keys naming no secret over clean scalars, JSON as it is."""
    plain_keys, plain_texts = redactor.plain_keys, redactor.plain_texts
    for k, v in value.items():
        if type(k) is not str:
            return False
        if k not in plain_keys:
            _, secret, hit = redactor.redact_key(k)
            if secret or hit:
                return False
        t = type(v)
        if t is str:
            if v not in plain_texts and (len(v) > _FLAT_CHARS or redactor.redact_text(v)[1]):
                return False
        elif t is int:
            if v.bit_length() > 64:
                return False
        elif not (v is None or t is bool or (t is float and math.isfinite(v))):
            return False
    return True


def _encode(value: object, limit: int, redactor: Redactor) -> Encoded:
    # Fast paths for the commonest values, a short string and a small dict of bound arguments:
    # checked and redacted as the walk would, then dumped as they are.
    if type(value) is str and len(value) < limit // 2:
        redacted_text, hit = redactor.redact_text(value)
        text, size, exact = _finish(_dumps(redacted_text))
        if size <= limit:
            return Encoded(text, False, hit, exact and not hit)
    elif type(value) is dict and len(value) <= _FLAT_ITEMS and _is_flat(value, redactor):
        text, size, exact = _finish(_dumps(value))
        if size <= limit:
            return Encoded(text, False, False, exact)
    # Room for the markers a cut adds, so that a cut rarely needs a second walk.
    w = _Walker(redactor, limit - _MARKER_ROOM, limit)
    text, size, exact = _finish(_dumps(w.walk(value, 0)))
    if size <= limit:
        lossless = exact and w.lossless and not (w.truncated or w.redacted)
        return Encoded(text, w.truncated, w.redacted, lossless)
    full_size = min(size + w.skipped, sys.maxsize)  # at most 19 digits: the envelope fits 64
    redacted = w.redacted
    budget = cap = limit
    for _ in range(_ATTEMPTS):
        # Too big after a walk with this budget: walk again with less. Each walk is bounded by
        # the budget, not by the value, so the retries stay cheap even for huge values.
        budget = int(budget * min(0.9, limit / size)) - 8
        cap = max(0, min(cap * 3 // 4, budget))
        w = _Walker(redactor, budget, cap)
        text, size, _ = _finish(_dumps(w.walk(value, 0)))
        redacted = redacted or w.redacted
        if size <= limit:
            return Encoded(text, True, redacted, False)
    return Encoded(_envelope(full_size, text, limit), True, redacted, False)


def _envelope(full_size: int, preview: str, limit: int) -> str:
    head = f'{{"__truncated__":true,"size":{full_size},"preview":'
    preview = preview[: max(limit - len(head) - 3, 0)]
    while True:
        text, size, _ = _finish(f"{head}{_dumps(preview)}}}")
        if size <= limit or not preview:
            return text
        preview = preview[: len(preview) * limit // size - 1]


_reported: set[tuple[type, type]] = set()


def _report(value: object, exc: Exception) -> None:
    # Values of one type tend to fail on every call: warn once per kind, then only count.
    kind = (type(value), type(exc))
    first = kind not in _reported and len(_reported) < _TYPE_CACHE_SIZE
    if first:
        _reported.add(kind)
    logger.log(
        logging.WARNING if first else logging.DEBUG,
        "spanflow: could not encode a %s value; recorded a placeholder",
        _type_name(type(value)),
        exc_info=exc,
    )
    count("serialize_errors")
