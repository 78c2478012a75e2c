"""encode / to_jsonable: every value becomes bounded, valid, redacted JSON, and never raises."""

from __future__ import annotations

import array
import collections
import dataclasses
import datetime as dt
import enum
import json
import logging
import math
import threading
import time
import types
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import spanflow
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, RootModel, SecretStr, TypeAdapter
from spanflow.values.redact import REDACTED, Redactor
from spanflow.values.serialize import (
    CYCLE,
    DEPTH_MARKER,
    MAX_DEPTH,
    MIN_MAX_BYTES,
    Encoded,
    encode,
    to_jsonable,
)

SECRET = "sk-proj-Zq9xW3vB7nM1kL5pR8tY2uI4oP6aS0dF"


def loads(enc: Encoded) -> Any:
    """The JSON, checked to be valid, valid UTF-8 and within the default bound."""
    data = enc.json.encode("utf-8")  # raises on lone surrogates
    assert len(data) <= 4096
    return json.loads(enc.json)


def size(enc: Encoded) -> int:
    return len(enc.json.encode("utf-8"))


# -- plain values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**70,
        1.5,
        -0.0,
        "",
        "héllo ✓ 汉字",
        [],
        {},
        [1, "a", None],
        {"a": {"b": [1.25]}},
    ],
)
def test_plain_json_values_round_trip(value: Any) -> None:
    enc = encode(value)
    assert loads(enc) == value
    assert (enc.truncated, enc.redacted, enc.lossless) == (False, False, True)


def test_common_case_is_compact_json() -> None:
    enc = encode({"query": "refund please", "k": 3})
    assert enc == Encoded('{"query":"refund please","k":3}', False, False, True)


def test_tuples_are_lists_and_rebuild() -> None:
    enc = encode((1, ("a", 2.5)))
    assert loads(enc) == [1, ["a", 2.5]]
    assert enc.lossless
    assert TypeAdapter(tuple[int, tuple[str, float]]).validate_python(loads(enc)) == (1, ("a", 2.5))


def test_non_finite_floats_become_strings() -> None:
    enc = encode([math.nan, math.inf, -math.inf, 1.0])
    assert loads(enc) == ["NaN", "Infinity", "-Infinity", 1.0]
    assert not enc.lossless


def test_huge_ints() -> None:
    big = 10**4000  # within the interpreter's int->str limit
    enc = encode({"n": big}, max_bytes=10_000)
    assert loads_any(enc)["n"] == big
    assert enc.lossless
    huge = 10**6000  # beyond it: json.dumps alone would raise
    enc = encode(huge, max_bytes=100_000)
    assert int(json.loads(enc.json), 16) == huge
    assert not enc.lossless


def loads_any(enc: Encoded) -> Any:
    enc.json.encode("utf-8")
    return json.loads(enc.json)


@pytest.mark.parametrize(
    "text",
    ["\ud800", "a\udfffb", "\udc00\ud800", "ok \ud83d end", "\x00\x1f\x7f", "\u2028\u2029", "😀"],
)
def test_odd_unicode_gives_valid_utf8_json(text: str) -> None:
    enc = encode({"t": text, text: 1})
    assert loads(enc) == {"t": text, text: 1}
    assert enc.lossless


def test_surrogate_pair_written_as_two_code_points_is_not_lossless() -> None:
    enc = encode("\ud83d\ude00")  # json.loads reads it back as one character
    assert json.loads(enc.json) == "😀"
    assert not enc.lossless


# -- conversions --------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = (0, 0, 255)


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int
    label: str = "p"


@dataclasses.dataclass
class Holder:
    lock: Any  # cannot be deep-copied: asdict() would fail
    items: list[Any] = dataclasses.field(default_factory=list)
    later: int = dataclasses.field(init=False)


class Item(BaseModel):
    name: str
    price: Decimal
    tags: set[str] = set()
    when: dt.datetime | None = None


class Order(BaseModel):
    id: uuid.UUID
    items: list[Item]
    color: Color = Color.RED
    note: str | None = None


def test_enums_are_their_values() -> None:
    enc = encode([Color.RED, Level.LOW])
    assert loads(enc) == ["red", 1]
    assert enc.lossless
    assert TypeAdapter(tuple[Color, Level]).validate_python(loads(enc)) == (Color.RED, Level.LOW)
    enc = encode(Color.BLUE)
    assert loads(enc) == [0, 0, 255]
    assert not enc.lossless  # a list does not validate as the tuple value


