"""State changes as RFC 6902 JSON Patches, and a strict patch applier.

A step that receives a ``State`` records the change it made as a JSON Patch between the state's
JSON before and after the call; the viewer replays a run's state by applying those patches in
order. ``make_patch`` emits few, local operations (a changed leaf is one ``replace`` at that
leaf) and ``apply_patch`` refuses anything RFC 6902 does not allow, so a replay either reproduces
the recorded state exactly or fails loudly.

Equality is type-exact throughout ``make_patch``: Python says ``1 == 1.0 == True`` but JSON's
``1``, ``1.0`` and ``true`` are different documents, and so are ``0.0`` and ``-0.0``.
"""

from __future__ import annotations

import io
import marshal
import math
import pickle
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias, cast

__all__ = ["JsonValue", "apply_patch", "escape_pointer_token", "make_patch"]

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None

# marshal version 2 never emits back-references: a value referenced twice is written twice, so a
# round trip through it is a deep copy that does not preserve aliasing (which a patch applied to
# one alias would otherwise leak into the other).
_MARSHAL_VERSION = 2

_NULL, _BOOL, _INT, _FLOAT, _STR, _ARRAY, _OBJECT, _OTHER = range(8)
_EXACT_KINDS: dict[type, int] = {
    type(None): _NULL,
    bool: _BOOL,
    int: _INT,
    float: _FLOAT,
    str: _STR,
    list: _ARRAY,
    tuple: _ARRAY,
    dict: _OBJECT,
}
_KIND_NAMES = (
    "null",
    "a boolean",
    "an integer",
    "a number",
    "a string",
    "an array",
    "an object",
    "a value",
)
# A pair that may differ (before, after, path), or an operation ready to emit.
_Work: TypeAlias = "tuple[object, object, str] | dict[str, object]"
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE = re.compile(r"~(?![01])")


def escape_pointer_token(token: str) -> str:
    """Escape one JSON Pointer (RFC 6901) reference token.

    Args:
        token: an object key or array index, unescaped.

    Returns:
        The token with ``~`` written as ``~0`` and ``/`` as ``~1``.
    """
    return token.replace("~", "~0").replace("/", "~1")


def make_patch(before: JsonValue, after: JsonValue, *, prefix: str = "") -> list[dict[str, object]]:
    """Return the RFC 6902 operations that turn ``before`` into ``after``.

    Objects are compared key by key, arrays by their common prefix and suffix and then index by
    index in between (no LCS), so each operation sits at the value that changed. Unchanged runs of
    values are recognised in C, by ``==`` over slices and then one type-exact comparison of their
    pickled bytes, which tells ``1``, ``1.0`` and ``True`` apart; Python walks only down to the
    changes. The ``value`` of an operation is the object inside ``after`` itself, not a copy:
    serialise the patch before mutating ``after``.

    Args:
        before: the document before the change.
        after: the document after the change.
        prefix: a JSON Pointer prepended to every path, such as ``"/state"`` when the documents
            sit under that member of a larger one.

    Returns:
        The operations, as dictionaries ready for ``json.dumps``; empty when nothing changed.

    Raises:
        ValueError: ``prefix`` is not a JSON Pointer.
    """
    _parse_pointer(prefix)
    ops: list[dict[str, object]] = []
    # Depth-first with an explicit stack, so deep documents do not exhaust the recursion limit.
    # Items are popped last-in first-out: a container pushes its pending work in reverse, and an
    # array pushes its insertions and removals before its elements' diffs so that they come out
    # after them, while the element paths still hold the indices those diffs were computed for.
    work: list[_Work] = [(before, after, prefix)]
    while work:
        item = work.pop()
        if isinstance(item, dict):
            ops.append(item)
            continue
        a, b, path = item
        kind = _kind(a)
        if kind != _kind(b):
            ops.append({"op": "replace", "path": path, "value": b})
        elif kind == _OBJECT:
            todo = _diff_object(
                cast(Mapping[object, object], a), cast(Mapping[object, object], b), path
            )
            work.extend(reversed(todo))
        elif kind == _ARRAY:
            work.extend(
                reversed(_diff_array(cast(Sequence[object], a), cast(Sequence[object], b), path))
            )
        elif not _scalar_same(a, b, kind):
            ops.append({"op": "replace", "path": path, "value": b})
    return ops


