"""JSON Patch generation and application (spanflow.state_diff).

The viewer rebuilds a run's state by applying recorded patches, so every property is checked
type-exactly (``1``, ``1.0``, ``True`` and ``-0.0`` are all different) and against the reference
``jsonpatch`` implementation.
"""

from __future__ import annotations

import copy
import enum
import json
import math
from typing import Any

import jsonpatch
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from spanflow.values.state_diff import apply_patch, escape_pointer_token, make_patch

Json = Any


def exact(a: object, b: object) -> bool:
    """Equality that also requires the same JSON types: 1 != 1.0 != True, 0.0 != -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(exact(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(exact(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        assert isinstance(b, float)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


# ---------------------------------------------------------------------------------------------
# strategies

KEYS = st.one_of(
    st.sampled_from(
        ["", "/", "~", "~0", "~1", "~01", "/~", "a/b", "0", "1", "-", "01", "é", "ключ"]
    ),
    st.text(max_size=4),
)
# Values Python's == cannot tell apart: the fast path must not hide a change between them.
ALIASES = st.sampled_from([0, 1, 2, 0.0, -0.0, 1.0, 2.0, True, False])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    ALIASES,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=40,
)


def containers(doc: Json) -> list[Json]:
    found: list[Json] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            found.append(node)
            stack.extend(node)
    return found


def retyped(value: Json, draw: st.DrawFn) -> Json:
    """A value Python may consider == to ``value`` but of another JSON type (or sign)."""
    if isinstance(value, bool):
        return draw(st.sampled_from([int(value), float(value)]))
    if isinstance(value, int) and abs(value) < 2**53:
        return (
            float(value)
            if value not in (0, 1)
            else draw(st.sampled_from([float(value), value == 1]))
        )
    if isinstance(value, float) and value == 0.0:
        return draw(st.sampled_from([-value, 0, False]))
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return draw(SCALARS)


def mutate(doc: Json, draw: st.DrawFn) -> Json:
    """Apply one random edit to ``doc`` in place and return the (possibly new) root."""
    nodes = containers(doc)
    if not nodes or draw(st.integers(0, 9)) == 0:
        return retyped(doc, draw) if draw(st.booleans()) else draw(JSON)
    node = draw(st.sampled_from(nodes))
    if isinstance(node, dict):
        action = draw(st.sampled_from(["set", "retype", "delete", "add"]))
        if not node or action == "add":
            node[draw(KEYS)] = draw(JSON)
            return doc
        key = draw(st.sampled_from(sorted(node)))
        if action == "delete":
            del node[key]
        elif action == "retype":
            node[key] = retyped(node[key], draw)
        else:
            node[key] = draw(JSON)
        return doc
    action = draw(st.sampled_from(["set", "retype", "insert", "delete", "append", "pop"]))
    if not node or action in ("insert", "append"):
        where = len(node) if action == "append" else draw(st.integers(0, len(node)))
        for offset, item in enumerate(draw(st.lists(JSON, min_size=1, max_size=3))):
            node.insert(where + offset, item)
        return doc
    index = draw(st.integers(0, len(node) - 1))
    if action == "delete":
        del node[index]
    elif action == "pop":
        del node[index:]
    elif action == "retype":
        node[index] = retyped(node[index], draw)
    else:
        node[index] = draw(JSON)
    return doc


@st.composite
def mutated_pairs(draw: st.DrawFn) -> tuple[Json, Json]:
    before = draw(JSON)
    after = copy.deepcopy(before)
    for _ in range(draw(st.integers(1, 4))):
        after = mutate(after, draw)
    return before, after


def check_round_trip(before: Json, after: Json) -> list[dict[str, object]]:
    """make_patch(before, after) rebuilds ``after`` exactly, with us and with jsonpatch."""
    before_copy, after_copy = copy.deepcopy(before), copy.deepcopy(after)
    patch = make_patch(before, after)

    assert exact(apply_patch(before, patch), after)
    # What the span attribute stores is the JSON text of the patch.
    stored = json.loads(json.dumps(patch))
    assert exact(apply_patch(before, stored), after)
    reference = jsonpatch.apply_patch(copy.deepcopy(before), copy.deepcopy(patch))
    assert exact(reference, after)

    assert exact(before, before_copy)
    assert exact(after, after_copy)
    if exact(before, after):
        assert patch == []
    return patch


# ---------------------------------------------------------------------------------------------
# properties


@settings(max_examples=200, deadline=None)
@given(JSON, JSON)
def test_random_pairs_round_trip(before: Json, after: Json) -> None:
    check_round_trip(before, after)


@settings(max_examples=600, deadline=None)
@given(mutated_pairs())
def test_small_mutations_round_trip(pair: tuple[Json, Json]) -> None:
    check_round_trip(*pair)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_identical_documents_give_empty_patch(doc: Json) -> None:
    assert make_patch(doc, copy.deepcopy(doc)) == []


# Few distinct values, many of them == to one another: long runs of equal elements with
# changes (visible or only in type) scattered through them.
SMALL = st.one_of(ALIASES, st.integers(0, 3), st.none())


@settings(max_examples=200, deadline=None)
@given(st.lists(SMALL, max_size=300), st.data())
def test_scattered_changes_in_a_long_list(before: list[Json], data: st.DataObject) -> None:
    after = list(before)
    if before:
        for index in data.draw(st.lists(st.integers(0, len(before) - 1), max_size=8)):
            after[index] = data.draw(SMALL)
    patch = check_round_trip({"xs": before}, {"xs": after})
    expected = [
        {"op": "replace", "path": f"/xs/{index}", "value": after[index]}
        for index in range(len(before))
        if not exact(before[index], after[index])
    ]
    assert patch == expected


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=3), SMALL, max_size=100), st.data())
def test_scattered_changes_in_a_large_object(before: dict[str, Json], data: st.DataObject) -> None:
    after = dict(before)
    if before:
        for key in data.draw(st.lists(st.sampled_from(sorted(before)), max_size=8)):
            after[key] = data.draw(SMALL)
    patch = check_round_trip(before, after)
    expected = [
        {"op": "replace", "path": "/" + escape_pointer_token(key), "value": after[key]}
        for key in before
        if not exact(before[key], after[key])
    ]
    assert patch == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(SMALL, max_size=300), st.data())
def test_insertions_and_deletions_in_a_long_list(before: list[Json], data: st.DataObject) -> None:
    after = list(before)
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(after)))
        if len(after) > 0 and data.draw(st.booleans()):
            del after[position : position + data.draw(st.integers(1, 20))]
        else:
            after[position:position] = data.draw(st.lists(SMALL, min_size=1, max_size=20))
    check_round_trip(before, after)


@st.composite
def single_leaf_changes(draw: st.DrawFn) -> tuple[Json, Json, str, Json]:
    before = draw(JSON)
    leaves: list[tuple[Json, Json, str]] = []  # (parent, key, pointer)
    stack: list[tuple[Json, str]] = [(before, "")] if isinstance(before, (dict, list)) else []
    while stack:
        node, pointer = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for member, value in items:
            child = f"{pointer}/{escape_pointer_token(str(member))}"
            if isinstance(value, (dict, list)):
                stack.append((value, child))
            else:
                leaves.append((node, member, child))
    old: Json
    parent: Json
    key: Json
    if isinstance(before, (dict, list)) and leaves:
        parent, key, path = draw(st.sampled_from(leaves))
        old = parent[key]
    else:
        parent, key, path, old = None, None, "", before
    new = retyped(old, draw) if draw(st.booleans()) else draw(SCALARS)
    assume(not exact(new, old))
    after = copy.deepcopy(before)
    if parent is None:
        after = new
    else:
        target = after
        for token in path.split("/")[1:-1]:
            token = token.replace("~1", "/").replace("~0", "~")
            target = target[int(token)] if isinstance(target, list) else target[token]
        target[key] = new
    return before, after, path, new


@settings(max_examples=300, deadline=None)
@given(single_leaf_changes())
def test_one_changed_leaf_is_one_replace(case: tuple[Json, Json, str, Json]) -> None:
    before, after, path, new = case
    patch = check_round_trip(before, after)
    assert patch == [{"op": "replace", "path": path, "value": new}]
    assert exact(patch[0]["value"], new)


@settings(max_examples=200, deadline=None)
@given(mutated_pairs(), SCALARS)
def test_prefix_addresses_the_documents_inside_a_larger_one(
    pair: tuple[Json, Json], other: Json
) -> None:
    before, after = pair
    patch = make_patch(before, after, prefix="/st~1ate/0")
    assert all(str(op["path"]).startswith("/st~1ate/0") for op in patch)
    outer_before = {"st/ate": [before, other], "other": other}
    outer_after = {"st/ate": [after, other], "other": other}
    assert exact(apply_patch(outer_before, patch), outer_after)
    assert exact(jsonpatch.apply_patch(outer_before, copy.deepcopy(patch)), outer_after)


# ---------------------------------------------------------------------------------------------
# minimality: exact operation lists


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            {"a": {"b": 1, "c": 2}, "d": "x"},
            {"a": {"b": 1, "c": 3}, "d": "x"},
            [{"op": "replace", "path": "/a/c", "value": 3}],
            id="changed-leaf",
        ),
        pytest.param(
            {"a": {"b": 1}},
            {"a": {"b": 1, "new": [1]}},
            [{"op": "add", "path": "/a/new", "value": [1]}],
            id="added-key",
        ),
        pytest.param(
            {"a": {"b": 1, "gone": {"x": 1}}},
            {"a": {"b": 1}},
            [{"op": "remove", "path": "/a/gone"}],
            id="removed-key",
        ),
        pytest.param(
            {"xs": [1, 2]},
            {"xs": [1, 2, 3, 4, 5]},
            [
                {"op": "add", "path": "/xs/2", "value": 3},
                {"op": "add", "path": "/xs/3", "value": 4},
                {"op": "add", "path": "/xs/4", "value": 5},
            ],
            id="appended-items",
        ),
        pytest.param(
            {"xs": [1, 2, 3, 4, 5]},
            {"xs": [1, 2]},
            [
                {"op": "remove", "path": "/xs/4"},
                {"op": "remove", "path": "/xs/3"},
                {"op": "remove", "path": "/xs/2"},
            ],
            id="removed-from-end",
        ),
        pytest.param(
            {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]},
            {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "c"}]},
            [{"op": "replace", "path": "/items/1/v", "value": "B"}],
            id="changed-inside-list-of-dicts",
        ),
        pytest.param(
            {"xs": [1, 2, 3]},
            {"xs": [0, 1, 2, 3]},
            [{"op": "add", "path": "/xs/0", "value": 0}],
            id="inserted-at-front",
        ),
        pytest.param(
            {"xs": [1, 2, 3, 4]},
            {"xs": [1, 3, 4]},
            [{"op": "remove", "path": "/xs/1"}],
            id="removed-from-middle",
        ),
        pytest.param(
            {"xs": [1, 2, 3, 4, 5]},
            {"xs": [1, 9, 8, 7, 5]},
            [
                {"op": "replace", "path": "/xs/1", "value": 9},
                {"op": "replace", "path": "/xs/2", "value": 8},
                {"op": "replace", "path": "/xs/3", "value": 7},
            ],
            id="replaced-middle",
        ),
        pytest.param(
            {"xs": [1, 2, 3, 4, 5]},
            {"xs": [1, 9, 5]},
            [
                {"op": "replace", "path": "/xs/1", "value": 9},
                {"op": "remove", "path": "/xs/3"},
                {"op": "remove", "path": "/xs/2"},
            ],
            id="shrunk-middle",
        ),
        pytest.param(
            {"x": {"a": 1}},
            {"x": [1]},
            [{"op": "replace", "path": "/x", "value": [1]}],
            id="dict-to-list",
        ),
        pytest.param(
            {"x": 1}, {"x": "1"}, [{"op": "replace", "path": "/x", "value": "1"}], id="int-to-str"
        ),
        pytest.param({"x": None}, {}, [{"op": "remove", "path": "/x"}], id="removed-null"),
        pytest.param(
            {}, {"x": None}, [{"op": "add", "path": "/x", "value": None}], id="added-null"
        ),
        pytest.param(
            {"a/b": {"~": 1, "": 2, "~1": 3}},
            {"a/b": {"~": 10, "": 20, "~1": 30}},
            [
                {"op": "replace", "path": "/a~1b/~0", "value": 10},
                {"op": "replace", "path": "/a~1b/", "value": 20},
                {"op": "replace", "path": "/a~1b/~01", "value": 30},
            ],
            id="escaped-keys",
        ),
        pytest.param({"a": [1]}, {"a": [1]}, [], id="unchanged"),
        pytest.param(
            {"a": 1, "b": [2, {"c": 3}]}, {"b": [2, {"c": 3}], "a": 1}, [], id="key-order-ignored"
        ),
        pytest.param([1], {"a": 1}, [{"op": "replace", "path": "", "value": {"a": 1}}], id="root"),
    ],
)
def test_minimal_operations(before: Json, after: Json, expected: list[dict[str, object]]) -> None:
    assert make_patch(before, after) == expected
    assert exact(apply_patch(before, expected), after)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (True, 1),
        (1, True),
        (1, 1.0),
        (1.0, 1),
        (False, 0.0),
        (0.0, -0.0),
        (-0.0, 0),
        (2**60, 2.0**60),
    ],
)
def test_equal_values_of_another_type_are_changes(old: Json, new: Json) -> None:
    before: Json = {"deep": {"list": [1, {"x": old}, 3], "other": "y"}}
    after: Json = {"deep": {"list": [1, {"x": new}, 3], "other": "y"}}
    assert before == after  # Python cannot see this change; the patch must
    patch = make_patch(before, after)
    assert patch == [{"op": "replace", "path": "/deep/list/1/x", "value": new}]
    assert exact(patch[0]["value"], new)
    assert exact(apply_patch(before, patch), after)


def test_retyped_element_in_a_long_list_is_one_replace() -> None:
    before: Json = [True] * 100
    after: Json = [*before[:50], 1, *before[51:]]
    assert make_patch({"flags": before}, {"flags": after}) == [
        {"op": "replace", "path": "/flags/50", "value": 1}
    ]


def test_several_hidden_changes_are_each_found() -> None:
    rows: Json = [{"id": i, "flag": True, "ratio": 1.0} for i in range(50)]
    before: Json = {"rows": rows, "extra": {f"k{i}": i for i in range(30)}}
    after: Json = copy.deepcopy(before)
    after["rows"][3]["flag"] = 1
    after["rows"][17]["ratio"] = 1
    after["rows"][40]["flag"] = 1.0
    after["extra"]["k1"] = True
    after["extra"]["k29"] = 29.0
    assert before == after
    assert make_patch(before, after) == [
        {"op": "replace", "path": "/rows/3/flag", "value": 1},
        {"op": "replace", "path": "/rows/17/ratio", "value": 1},
        {"op": "replace", "path": "/rows/40/flag", "value": 1.0},
        {"op": "replace", "path": "/extra/k1", "value": True},
        {"op": "replace", "path": "/extra/k29", "value": 29.0},
    ]


def test_tuples_and_enums_compare_as_the_json_they_serialise_to() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    class Colour(str):
        pass

    before: Json = {"pair": (1, 2), "level": Level.HIGH, "colour": Colour("red")}
    assert make_patch(before, {"pair": [1, 2], "level": 3, "colour": "red"}) == []
    assert make_patch(before, {"pair": [1, 5], "level": 3.0, "colour": "blue"}) == [
        {"op": "replace", "path": "/pair/1", "value": 5},
        {"op": "replace", "path": "/level", "value": 3.0},
        {"op": "replace", "path": "/colour", "value": "blue"},
    ]


def test_unchanged_nan_gives_no_operation() -> None:
    assert make_patch({"x": [float("nan")]}, {"x": [float("nan")]}) == []


def test_deeply_nested_change_is_one_operation() -> None:
    before: Json = {"leaf": 1}
    after: Json = {"leaf": 2}
    for _ in range(300):
        before, after = {"k": [before]}, {"k": [after]}
    patch = make_patch(before, after)
    assert patch == [{"op": "replace", "path": "/k/0" * 300 + "/leaf", "value": 2}]
    assert apply_patch(before, patch) == after


def test_large_state_with_one_change() -> None:
    items = [{"id": i, "name": f"item-{i}", "score": i / 7, "ok": i % 2 == 0} for i in range(5000)]
    before: Json = {"items": items, "title": "t"}
    after: Json = copy.deepcopy(before)
    assert after["items"][2500]["ok"] is True
    after["items"][2500]["ok"] = 1  # still == True: only the type changes
    after["items"][2501]["score"] = 0.5
    patch = make_patch(before, after)
    assert patch == [
        {"op": "replace", "path": "/items/2500/ok", "value": 1},
        {"op": "replace", "path": "/items/2501/score", "value": 0.5},
    ]


def test_values_are_not_copied_but_patch_serialises() -> None:
    after: Json = {"a": {"nested": [1, 2]}}
    patch = make_patch({}, after)
    assert patch[0]["value"] is after["a"]
    assert json.loads(json.dumps(patch)) == [
        {"op": "add", "path": "/a", "value": {"nested": [1, 2]}}
    ]


# ---------------------------------------------------------------------------------------------
# pointers and prefix


@pytest.mark.parametrize(
    ("token", "escaped"),
    [
        ("a", "a"),
        ("", ""),
        ("~", "~0"),
        ("/", "~1"),
        ("~/", "~0~1"),
        ("~1", "~01"),
        ("a/~b", "a~1~0b"),
    ],
)
def test_escape_pointer_token(token: str, escaped: str) -> None:
    assert escape_pointer_token(token) == escaped


def test_prefix_on_every_path() -> None:
    patch = make_patch({"n": 1, "xs": []}, {"n": 2, "xs": [1], "k": None}, prefix="/state")
    assert patch == [
        {"op": "replace", "path": "/state/n", "value": 2},
        {"op": "add", "path": "/state/xs/0", "value": 1},
        {"op": "add", "path": "/state/k", "value": None},
    ]
    assert make_patch(1, "x", prefix="/state") == [
        {"op": "replace", "path": "/state", "value": "x"}
    ]
    assert make_patch({"a": 1}, {"a": 1}, prefix="/state") == []


@pytest.mark.parametrize("prefix", ["state", "/bad~2escape", "~"])
def test_prefix_must_be_a_pointer(prefix: str) -> None:
    with pytest.raises(ValueError, match="JSON Pointer"):
        make_patch(1, 2, prefix=prefix)


# ---------------------------------------------------------------------------------------------
# apply_patch: RFC 6902 behaviour (examples from its appendix A)


@pytest.mark.parametrize(
    ("doc", "patch", "expected"),
    [
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"baz": "qux", "foo": "bar"},
        ),
        (
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        (
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
        ),
        (
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
        ),
        (
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        ),
        (
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
        ),
        (
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2.0},
            ],
            {"baz": "qux", "foo": ["a", 2, "c"]},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
        ),
        (
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": 10}],
            {"/": 9, "~1": 10},
        ),
        (
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
        ),
        (
            {"a": {"b": [1]}},
            [
                {"op": "copy", "from": "/a", "path": "/c"},
                {"op": "add", "path": "/c/b/-", "value": 2},
            ],
            {"a": {"b": [1]}, "c": {"b": [1, 2]}},
        ),
        ({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": 1}),
        ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], [1]),
        ({"a": 1}, [{"op": "add", "path": "", "value": None}], None),
        ({"": 1}, [{"op": "replace", "path": "/", "value": 2}], {"": 2}),
        ({"a": 1}, [{"op": "add", "path": "/a", "value": 2, "extra": "ignored"}], {"a": 2}),
        ({"a": 1}, [], {"a": 1}),
    ],
)
def test_apply_patch_follows_rfc_6902(
    doc: Json, patch: list[dict[str, object]], expected: Json
) -> None:
    assert exact(apply_patch(doc, patch), expected)
    assert exact(jsonpatch.apply_patch(copy.deepcopy(doc), copy.deepcopy(patch)), expected)


@pytest.mark.parametrize(
    ("doc", "patch", "message"),
    [
        ({"a": 1}, [{"op": "remove", "path": "/b"}], "/b does not exist"),
        ({"a": 1}, [{"op": "replace", "path": "/b", "value": 1}], "/b does not exist"),
        ({"a": [1]}, [{"op": "replace", "path": "/a/1", "value": 1}], "out of range"),
        ({"a": [1]}, [{"op": "remove", "path": "/a/-"}], "'-'"),
        ({"a": [1]}, [{"op": "add", "path": "/a/2", "value": 1}], "out of range"),
        ({"a": [1, 2]}, [{"op": "remove", "path": "/a/01"}], "not an array index"),
        ({"a": [1, 2]}, [{"op": "remove", "path": "/a/x"}], "not an array index"),
        ({"a": [1, 2]}, [{"op": "remove", "path": "/a/-1"}], "not an array index"),
        ({"a": 1}, [{"op": "add", "path": "/a/b", "value": 1}], "is an integer, not an object"),
        ({"a": "s"}, [{"op": "test", "path": "/a/0", "value": "s"}], "is a string, not an object"),
        ({}, [{"op": "add", "path": "/x/y", "value": 1}], "/x does not exist"),
        ({"a": 1}, [{"op": "test", "path": "/a", "value": 2}], "is 1, not 2"),
        ({"a": True}, [{"op": "test", "path": "/a", "value": 1}], "is True, not 1"),
        ({"a": [1]}, [{"op": "test", "path": "/a", "value": [1, 2]}], "not"),
        ({}, [{"op": "frobnicate", "path": "/a"}], "unknown op 'frobnicate'"),
        ({}, [{"path": "/a", "value": 1}], "no 'op' member"),
        ({}, [{"op": "add", "value": 1}], "no 'path' member"),
        ({}, [{"op": "add", "path": "/a"}], "no 'value' member"),
        ({"a": 1}, [{"op": "move", "path": "/b"}], "no 'from' member"),
        ({"a": 1}, [{"op": "copy", "from": "/x", "path": "/b"}], "/x does not exist"),
        ({}, [{"op": "move", "from": "/a", "path": "/a"}], "/a does not exist"),
        ({}, [{"op": "add", "path": 1, "value": 1}], "is a string"),
        ({}, [{"op": "add", "path": "a", "value": 1}], "start with '/'"),
        ({"~2": 1}, [{"op": "remove", "path": "/~2"}], "'~' not followed"),
        ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}], "own children"),
        ({"a": 1}, [{"op": "remove", "path": ""}], "whole document"),
        ({"a": 1}, "[]", "list of operation objects"),
        ({"a": 1}, {"op": "remove", "path": "/a"}, "list of operation objects"),
        ({"a": 1}, ["remove"], "operation 0 is a str"),
    ],
)
def test_apply_patch_rejects_invalid_patches(doc: Json, patch: Any, message: str) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(ValueError) as info:
        apply_patch(doc, patch)
    assert message in str(info.value)
    assert exact(doc, before)


def test_error_names_the_failing_operation() -> None:
    doc: Json = {"a": 1}
    patch: list[dict[str, object]] = [
        {"op": "replace", "path": "/a", "value": 2},
        {"op": "remove", "path": "/zz"},
    ]
    with pytest.raises(
        ValueError, match=r"operation 1 \('remove' at '/zz'\) failed: /zz does not exist"
    ):
        apply_patch(doc, patch)
    assert doc == {"a": 1}  # all or nothing: the first operation left no trace


def test_apply_patch_shares_nothing_with_its_inputs() -> None:
    doc: Json = {"a": {"b": [1, 2]}, "c": (1, 2)}
    value: Json = {"y": []}
    patch: list[dict[str, object]] = [
        {"op": "add", "path": "/x", "value": value},
        {"op": "add", "path": "/x/y/-", "value": 1},
        {"op": "add", "path": "/c/-", "value": 3},
    ]
    result: Json = apply_patch(doc, patch)
    assert result == {"a": {"b": [1, 2]}, "c": [1, 2, 3], "x": {"y": [1]}}
    assert value == {"y": []}
    assert doc == {"a": {"b": [1, 2]}, "c": (1, 2)}
    assert isinstance(result, dict)
    result["a"]["b"].append(3)
    assert doc["a"]["b"] == [1, 2]


def test_aliased_input_is_copied_apart() -> None:
    shared: Json = [1]
    doc: Json = {"a": shared, "b": shared}
    result = apply_patch(doc, [{"op": "add", "path": "/a/-", "value": 2}])
    assert result == {"a": [1, 2], "b": [1]}
    assert shared == [1]


def test_moved_values_do_not_alias_copies() -> None:
    result = apply_patch(
        {"a": {"n": 1}},
        [
            {"op": "copy", "from": "/a", "path": "/b"},
            {"op": "replace", "path": "/b/n", "value": 2},
        ],
    )
    assert result == {"a": {"n": 1}, "b": {"n": 2}}