def test_dates_times_and_durations() -> None:
    moment = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    value: dict[str, Any] = {
        "at": moment,
        "day": dt.date(2024, 5, 6),
        "clock": dt.time(7, 8, 9),
        "took": dt.timedelta(minutes=1, microseconds=500),
    }
    enc = encode(value)
    assert loads(enc) == {
        "at": "2024-05-06T07:08:09.123456+02:00",
        "day": "2024-05-06",
        "clock": "07:08:09",
        "took": 60.0005,
    }
    assert enc.lossless

    class Times(BaseModel):
        at: dt.datetime
        day: dt.date
        clock: dt.time
        took: dt.timedelta

    assert Times.model_validate(loads(enc)) == Times(**value)


def test_uuid_decimal_path_are_strings() -> None:
    u = uuid.UUID(int=42)
    enc = encode([u, Decimal("1.10"), Path("/tmp/x.txt"), PurePosixPath("a/b")])
    assert loads(enc) == [str(u), "1.10", "/tmp/x.txt", "a/b"]
    assert enc.lossless


def test_bytes_become_previews() -> None:
    enc = encode(
        {
            "text": b"hello world",
            "binary": bytes(range(40)),
            "array": bytearray(b"\xff\xfe\x00"),
            "view": memoryview(b"abc" * 20),
            "cut_utf8": "é".encode() * 20,
            "empty": b"",
        }
    )
    out = loads(enc)
    assert out["text"] == {"__bytes__": 11, "preview": "hello world"}
    assert out["binary"] == {"__bytes__": 40, "preview": bytes(range(32)).hex()}
    assert out["array"] == {"__bytes__": 3, "preview": "fffe00"}
    assert out["view"] == {"__bytes__": 60, "preview": ("abc" * 20)[:32]}
    assert out["cut_utf8"] == {"__bytes__": 40, "preview": "é" * 16}
    assert out["empty"] == {"__bytes__": 0, "preview": ""}
    assert not enc.lossless


def test_bytes_preview_is_redacted() -> None:
    enc = encode(f"pwd={SECRET}".encode())
    assert SECRET[:20] not in enc.json
    assert enc.redacted


def test_sets_are_sorted_lists() -> None:
    enc = encode({"s": {"b", "c", "a"}, "f": frozenset({3, 1, 2.5}), "mixed": {1, "a"}})
    out = loads(enc)
    assert out["s"] == ["a", "b", "c"]
    assert out["f"] == [1, 2.5, 3]
    assert sorted(out["mixed"], key=str) == [1, "a"]
    assert enc.lossless
    assert TypeAdapter(set[str]).validate_python(out["s"]) == {"a", "b", "c"}


def test_mappings_and_key_coercion() -> None:
    value = {1: "int", 2.5: "float", None: "none", Color.RED: "enum", -math.inf: "inf"}
    enc = encode(value)
    assert loads(enc) == {
        "1": "int",
        "2.5": "float",
        "null": "none",
        "red": "enum",
        "-Infinity": "inf",
    }
    assert loads(encode({True: 1, False: 0})) == {"true": 1, "false": 0}
    proxy = types.MappingProxyType({"a": 1})
    ordered = collections.OrderedDict([("z", 1), ("a", 2)])
    enc = encode(
        [proxy, ordered, collections.defaultdict(int, {"k": 1}), collections.Counter("aab")]
    )
    assert loads(enc) == [{"a": 1}, {"z": 1, "a": 2}, {"k": 1}, {"a": 2, "b": 1}]
    assert TypeAdapter(dict[int, str]).validate_python(loads(encode({1: "a"}))) == {1: "a"}


def test_subclass_and_huge_keys() -> None:
    class Name(str):
        def __str__(self) -> str:
            return "overridden"

    class Count(int):
        pass

    value = {Name("alice"): 1, Count(7): 2, 10**5000: 3, Level.LOW: 4, Color.RED: 5}
    out = loads_any(encode(value, max_bytes=20_000))
    assert out == {"alice": 1, "7": 2, hex(10**5000): 3, "1": 4, "red": 5}