def apply_patch(doc: JsonValue, patch: Sequence[Mapping[str, object]]) -> JsonValue:
    """Apply an RFC 6902 JSON Patch and return the resulting document.

    Supports ``add``, ``remove``, ``replace``, ``move``, ``copy`` and ``test``. The patch is
    all-or-nothing: the result is a new document and neither ``doc`` nor the patch is modified,
    whether or not an operation fails.

    Args:
        doc: the document to patch.
        patch: the operations, applied in order.

    Returns:
        The patched document, sharing no containers with ``doc`` or ``patch``.

    Raises:
        ValueError: the patch is malformed, a path does not exist where the operation needs it,
            or a ``test`` operation fails. The message names the operation's index.
    """
    if isinstance(patch, (str, bytes)) or not isinstance(patch, Sequence):
        raise ValueError(f"a JSON Patch is a list of operation objects, got {type(patch).__name__}")
    result = _copy(doc)
    if isinstance(result, tuple):
        result = list(result)
    for index, operation in enumerate(patch):
        if not isinstance(operation, Mapping):
            raise ValueError(
                f"JSON Patch operation {index} is a {type(operation).__name__}, not an object"
            )
        try:
            result = _apply_operation(result, operation)
        except ValueError as exc:
            raise ValueError(
                f"JSON Patch operation {index} {_describe(operation)} failed: {exc}"
            ) from None
    return cast(JsonValue, result)


# ---------------------------------------------------------------------------------------------
# make_patch


def _kind(value: object) -> int:
    kind = _EXACT_KINDS.get(type(value))
    if kind is not None:
        return kind
    # Subclasses (IntEnum, StrEnum, OrderedDict, ...) count as the JSON type they serialise to.
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int):
        return _INT
    if isinstance(value, float):
        return _FLOAT
    if isinstance(value, str):
        return _STR
    if isinstance(value, Mapping):
        return _OBJECT
    if isinstance(value, (list, tuple)):
        return _ARRAY
    return _OTHER


def _marshal(value: object) -> bytes:
    # Raises ValueError for anything marshal cannot write, which every caller falls back from.
    return marshal.dumps(cast(Any, value), _MARSHAL_VERSION)


def _float_same(a: float, b: float) -> bool:
    if a == b:
        return a != 0.0 or math.copysign(1.0, a) == math.copysign(1.0, b)
    # NaN is not valid JSON; treating it as equal to itself keeps an unchanged NaN out of patches.
    return a != a and b != b


def _scalar_same(a: object, b: object, kind: int) -> bool:
    """Equality of two non-container values of the same kind."""
    if kind == _FLOAT:
        return _float_same(cast(float, a), cast(float, b))
    if kind == _OTHER and type(a) is not type(b):
        return False
    return a == b