def test_tuple_keys_are_strings_and_not_lossless() -> None:
    enc = encode({(1, 2): "x"})
    assert loads(enc) == {"(1, 2)": "x"}
    assert not enc.lossless


def test_keys_that_collide_after_coercion_are_not_lossless() -> None:
    enc = encode({1: "a", "1": "b"})
    assert len(loads(enc)) == 1
    assert not enc.lossless


def test_key_whose_str_raises_does_not_escape() -> None:
    class BadKey:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            return "BadKey()"

    enc = encode({BadKey(): 1})
    assert loads(enc) == {"BadKey()": 1}


class Pairs(Mapping[str, int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __getitem__(self, key: str) -> int:
        return int(key[1:])

    def __iter__(self) -> Iterator[str]:
        return (f"k{i}" for i in range(self.n))

    def __len__(self) -> int:
        return self.n


def test_custom_mapping_and_sequences() -> None:
    enc = encode(
        [Pairs(2), range(3), collections.deque([1, 2]), {"a": 1}.values(), {"a": 1}.keys()]
    )
    assert loads(enc) == [{"k0": 0, "k1": 1}, [0, 1, 2], [1, 2], [1], ["a"]]


def test_tolist_objects() -> None:
    class FakeArray:
        def __init__(self, data: list[list[float]]) -> None:
            self.data = data

        def tolist(self) -> list[list[float]]:
            return self.data

    enc = encode({"emb": FakeArray([[0.5, 1.0], [2.0, math.nan]]), "a": array.array("i", [1, 2])})
    assert loads(enc) == {"emb": [[0.5, 1.0], [2.0, "NaN"]], "a": [1, 2]}


def test_objects_that_convert_to_objects_forever_stop_at_the_depth_limit() -> None:
    class Endless:
        def tolist(self) -> Endless:
            return Endless()

    enc = encode(Endless())
    assert loads(enc) == DEPTH_MARKER


def test_exceptions() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise ValueError("str fails")

    enc = encode([ValueError("bad input"), KeyError("k"), Weird()])
    out = loads(enc)
    assert out[0] == {"__exception__": "ValueError", "message": "bad input"}
    assert out[1] == {"__exception__": "KeyError", "message": "'k'"}
    assert out[2]["__exception__"].endswith("Weird")
    assert not enc.lossless


def test_unknown_objects_are_type_and_cut_repr() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "Thing(" + "x" * 1000 + ")"

    out = loads(encode(Thing()))
    assert (
        out["__type__"] == f"{__name__}.test_unknown_objects_are_type_and_cut_repr.<locals>.Thing"
    )
    assert out["repr"].startswith("Thing(xxx")
    assert len(out["repr"]) <= 201


def test_hostile_objects_never_escape() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("repr")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("eq")

        def __hash__(self) -> int:
            raise RuntimeError("hash")

        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(name)

    h = Hostile()
    enc = encode({"h": h, "again": [h, h]})
    out = loads(enc)
    assert out["h"]["repr"] == "<repr failed: RuntimeError>"
    assert out["again"][1]["__type__"].endswith("Hostile")
    assert not enc.lossless


def test_generators_and_iterators_are_not_consumed() -> None:
    gen = (i for i in range(3))
    it = iter([1, 2, 3])
    enc = encode({"gen": gen, "it": it})
    out = loads(enc)
    assert out["gen"]["__type__"] == "builtins.generator"
    assert out["it"]["__type__"] == "builtins.list_iterator"
    assert list(gen) == [0, 1, 2]
    assert list(it) == [1, 2, 3]
    assert not enc.lossless


def test_dataclasses_are_walked_without_copying() -> None:
    holder = Holder(lock=threading.Lock(), items=[Point(1, 2)])
    enc = encode(holder)
    out = loads(enc)
    assert out["items"] == [{"x": 1, "y": 2, "label": "p"}]
    assert out["lock"]["__type__"].endswith("lock")
    assert "later" not in out  # never set (init=False)
    assert not enc.lossless
    enc = encode(Point(3, 4))
    assert enc.lossless
    assert TypeAdapter(Point).validate_python(loads(enc)) == Point(3, 4)


def test_pydantic_models_rebuild() -> None:
    order = Order(
        id=uuid.UUID(int=7),
        items=[
            Item(name="pen", price=Decimal("2.50"), tags={"b", "a"}, when=dt.datetime(2024, 1, 1))
        ],
        color=Color.RED,
    )
    enc = encode(order)
    assert enc.lossless
    assert loads(enc)["items"][0]["tags"] == ["a", "b"]
    assert Order.model_validate(loads(enc)) == order
    assert loads(enc)["id"] == str(order.id)
    assert loads(enc)["items"][0]["price"] == "2.50"


def test_model_with_unserialisable_field_does_not_raise() -> None:
    class Conn:
        pass

    class WithConn(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        conn: Conn
        name: str = "db"

    enc = encode(WithConn(conn=Conn()))
    out = loads(enc)
    assert out["name"] == "db"
    assert out["conn"]["__type__"].endswith("Conn")
    assert not enc.lossless


def test_model_extras_excluded_fields_and_aliases() -> None:
    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        a: int
        hidden: str = Field(default="h", exclude=True)

    enc = encode(Loose(a=1, extra_field="x"))  # type: ignore[call-arg]
    assert loads(enc) == {"a": 1, "extra_field": "x"}

    class Aliased(BaseModel):
        user_name: str = Field(alias="userName")

    enc = encode(Aliased(userName="x"))
    assert loads(enc) == {"user_name": "x"}
    assert not enc.lossless  # validating by field name would fail


def test_root_model() -> None:
    enc = encode(RootModel[list[int]]([1, 2]))
    assert loads(enc) == [1, 2]
    assert enc.lossless


def test_pydantic_known_types_are_spelled_as_pydantic_does() -> None:
    import ipaddress

    enc = encode({"ip": ipaddress.ip_address("10.0.0.1")})
    assert loads(enc) == {"ip": "10.0.0.1"}


def test_to_jsonable_returns_plain_structure_and_flags() -> None:
    value, flags = to_jsonable({"a": (1, 2), "password": "x", "b": b"z"})
    assert value == {"a": [1, 2], "password": REDACTED, "b": {"__bytes__": 1, "preview": "z"}}
    assert (flags.truncated, flags.redacted, flags.lossless) == (False, True, False)
    value, flags = to_jsonable({"s": "x" * 100_000})
    assert value == {"s": "x" * 100_000}  # no size limit
    assert (flags.truncated, flags.redacted, flags.lossless) == (False, False, True)


# -- cycles and depth -------------------------------------------------------------------------


def test_cycles_become_markers() -> None:
    d: dict[str, Any] = {"name": "root"}
    d["self"] = d
    lst: list[Any] = [1]
    lst.append(lst)
    enc = encode({"d": d, "l": lst})
    assert loads(enc) == {"d": {"name": "root", "self": CYCLE}, "l": [1, CYCLE]}
    assert not enc.lossless


def test_shared_references_are_not_cycles() -> None:
    shared = [1, 2]
    enc = encode({"a": shared, "b": shared})
    assert loads(enc) == {"a": [1, 2], "b": [1, 2]}
    assert enc.lossless


def test_cycles_through_models_and_dataclasses() -> None:
    class Node(BaseModel):
        children: list[Any] = []

    node = Node()
    node.children.append(node)
    point = Point(1, 2)
    point.label = point  # type: ignore[assignment]
    enc = encode([node, point])
    assert loads(enc) == [{"children": [CYCLE]}, {"x": 1, "y": 2, "label": CYCLE}]


def test_deep_nesting_is_cut_without_recursion_error() -> None:
    deep: Any = "leaf"
    for _ in range(100_000):
        deep = [deep]
    enc = encode(deep, max_bytes=100_000)
    out = loads_any(enc)
    for _ in range(MAX_DEPTH):
        assert isinstance(out, list) and len(out) == 1
        out = out[0]
    assert out == DEPTH_MARKER
    assert not enc.lossless
    _, flags = to_jsonable(deep)
    assert not flags.lossless


def test_deep_dicts_and_models_are_cut() -> None:
    class Box(BaseModel):
        inner: Any = None

    deep: Any = None
    for _ in range(500):
        deep = Box(inner={"k": deep})
    enc = encode(deep, max_bytes=1_000_000)
    assert DEPTH_MARKER in loads_any(enc).__repr__()


# -- redaction ----------------------------------------------------------------------------------


def test_secret_keys_redact_whole_values_of_any_type() -> None:
    value = {
        "api_key": SECRET,
        "password": 12345,
        "headers": {"Authorization": "Basic abc", "Accept": "json"},
        "token": {"nested": ["deep", SECRET]},
        "secret": SecretStr("s"),
        "auth": None,
        "session": True,
        "max_tokens": 100,
    }
    enc = encode(value)
    out = loads(enc)
    assert out == {
        "api_key": REDACTED,
        "password": REDACTED,
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "token": REDACTED,
        "secret": REDACTED,
        "auth": None,
        "session": True,
        "max_tokens": 100,
    }
    assert enc.redacted and not enc.lossless


def test_secrets_planted_everywhere_never_appear() -> None:
    @dataclasses.dataclass
    class Creds:
        user: str
        note: str

    class Settings(BaseModel):
        endpoint: str
        openai_key: SecretStr
        api_token: str

    value = {
        "query": f"please use {SECRET} now",
        "list": [1, [f"Bearer {SECRET}"], {"deeper": (SECRET,)}],
        "model": Settings(
            endpoint=f"https://u:{SECRET}@h", openai_key=SecretStr(SECRET), api_token=SECRET
        ),
        "dc": Creds(user="bob", note=f"key={SECRET}"),
        "set": {SECRET},
        "error": ValueError(f"rejected {SECRET}"),
        "obj": types.SimpleNamespace(api_key=SECRET),
        SECRET: "as a key",
        "bytes": SECRET.encode(),
    }
    for max_bytes in (64, 200, 1000, 4096, 100_000):
        enc = encode(value, max_bytes=max_bytes)
        assert SECRET[8:24] not in enc.json, max_bytes
        assert enc.redacted
    out, flags = to_jsonable(value)
    assert SECRET[8:24] not in json.dumps(out)
    assert flags.redacted


def test_header_pairs_and_environments() -> None:
    headers = [("Authorization", "Basic dXNlcjpwYXNz"), ("Accept", "application/json")]
    environ = {"OPENAI_API_KEY": "opaque1", "HOME": "/root", "GITHUB_TOKEN": "opaque2"}
    enc = encode({"headers": headers, "env": environ})
    assert loads(enc) == {
        "headers": [["Authorization", "Basic [REDACTED]"], ["Accept", "application/json"]],
        "env": {"OPENAI_API_KEY": REDACTED, "HOME": "/root", "GITHUB_TOKEN": REDACTED},
    }


def test_secret_straddling_a_cut_is_still_redacted() -> None:
    for offset in range(3950, 4100, 7):
        text = "a " * (offset // 2) + SECRET + " b" * 3000
        enc = encode({"text": text})
        assert enc.truncated
        assert SECRET[:14] not in enc.json, offset


def test_redaction_can_be_customised_or_disabled() -> None:
    custom = Redactor(keys=["ssn"], patterns=[r"EMP-\d{4}"])
    enc = encode({"ssn": "1", "note": "EMP-1234", "password": "p"}, redactor=custom)
    assert loads(enc) == {"ssn": REDACTED, "note": REDACTED, "password": REDACTED}
    enc = encode({"password": "p", "t": SECRET}, redactor=Redactor(defaults=False))
    assert loads(enc) == {"password": "p", "t": SECRET}
    assert enc.lossless and not enc.redacted


# -- truncation ---------------------------------------------------------------------------------


def test_long_string_is_cut_with_marker() -> None:
    enc = encode("abc" * 10_000, max_bytes=100)
    out = loads_any(enc)
    assert size(enc) <= 100
    head, _, rest = out.partition("…[+")
    assert "abcabc".startswith(head[:6]) and len(head) > 40
    assert rest.endswith(" chars]")
    assert len(head) + int(rest.split(" ")[0]) == 30_000
    assert enc.truncated and not enc.lossless


def test_long_list_and_dict_are_capped_with_markers() -> None:
    enc = encode(list(range(10_000)), max_bytes=200)
    out = loads_any(enc)
    assert out[:3] == [0, 1, 2]
    assert out[-1] == f"…[+{10_000 - (len(out) - 1)} items]"
    enc = encode({f"key{i}": i for i in range(10_000)}, max_bytes=200)
    out = loads_any(enc)
    assert list(out)[:2] == ["key0", "key1"]
    marker = list(out)[-1]
    assert marker == f"…[+{10_000 - (len(out) - 1)} items]"
    assert enc.truncated


def test_small_fields_survive_next_to_a_huge_one() -> None:
    enc = encode({"prompt": "x" * 10_000_000, "model": "gpt-4o", "temperature": 0.2})
    out = loads(enc)
    assert out["model"] == "gpt-4o" and out["temperature"] == 0.2
    assert out["prompt"].endswith(" chars]") and len(out["prompt"]) > 1000


def test_huge_set_is_capped() -> None:
    enc = encode(set(range(1_000_000)), max_bytes=300)
    out = loads_any(enc)
    assert size(enc) <= 300
    assert out[-1].startswith("…[+")


def test_last_resort_envelope() -> None:
    # 24 control characters: too short to cut, six bytes each once escaped.
    value = "\x00" * 24
    enc = encode(value, max_bytes=64)
    out = loads_any(enc)
    assert size(enc) <= 64
    assert out["__truncated__"] is True
    assert out["size"] == len(json.dumps(value))
    assert isinstance(out["preview"], str)
    assert enc.truncated and not enc.lossless


def test_max_bytes_below_the_floor_is_raised_to_it() -> None:
    enc = encode(["x" * 100] * 10, max_bytes=1)
    assert size(enc) <= MIN_MAX_BYTES
    json.loads(enc.json)


@pytest.mark.parametrize("max_bytes", [64, 65, 100, 333, 1000, 4096])
def test_size_bound_on_awkward_values(max_bytes: int) -> None:
    values: list[Any] = [
        "汉" * 10_000,
        "\x01" * 10_000,
        '"\\' * 5_000,
        "\ud800" * 3_000,
        [[["x" * 50] * 50] * 50],
        {f"key{'k' * i}": "é" * i for i in range(300)},
        {"k" * 5000: "v"},
        [1.0 / 3] * 5_000,
        [10**300] * 100,
        list(range(100_000)),
        [ValueError("x" * 500)] * 50,
        [object()] * 200,
        {"b": bytes(1000)} | {f"e{i}": Exception("m" * 100) for i in range(40)},
    ]
    for value in values:
        enc = encode(value, max_bytes=max_bytes)
        assert size(enc) <= max_bytes, (value if len(repr(value)) < 100 else type(value), enc.json)
        json.loads(enc.json)
        assert enc.truncated


def test_huge_values_are_fast() -> None:
    values: list[Any] = [
        "x" * 10_000_000,
        list(range(1_000_000)),
        {f"k{i}": "v" * 100 for i in range(100_000)},
        [{"id": i, "text": "lorem ipsum " * 20} for i in range(100_000)],
        b"\x00" * 10_000_000,
    ]
    for value in values:
        start = time.perf_counter()
        enc = encode(value)
        elapsed = time.perf_counter() - start
        assert elapsed < 0.25, (type(value), elapsed)
        assert enc.truncated or isinstance(value, bytes)
        loads(enc)


# -- failures -----------------------------------------------------------------------------------


def test_value_that_breaks_the_walk_gives_a_placeholder(caplog: pytest.LogCaptureFixture) -> None:
    class Grows:
        def __init__(self, target: dict[str, Any]) -> None:
            self.target = target

        def __repr__(self) -> str:
            self.target[f"k{len(self.target)}"] = 1  # the dict being walked changes size
            return "Grows()"

    before = spanflow.stats().get("serialize_errors", 0)
    d: dict[str, Any] = {}
    d["a"] = Grows(d)
    d["b"] = 2
    with caplog.at_level(logging.DEBUG, logger="spanflow"):
        enc = encode(d)
    assert json.loads(enc.json) == {"__unserializable__": "RuntimeError"}
    assert enc.truncated and not enc.lossless
    assert spanflow.stats().get("serialize_errors", 0) == before + 1
    assert "could not encode" in caplog.text


# -- properties ---------------------------------------------------------------------------------

leaves = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=64)
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=8)
        | st.dictionaries(st.text(max_size=12), children, max_size=8)
        | st.tuples(children, children)
    ),
    max_leaves=60,
)


def _exact(value: Any) -> bool:
    """Whether JSON can hold ``value`` (no bytes, no non-finite floats)."""
    if isinstance(value, bytes):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_exact(v) for v in value)
    if isinstance(value, dict):
        return all(_exact(v) for v in value.values())
    return True


def _as_json(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value


@settings(max_examples=300, deadline=None)
@given(value=values, max_bytes=st.sampled_from([64, 100, 500, 4096, 1_000_000]))
def test_encode_is_valid_bounded_and_lossless_when_it_says_so(value: Any, max_bytes: int) -> None:
    enc = encode(value, max_bytes=max_bytes)
    assert len(enc.json.encode("utf-8")) <= max_bytes
    decoded = json.loads(enc.json)
    if not _exact(value):
        assert not enc.lossless
    elif not enc.truncated and not enc.redacted:
        assert enc.lossless
    if enc.lossless:
        assert not enc.truncated and not enc.redacted
        assert decoded == _as_json(value)
    flat, flags = to_jsonable(value)
    assert flags.lossless == (
        enc.lossless or (enc.truncated and _exact(value) and not flags.redacted)
    )
    if flags.lossless:
        assert flat == _as_json(value)


@st.composite
def cyclic(draw: st.DrawFn) -> Any:
    containers: list[Any] = draw(
        st.lists(st.one_of(st.builds(list), st.builds(dict)), min_size=1, max_size=5)
    )
    for c in containers:
        for _ in range(draw(st.integers(0, 3))):
            item = draw(st.one_of(st.sampled_from(containers), leaves))
            if isinstance(c, list):
                c.append(item)
            else:
                c[draw(st.text(max_size=4))] = item
    return containers[0]


@settings(max_examples=200, deadline=None)
@given(value=cyclic(), max_bytes=st.sampled_from([64, 300, 4096]))
def test_cyclic_structures_always_encode(value: Any, max_bytes: int) -> None:
    enc = encode(value, max_bytes=max_bytes)
    assert len(enc.json.encode("utf-8")) <= max_bytes
    json.loads(enc.json)
    out, _ = to_jsonable(value)
    json.dumps(out)


def test_repeated_flat_dicts_stay_redacted() -> None:
    # The flat fast path remembers plain keys and texts; what it remembers must never include a
    # secret, however often the same dicts come back.
    redactor = Redactor()
    token = "sk-" + "a1B2" * 8
    for _ in range(3):
        assert encode({"q": "refund please", "k": 3}, redactor=redactor).json == (
            '{"q":"refund please","k":3}'
        )
        secret_key = json.loads(encode({"api_key": "hunter2", "k": 3}, redactor=redactor).json)
        assert secret_key["api_key"] != "hunter2"
        secret_text = encode({"q": f"use {token}"}, redactor=redactor)
        assert token not in secret_text.json and secret_text.redacted
    assert "q" in redactor.plain_keys and "refund please" in redactor.plain_texts
    assert "api_key" not in redactor.plain_keys
    assert not any(token in text for text in redactor.plain_texts)


def test_big_arrays_cost_time_independent_of_their_size() -> None:
    import resource
    import time

    np = pytest.importorskip("numpy")
    big = np.zeros(20_000_000, dtype=np.float32)
    strided = np.ones((2000, 3000))[:, ::2]  # not contiguous: flattening it would copy
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    enc = encode({"embedding": big, "matrix": strided, "small": np.arange(3)})
    elapsed = time.perf_counter() - start
    assert elapsed < 0.2  # tolist() of 20M floats took ~2 s and 765 MB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB
    value = json.loads(enc.json)
    assert value["embedding"]["shape"] == [20_000_000]
    assert value["embedding"]["dtype"] == "float32"
    assert value["embedding"]["__array__"] == "numpy.ndarray"
    assert value["matrix"]["shape"] == [2000, 1500]
    assert len(value["matrix"]["head"]) == 64
    assert value["small"] == [0, 1, 2]  # small arrays stay whole
    assert not enc.lossless and enc.truncated


def test_torch_tensors_are_recorded_by_shape() -> None:
    torch = pytest.importorskip("torch")
    enc = encode({"t": torch.zeros(1000, 1000)})
    value = json.loads(enc.json)["t"]
    assert value["shape"] == [1000, 1000] and value["dtype"] == "torch.float32"