def _typed_bytes(value: object) -> bytes:
    """Bytes that two values share only if they are equal with the same type at every level."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    # Without the memo the bytes depend on values and types alone, not on which objects happen
    # to be shared; it is also about twice as fast as marshal. JSON has no cycles to trip it.
    pickler.fast = True
    pickler.dump(value)
    return buffer.getvalue()


def _verified(a: object, b: object) -> bool:
    """Whether ``a`` and ``b``, already ``==``, are the same JSON with the same types.

    False may also mean "cannot tell cheaply" (subclasses, tuples, objects that do not pickle):
    the caller then diffs the pair part by part, which settles it exactly.
    """
    try:
        return _typed_bytes(a) == _typed_bytes(b)
    except Exception:  # anything a non-JSON value's pickling raises, or too deep to pickle
        return False


def _member_path(path: str, key: object) -> str:
    return f"{path}/{escape_pointer_token(key if isinstance(key, str) else str(key))}"


def _equal_run(xs: Sequence[object], ys: Sequence[object], low: int, high: int) -> int:
    """Index of the first pair in ``low..high`` that is not ``==``, or ``high``."""
    # Comparing slices keeps the element loop in C: gallop to a segment holding a mismatch,
    # then bisect it, reading each element a small constant number of times.
    good, step = low, 1
    while good < high:
        top = min(good + step, high)
        if xs[good:top] != ys[good:top]:
            break
        good, step = top, step * 2
    else:
        return high
    bad = top
    while bad - good > 1:
        middle = (good + bad) // 2
        if xs[good:middle] == ys[good:middle]:
            good = middle
        else:
            bad = middle
    return good


def _hidden(
    xs: Sequence[object], ys: Sequence[object], low: int, high: int, *, known_bad: bool = False
) -> list[int]:
    """Indices in ``low..high``, where every pair is ``==``, whose pair does not verify."""
    if low >= high or (not known_bad and _verified(xs[low:high], ys[low:high])):
        return []
    if high - low == 1:
        return [low]
    middle = (low + high) // 2
    left = _hidden(xs, ys, low, middle)
    # A segment that does not verify has a pair that does not: if the left half verified, the
    # right half need not be checked as a whole again.
    return left + _hidden(xs, ys, middle, high, known_bad=not left)


def _first_hidden(xs: Sequence[object], ys: Sequence[object], high: int) -> int:
    """Index of the first pair before ``high`` (all ``==``) that does not verify, or ``high``."""
    if high == 0 or _verified(xs[:high], ys[:high]):
        return high
    # Bisect on the segment beyond the verified run, so the search reads each element about
    # twice: xs[:good] verifies and xs[good:bad] holds the first pair that does not.
    good, bad = 0, high
    while bad - good > 1:
        middle = (good + bad) // 2
        if _verified(xs[good:middle], ys[good:middle]):
            good = middle
        else:
            bad = middle
    return good


def _changed(xs: Sequence[object], ys: Sequence[object], low: int, high: int) -> list[int]:
    """Ascending indices in ``low..high`` where ``xs`` and ``ys`` may differ; the rest do not."""
    changed: list[int] = []
    runs: list[tuple[int, int]] = []
    while low < high:
        end = _equal_run(xs, ys, low, high)
        if end > low:
            runs.append((low, end))
        if end < high:
            changed.append(end)
        low = end + 1
    if not runs:
        return changed
    # One type check for all the `==` runs together: they are nearly always the same.
    joined_x: list[object] = []
    joined_y: list[object] = []
    for start, end in runs:
        joined_x += xs[start:end]
        joined_y += ys[start:end]
    if _verified(joined_x, joined_y):
        return changed
    for start, end in runs:
        changed += _hidden(xs, ys, start, end, known_bad=len(runs) == 1)
    return sorted(changed)


def _diff_object(a: Mapping[object, object], b: Mapping[object, object], path: str) -> list[_Work]:
    keys = list(a)
    if keys == list(b):  # the usual case: same keys in the same order
        common, removed, added = keys, [], []
        old_values, new_values = list(a.values()), list(b.values())
    else:
        common = [key for key in keys if key in b]
        removed = [key for key in keys if key not in b]
        added = [key for key in b if key not in a]
        old_values, new_values = [a[key] for key in common], [b[key] for key in common]
    todo: list[_Work] = [{"op": "remove", "path": _member_path(path, key)} for key in removed]
    for index in _changed(old_values, new_values, 0, len(common)):
        todo.append((old_values[index], new_values[index], _member_path(path, common[index])))
    for key in added:
        todo.append({"op": "add", "path": _member_path(path, key), "value": b[key]})
    return todo


def _diff_array(a: Sequence[object], b: Sequence[object], path: str) -> list[_Work]:
    len_a, len_b = len(a), len(b)
    shorter = min(len_a, len_b)

    prefix = _equal_run(a, b, 0, shorter)
    start = _first_hidden(a, b, prefix)
    # The suffix, matched on reversed tails, stops where the prefix ends, so no element is
    # matched twice and the middle's bounds below are never negative.
    room = shorter - start
    tail_a, tail_b = a[len_a - room :][::-1], b[len_b - room :][::-1]
    suffix = _equal_run(tail_a, tail_b, 0, room)
    end = _first_hidden(tail_a, tail_b, suffix)

    todo: list[_Work] = []
    middle_a, middle_b = len_a - end - start, len_b - end - start
    for index in _changed(a, b, start, start + min(middle_a, middle_b)):
        todo.append((a[index], b[index], f"{path}/{index}"))
    # Inserting in ascending order and removing in descending order keeps every index valid at
    # the moment its operation is applied.
    for index in range(start + middle_a, start + middle_b):
        todo.append({"op": "add", "path": f"{path}/{index}", "value": b[index]})
    for index in range(start + middle_a - 1, start + middle_b - 1, -1):
        todo.append({"op": "remove", "path": f"{path}/{index}"})
    return todo


# ---------------------------------------------------------------------------------------------
# apply_patch


def _copy(value: object) -> object:
    """Deep copy of a JSON value (marshal is several times faster than copy.deepcopy)."""
    if type(value) in (str, int, float, bool) or value is None:
        return value
    try:
        return marshal.loads(_marshal(value))
    except ValueError:
        return _copy_slow(value)


def _copy_slow(value: object) -> object:
    if isinstance(value, Mapping):
        return {key: _copy_slow(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy_slow(item) for item in value]
    return value


def _describe(operation: Mapping[str, object]) -> str:
    parts = [repr(operation.get("op"))]
    if "from" in operation:
        parts.append(f"from {operation['from']!r}")
    parts.append(f"at {operation.get('path')!r}")
    return f"({' '.join(parts)})"


def _parse_pointer(pointer: object) -> list[str]:
    if not isinstance(pointer, str):
        raise ValueError(f"a JSON Pointer is a string, got {type(pointer).__name__}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError(f"JSON Pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if _BAD_ESCAPE.search(token):
            raise ValueError(
                f"JSON Pointer {pointer!r} has a '~' not followed by '0' or '1' (a '~' is '~0')"
            )
    # RFC 6901 order: '~1' first, so that '~01' decodes to '~1' and not to '/'.
    return [token.replace("~1", "/").replace("~0", "~") for token in tokens]


def _pointer(tokens: Sequence[str]) -> str:
    return "".join("/" + escape_pointer_token(token) for token in tokens)


def _index(container: list[object], token: str, tokens: Sequence[str], *, to_insert: bool) -> int:
    """Array index named by ``token``; ``to_insert`` allows the one-past-the-end position."""
    if token == "-":
        if to_insert:
            return len(container)
        problem = "'-' names the position after the last element, which is empty"
    elif not _ARRAY_INDEX.fullmatch(token):
        problem = f"{token!r} is not an array index (digits, no leading zeros)"
    elif int(token) > (len(container) if to_insert else len(container) - 1):
        problem = f"index {token} is out of range for an array of {len(container)} elements"
    else:
        return int(token)
    raise ValueError(f"{_pointer(tokens)}: {problem}")


def _child(node: object, depth: int, tokens: Sequence[str]) -> object:
    """The value at ``tokens[depth]`` under ``node``, made mutable so later steps can edit it."""
    token = tokens[depth]
    if isinstance(node, dict):
        if token not in node:
            raise ValueError(f"{_pointer(tokens[: depth + 1])} does not exist")
        child = node[token]
        if isinstance(child, tuple):
            child = node[token] = list(child)
        return child
    if isinstance(node, list):
        index = _index(node, token, tokens[: depth + 1], to_insert=False)
        child = node[index]
        if isinstance(child, tuple):
            child = node[index] = list(child)
        return child
    raise _not_a_container(node, tokens[: depth + 1])


def _parent(doc: object, tokens: Sequence[str]) -> object:
    node = doc
    for depth in range(len(tokens) - 1):
        node = _child(node, depth, tokens)
    return node


def _get(doc: object, tokens: Sequence[str]) -> object:
    node = doc
    for depth in range(len(tokens)):
        node = _child(node, depth, tokens)
    return node


def _not_a_container(parent: object, tokens: Sequence[str]) -> ValueError:
    return ValueError(
        f"{_pointer(tokens)} does not exist: {_pointer(tokens[:-1]) or 'the document'} is "
        f"{_KIND_NAMES[_kind(parent)]}, not an object or array"
    )


def _add(doc: object, tokens: Sequence[str], value: object) -> object:
    if not tokens:
        return value
    parent, token = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, tokens, to_insert=True), value)
    else:
        raise _not_a_container(parent, tokens)
    return doc


def _remove(doc: object, tokens: Sequence[str]) -> object:
    """Remove the value at ``tokens`` from ``doc`` and return it."""
    if not tokens:
        raise ValueError("the whole document cannot be removed")
    parent, token = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise ValueError(f"{_pointer(tokens)} does not exist")
        return parent.pop(token)
    if isinstance(parent, list):
        return parent.pop(_index(parent, token, tokens, to_insert=False))
    raise _not_a_container(parent, tokens)


def _replace(doc: object, tokens: Sequence[str], value: object) -> object:
    if not tokens:
        return value
    parent, token = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise ValueError(f"{_pointer(tokens)} does not exist")
        parent[token] = value
    elif isinstance(parent, list):
        parent[_index(parent, token, tokens, to_insert=False)] = value
    else:
        raise _not_a_container(parent, tokens)
    return doc


def _json_equal(a: object, b: object) -> bool:
    """Equality as RFC 6902's ``test`` defines it: numbers by value, booleans apart from them."""
    pending = [(a, b)]
    while pending:
        a, b = pending.pop()
        kind_a, kind_b = _kind(a), _kind(b)
        if kind_a in (_INT, _FLOAT) and kind_b in (_INT, _FLOAT):
            if a != b:
                return False
        elif kind_a != kind_b:
            return False
        elif kind_a == _OBJECT:
            ma, mb = cast(Mapping[object, object], a), cast(Mapping[object, object], b)
            if len(ma) != len(mb) or any(key not in mb for key in ma):
                return False
            pending.extend((value, mb[key]) for key, value in ma.items())
        elif kind_a == _ARRAY:
            sa, sb = cast(Sequence[object], a), cast(Sequence[object], b)
            if len(sa) != len(sb):
                return False
            pending.extend(zip(sa, sb, strict=True))
        elif a != b:
            return False
    return True


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:200]}..."


def _required(operation: Mapping[str, object], member: str) -> object:
    if member not in operation:
        raise ValueError(f"the operation has no {member!r} member")
    return operation[member]


def _apply_operation(doc: object, operation: Mapping[str, object]) -> object:
    op = _required(operation, "op")
    tokens = _parse_pointer(_required(operation, "path"))
    if op == "add":
        return _add(doc, tokens, _copy(_required(operation, "value")))
    if op == "remove":
        _remove(doc, tokens)
        return doc
    if op == "replace":
        return _replace(doc, tokens, _copy(_required(operation, "value")))
    if op == "test":
        expected = _required(operation, "value")
        actual = _get(doc, tokens)
        if not _json_equal(actual, expected):
            raise ValueError(
                f"the value at {_pointer(tokens) or 'the root'} is {_short(actual)}, "
                f"not {_short(expected)}"
            )
        return doc
    if op in ("move", "copy"):
        source = _parse_pointer(_required(operation, "from"))
        if op == "copy":
            return _add(doc, tokens, _copy(_get(doc, source)))
        if source == tokens:
            _get(doc, source)  # a no-op move, but its location must still exist
            return doc
        if tokens[: len(source)] == source:
            raise ValueError("a value cannot be moved into one of its own children")
        return _add(doc, tokens, _remove(doc, source))
    raise ValueError(f"unknown op {op!r}; expected one of add, remove, replace, move, copy, test")
