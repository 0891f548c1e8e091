"""Hypothesis strategies for hostile input (issue #5, fault test 4: bad input fuzz).

Every record drawn here has the events-file shape that ``produce_records`` sends to Kafka and
``replay`` reads: ``{"topic", "key", "ts"}`` plus the payload as ``raw`` (text) or ``raw_b64``
(bytes that are not UTF-8), or ``value`` for an exact copy of a valid record. Each is derived
from a valid record of a simulated world and tagged with what the core must do with it:

* ``expect``: the DLQ reasons it may get (a list), or ``[]`` for an exact duplicate, which is
  absorbed (README, "Bad input": at-least-once producers re-send records);
* ``fuzz``: what was done to it (the figures are counted by it).

:func:`hostile_record` draws ``(position, record)``: the record goes right after the world's
record at ``position``, so stream clocks and the order it refers to exist. :func:`interleave`
inserts a batch and numbers every fresh event id (``fuzz-<n>``) so that no two hostile
records, and no hostile and valid one, share an id by accident.
"""

from __future__ import annotations

import base64
import string
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import strategies as st

from delaywatch.config import Settings
from delaywatch.replay import role_of
from delaywatch.schemas.events import InventoryEventType, OrderEventType, ScanType

__all__ = [
    "FRESH_ID",
    "FUZZ_KINDS",
    "Rec",
    "World",
    "hostile_batches",
    "hostile_record",
    "interleave",
    "payload_of",
    "preview",
    "verdicts",
]

Rec = dict[str, Any]
Drawn = tuple[int, Rec]
FRESH_ID = "fuzz-?"  # replaced by fuzz-<n> in interleave()
_SPLICE = b'"@@splice@@"'  # a JSON value replaced by raw bytes (NaN, deep nesting, ...)
H_MS = 3_600_000
DAY_MS = 24 * H_MS

# -- the wire contract v1, as the fuzzer sees it ------------------------------------------------
# field -> class; RIGHT_TYPES says which JSON types each class takes
FIELDS: dict[str, dict[str, str]] = {
    "orders": {
        "schema_version": "literal", "event_id": "str", "occurred_at": "time",
        "event_type": "enum", "order_id": "str", "promised_at": "opt_time",
        "customer_ref": "opt_str", "customer_tier": "str", "warehouse_id": "opt_str",
        "carrier": "opt_str", "service_level": "str", "origin_region": "opt_str",
        "destination_region": "opt_str", "lines": "lines", "order_value": "opt_money",
        "attributes": "attributes", "customer": "opt_customer",
    },
    "inventory": {
        "schema_version": "literal", "event_id": "str", "occurred_at": "time",
        "event_type": "enum", "warehouse_id": "str", "sku": "str", "quantity": "int",
        "source": "enum", "order_id": "opt_str",
    },
    "scans": {
        "schema_version": "literal", "event_id": "str", "occurred_at": "time",
        "tracking_number": "str", "order_id": "str", "carrier": "str", "scan_type": "enum",
        "location": "opt_str", "carrier_eta": "opt_time",
    },
}
REQUIRED = {
    "orders": ("event_id", "occurred_at", "event_type", "order_id"),
    "inventory": ("event_id", "occurred_at", "event_type", "warehouse_id", "sku", "quantity",
                  "source"),
    "scans": ("event_id", "occurred_at", "tracking_number", "order_id", "carrier",
              "scan_type"),
}
ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("orders", "event_type"): tuple(e.value for e in OrderEventType),
    ("inventory", "event_type"): tuple(e.value for e in InventoryEventType),
    ("inventory", "source"): ("wms", "oms"),
    ("scans", "scan_type"): tuple(e.value for e in ScanType),
}
ALL_ENUM_VALUES = tuple(v for values in ENUMS.values() for v in values)
JSON_TYPES = ("null", "bool", "int", "float", "str", "list", "object")
# the JSON types each class accepts (JSON Schema of schemas/json/*.v1.json)
RIGHT_TYPES = {
    "str": {"str"}, "opt_str": {"str", "null"}, "time": {"str"}, "opt_time": {"str", "null"},
    "enum": {"str"}, "literal": {"int"}, "int": {"int"}, "opt_money": {"int", "float", "null"},
    "lines": {"list"}, "attributes": {"object"}, "opt_customer": {"object", "null"},
}
NON_FINITE = (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999")  # pydantic reads them


# -- the world the hostile records are derived from ----------------------------------------------
def _occurred_ms(value: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(value["occurred_at"]).timestamp() * 1000)


def _is_valid(rec: Rec) -> bool:
    return isinstance(rec.get("value"), dict) and "malformed" not in rec


@dataclass(frozen=True)
class World:
    """A valid simulated world and the places where hostile records can go.

    Records are inserted between the first tenth of the world (every stream has a clock) and
    a day before its last order event: the slowest gating stream (orders) must still move
    the watermark past each of them, or a refusal decided when its record is ordered (a scan
    dated before its order) would still be waiting when the input ends.
    """

    records: list[Rec]
    settings: Settings
    by_role: dict[str, list[int]] = field(default_factory=dict)
    scans_after_placement: list[int] = field(default_factory=list)
    placed_ms: dict[str, int] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, records: list[Rec], settings: Settings) -> World:
        world = cls(records, settings)
        roles = [role_of(r["topic"], settings) for r in records]
        lo = len(records) // 10
        last_order = max(r["ts"] for r, role in zip(records, roles, strict=True)
                         if role == "orders")
        hi = max(i for i, r in enumerate(records) if r["ts"] <= last_order - DAY_MS)
        assert hi > lo, "the world is too small to fuzz"
        placed: dict[str, tuple[int, int]] = {}  # order_id -> (index, occurred ms)
        finished: dict[str, int] = {}  # order_id -> first delivered/returned/cancelled
        for i, (rec, role) in enumerate(zip(records, roles, strict=True)):
            if not _is_valid(rec) or role is None:
                continue
            v = rec["value"]
            # an order placed, not sent late: applied at its own time, before later scans
            if (role == "orders" and v["event_type"] == "order_placed"
                    and v["order_id"] not in placed
                    and rec["ts"] - _occurred_ms(v) < 10 * 60_000):
                placed[v["order_id"]] = (i, _occurred_ms(v))
            done = (role == "orders" and v["event_type"] == "order_cancelled") or (
                role == "scans" and v["scan_type"] in ("delivered", "returned"))
            if done:
                finished.setdefault(v["order_id"], _occurred_ms(v))
            if lo <= i < hi:
                world.by_role.setdefault(role, []).append(i)
                world.keys.setdefault(role, []).append(rec["key"])
                if role == "scans" and v["order_id"] in placed:
                    at, when = placed[v["order_id"]], _occurred_ms(v)
                    # the order is placed (an hour or more before) and not yet finished: a
                    # copy dated before the placement meets the order in state, and is refused
                    if at[0] < i and when >= at[1] + H_MS and when < finished.get(
                            v["order_id"], when + 1):
                        world.scans_after_placement.append(i)
        world.placed_ms.update({k: v[1] for k, v in placed.items()})
        for role in ("orders", "inventory", "scans"):
            assert world.by_role.get(role), f"no {role} records to derive hostile ones from"
        return world

    def role(self, i: int) -> str:
        role = role_of(self.records[i]["topic"], self.settings)
        assert role is not None
        return role


# -- building blocks -----------------------------------------------------------------------------
def payload_of(value: dict[str, Any], splice: bytes | None = None) -> bytes:
    """``value`` as JSON; a field holding ``"@@splice@@"`` gets the raw bytes ``splice``."""
    raw = orjson.dumps(value)
    return raw.replace(_SPLICE, splice, 1) if splice is not None else raw


def _record(base: Rec, payload: bytes, expect: Iterable[str], fuzz: str,
            key: Any = ...) -> Rec:
    rec: Rec = {"topic": base["topic"], "key": base["key"] if key is ... else key,
                "ts": base["ts"]}
    try:
        rec["raw"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        rec["raw_b64"] = base64.b64encode(payload).decode("ascii")
    rec["expect"] = sorted(expect)
    rec["fuzz"] = fuzz
    return rec


def _fresh(rec: Rec) -> dict[str, Any]:
    return {**rec["value"], "event_id": FRESH_ID}


def _base(world: World, roles: Iterable[str] = ("orders", "inventory", "scans")
          ) -> st.SearchStrategy[int]:
    """An index of a valid record of one of ``roles`` (the role first: inventory dominates)."""
    return st.sampled_from(sorted(roles)).flatmap(
        lambda role: st.sampled_from(world.by_role[role]))


_short_text = st.text(max_size=12)
_json_scalar: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "bool": st.booleans(),
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)),
    "str": _short_text,
    "list": st.lists(st.integers(-5, 5) | _short_text, max_size=3),
    "object": st.dictionaries(st.text(max_size=5), st.integers(-5, 5), max_size=3),
}


def _wrong_json(cls: str) -> st.SearchStrategy[bytes]:
    """A JSON value (as bytes) of a type that class ``cls`` does not accept."""
    wrong = [t for t in JSON_TYPES if t not in RIGHT_TYPES[cls]]
    plain = st.sampled_from(wrong).flatmap(lambda t: _json_scalar[t]).map(orjson.dumps)
    extra: list[st.SearchStrategy[bytes]] = []
    if cls in ("int", "opt_money", "literal"):
        extra.append(st.sampled_from(NON_FINITE))
    if cls == "int":  # right type, out of the schema's range
        extra.append(st.sampled_from([b"10000001", b"-10000001", b"99999999999999999999999"]))
    if cls == "opt_money":
        extra.append(st.floats(max_value=-0.01, allow_nan=False, allow_infinity=False)
                     .map(orjson.dumps))
    if cls == "literal":  # schema_version: only 1
        extra.append(st.integers().filter(lambda x: x != 1).map(lambda x: str(x).encode()))
    if cls == "lines":
        extra.append(st.sampled_from([
            b'[1]', b'["SKU-1"]', b'[null]', b'[{"sku": 7, "quantity": 1}]',
            b'[{"sku": "SKU-1", "quantity": "2"}]', b'[{"sku": "SKU-1", "quantity": true}]',
            b'[{"sku": "SKU-1", "quantity": 0}]', b'[{"sku": "SKU-1", "quantity": 1.5}]',
            b'[{"sku": "", "quantity": 1}]', b'[{"sku": "SKU-1", "quantity": NaN}]',
            orjson.dumps([{"sku": "S", "quantity": 1}] * 501),
        ]))
    if cls == "attributes":
        extra.append(st.sampled_from([
            b'{"a": null}', b'{"a": [1]}', b'{"a": {"b": 1}}', b'{"a": NaN}',
            b'{"a": Infinity}', orjson.dumps({"k" * 65: 1}), orjson.dumps({"a": "v" * 257}),
            orjson.dumps({f"k{i}": i for i in range(65)}),
        ]))
    if cls == "opt_customer":
        extra.append(st.sampled_from([b'{"name": 5}', b'{"phone": ["010"]}',
                                      b'{"address": {"a": 1}}', b'{"name": true}']))
    return st.one_of(plain, *extra)


def _iso(ms: int, offset_min: int) -> str:
    tz = timezone(timedelta(minutes=offset_min))
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz).isoformat()


_offsets = st.integers(-14 * 60, 14 * 60)


# -- the kinds of damage -------------------------------------------------------------------------
@st.composite
def bad_utf8(draw: st.DrawFn, world: World) -> Drawn:
    """Bytes that are not UTF-8 somewhere in an otherwise valid payload (or all of it)."""
    i = draw(_base(world))
    raw = payload_of(_fresh(world.records[i]))
    bad = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\x80", b"\xbf", b"\xc0\xaf",
                                b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
                                b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
                                b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
                                b"\xe2\x82", b"\xf0\x9f\x98"]))
    if draw(st.integers(0, 9)) == 0:
        out = draw(st.binary(max_size=64)) + bad
    else:
        at = draw(st.integers(0, len(raw)))
        out = raw[:at] + bad + raw[at:]
    try:  # a stray byte can complete a character cut in two: then spoil the end
        out.decode("utf-8")
        out += b"\xff"
    except UnicodeDecodeError:
        pass
    return i, _record(world.records[i], out, ["undecodable"], "bad_utf8")


def _not_object(text: str) -> bool:
    try:
        return not isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return True


@st.composite
def not_json(draw: st.DrawFn, world: World) -> Drawn:
    """Text that is not one JSON object: cut short, garbage, another JSON type, JSON5-isms."""
    i = draw(_base(world))
    value = _fresh(world.records[i])
    text = payload_of(value).decode()
    how = draw(st.sampled_from(["truncated", "garbage", "not_object", "trailing", "bom",
                                "python_repr", "trailing_comma", "empty", "nan_top"]))
    if how == "truncated":
        out = text[:draw(st.integers(0, len(text) - 1))]
    elif how == "garbage":
        out = draw(st.text(min_size=1, max_size=40).filter(_not_object))
    elif how == "not_object":
        out = orjson.dumps(draw(st.one_of(
            _json_scalar["null"], _json_scalar["bool"], _json_scalar["int"], _json_scalar["str"],
            st.lists(st.just(value), min_size=1, max_size=2),
            st.lists(_json_scalar["int"], max_size=4)))).decode()
    elif how == "trailing":
        tail = draw(st.sampled_from(["x", ",", "}", "]", "{}", text, "null", "//c", "\x00"]))
        out = text + tail
    elif how == "bom":
        out = "\ufeff" + text
    elif how == "python_repr":
        out = repr(value)
    elif how == "trailing_comma":
        out = text[:-1] + ",}"
    elif how == "empty":
        out = ""
    else:
        out = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "undefined"]))
    return i, _record(world.records[i], out.encode(), ["invalid_json"], f"not_json:{how}")


@st.composite
def deep_json(draw: st.DrawFn, world: World) -> Drawn:
    """Nesting far beyond any parser's limit (orjson: 1024, pydantic: 200), at the top or
    in a field."""
    i = draw(_base(world))
    rec = world.records[i]
    depth = draw(st.integers(256, 20_000))
    open_, close = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")]))
    core = b"1" if open_ != b"[" else b""
    deep = open_ * depth + core + close * depth
    where = draw(st.sampled_from(["top", "extra_field", *FIELDS[world.role(i)]]))
    raw = deep if where == "top" else payload_of({**_fresh(rec), where: "@@splice@@"}, deep)
    return i, _record(rec, raw, ["invalid_json"], "deep_json")


@st.composite
def wrong_type(draw: st.DrawFn, world: World) -> Drawn:
    """One field of a JSON type the contract does not allow (or a non-finite number)."""
    i = draw(_base(world))
    role = world.role(i)
    name = draw(st.sampled_from(sorted(FIELDS[role])))
    cls = FIELDS[role][name]
    raw = payload_of({**_fresh(world.records[i]), name: "@@splice@@"}, draw(_wrong_json(cls)))
    expect = {"enum": ["unknown_enum"],
              # a number too long to parse is not read as a version at all
              "literal": ["unknown_enum", "schema_violation"]}.get(cls, ["schema_violation"])
    return i, _record(world.records[i], raw, expect, "wrong_type")


_HUGE_CHARS = {"x": 1, "가": 3, "😀": 4, "\\": 2, '"': 2, "\u0001": 6, " ": 1}
MAX_WIRE = 900_000  # stays under Kafka's default 1 MB record limit on the way in


@st.composite
def huge_string(draw: st.DrawFn, world: World) -> Drawn:
    """100 KB+ strings: in a length-limited field, in an unknown field beyond the size
    limit, a flood of control characters (not JSON), or a binary blob."""
    i = draw(_base(world))
    rec = world.records[i]
    role = world.role(i)
    how = draw(st.sampled_from(["field", "field", "extra_field", "control_flood", "blob"]))
    if how == "field":
        names = sorted(n for n, c in FIELDS[role].items() if c in ("str", "opt_str"))
        name = draw(st.sampled_from(names))
        char = draw(st.sampled_from(sorted(_HUGE_CHARS)))
        n = draw(st.integers(100_000, min(200_000, MAX_WIRE // _HUGE_CHARS[char])))
        raw = payload_of({**_fresh(rec), name: char * n})
        return i, _record(rec, raw, ["schema_violation"], "huge_string:field")
    if how == "extra_field":
        n = draw(st.integers(270_000, 800_000))
        raw = payload_of({**_fresh(rec), "notes": "x" * n})
        return i, _record(rec, raw, ["schema_violation"], "huge_string:over_limit")
    if how == "control_flood":  # JSON-escaped, each of these takes 6 bytes in a DLQ record
        n = draw(st.integers(150_000, 250_000))
        char = draw(st.sampled_from([chr(c) for c in range(1, 32)]))
        return i, _record(rec, (char * n).encode(), ["invalid_json"], "huge_string:control")
    n = draw(st.integers(780_000, MAX_WIRE))
    return i, _record(rec, b"\xff\xfe" * (n // 2), ["schema_violation"], "huge_string:blob")


@st.composite
def unknown_enum(draw: st.DrawFn, world: World) -> Drawn:
    """An enum (or schema_version) string or number outside the contract's values."""
    i = draw(_base(world))
    role = world.role(i)
    names = [n for (r, n) in ENUMS if r == role]
    name = draw(st.sampled_from([*names, "schema_version"]))
    if name == "schema_version":
        value: Any = draw(st.one_of(st.integers(-(2**63), 2**63 - 1).filter(lambda x: x != 1),
                                    st.sampled_from(["1", "v1", "1.0", ""])))
    else:
        allowed = ENUMS[(role, name)]
        good = draw(st.sampled_from(allowed))
        value = draw(st.one_of(
            st.just(good.upper()), st.just(f" {good}"), st.just(f"{good}\n"),
            st.just(good.replace("_", "-")), st.just(""),
            st.sampled_from([v for v in ALL_ENUM_VALUES if v not in allowed] or ["x"]),
            st.text(max_size=20),
        ).filter(lambda v: v not in allowed))
    raw = payload_of({**_fresh(world.records[i]), name: value})
    return i, _record(world.records[i], raw, ["unknown_enum"], "unknown_enum")


@st.composite
def missing_field(draw: st.DrawFn, world: World) -> Drawn:
    i = draw(_base(world))
    role = world.role(i)
    gone = draw(st.sets(st.sampled_from(REQUIRED[role]), min_size=1))
    value = {k: v for k, v in _fresh(world.records[i]).items() if k not in gone}
    return i, _record(world.records[i], payload_of(value), ["missing_field"], "missing_field")


_TIME_FIELDS = {"orders": ("occurred_at", "promised_at"), "inventory": ("occurred_at",),
                "scans": ("occurred_at", "carrier_eta")}
_BAD_TIME_TEXT = (
    "", " ", "NaN", "nan", "Infinity", "-Infinity", "inf", "null", "None", "now", "yesterday",
    "1714525200", "1779202800000", "-1", "1e10", "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z", "2026-05-20T24:00:01Z", "2026-05-20T10:61:00Z",
    "2026-05-20T10:00:00+25:00", "2026-05-20", "2026-05-20T10:00:00", "-0001-01-01T00:00:00Z",
    "+2026-05-20T00:00:00Z", "20260520T100000Z", "2026-W21-3T10:00Z", "10:00:00Z",
    "2026/05/20 10:00:00+09:00", "Wed, 20 May 2026 10:00:00 +0900",
    "２０２６-05-20T10:00:00Z", " 2026-05-20T10:00:00Z", "2026-05-20T10:00:00Z ",
    "2026-05-20T10Z", "0000-00-00T00:00:00Z",
)


@st.composite
def bad_time_text(draw: st.DrawFn, world: World) -> Drawn:
    """A timestamp string that is not an ISO-8601 date-time with an offset."""
    i = draw(_base(world))
    name = draw(st.sampled_from(_TIME_FIELDS[world.role(i)]))
    text = draw(st.one_of(st.sampled_from(_BAD_TIME_TEXT),
                          st.text(max_size=24).filter(lambda s: not any(
                              s[k:k + 4].isdigit() for k in range(len(s))))))
    raw = payload_of({**_fresh(world.records[i]), name: text})
    return i, _record(world.records[i], raw, ["schema_violation"], "time:not_iso")


@st.composite
def out_of_range_time(draw: st.DrawFn, world: World) -> Drawn:
    """Any timestamp field outside 2000-2100, extreme offsets at year 1 and 9999 included."""
    i = draw(_base(world))
    name = draw(st.sampled_from(_TIME_FIELDS[world.role(i)]))
    year = draw(st.integers(1, 1998) | st.integers(2101, 9999))
    when = draw(st.one_of(
        st.builds(lambda y, d, s, off: (datetime(y, 1, 1) + timedelta(days=d, seconds=s))
                  .replace(tzinfo=timezone(timedelta(minutes=off))).isoformat(),
                  st.just(year), st.integers(0, 363), st.integers(0, 86_399), _offsets),
        st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
                         "9999-12-31T23:59:59.999999-14:00", "0001-01-01T00:00:00+14:00",
                         "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z",
                         "2100-01-01T00:00:00Z"]),
    ))
    raw = payload_of({**_fresh(world.records[i]), name: when})
    return i, _record(world.records[i], raw, ["impossible_timestamp"], "time:out_of_range")


@st.composite
def far_future(draw: st.DrawFn, world: World) -> Drawn:
    """occurred_at decades after the record was sent (later than 3 days after any send)."""
    i = draw(_base(world))
    ms = draw(st.integers(int(datetime(2060, 1, 1, tzinfo=UTC).timestamp() * 1000),
                          int(datetime(2099, 12, 30, tzinfo=UTC).timestamp() * 1000)))
    raw = payload_of({**_fresh(world.records[i]), "occurred_at": _iso(ms, draw(_offsets))})
    return i, _record(world.records[i], raw, ["impossible_timestamp"], "time:far_future")


@st.composite
def far_past(draw: st.DrawFn, world: World) -> Drawn:
    """occurred_at more than 2 days behind its stream's clock (but after 2000)."""
    i = draw(_base(world))
    rec = world.records[i]
    latest = _occurred_ms(rec["value"]) - 2 * DAY_MS - H_MS
    earliest = int(datetime(2000, 1, 2, tzinfo=UTC).timestamp() * 1000)
    ms = draw(st.integers(latest - 7 * DAY_MS, latest) | st.integers(earliest, latest))
    raw = payload_of({**_fresh(rec), "occurred_at": _iso(ms, draw(_offsets))})
    return i, _record(rec, raw, ["impossible_timestamp"], "time:far_past")


@st.composite
def before_order(draw: st.DrawFn, world: World) -> Drawn:
    """A carrier scan dated more than the tolerated hour before its order was placed."""
    i = draw(st.sampled_from(world.scans_after_placement))
    rec = world.records[i]
    placed = world.placed_ms[rec["value"]["order_id"]]
    ms = placed - draw(st.integers(H_MS + 60_000, 5 * DAY_MS))
    raw = payload_of({**_fresh(rec), "occurred_at": _iso(ms, draw(_offsets))})
    return i, _record(rec, raw, ["impossible_timestamp"], "time:before_order")


def _other_keys(world: World, role: str, key: str) -> st.SearchStrategy[Any]:
    homoglyphs = str.maketrans("OoIl0-", "ОоІӏΟ‐")  # Cyrillic/Greek look-alikes, a hyphen
    return st.one_of(
        st.sampled_from(world.keys[role]),
        st.sampled_from([None, "", " ", key + " ", " " + key, key.lower(), key.upper(),
                         key + "-x", key[:-1], key.translate(homoglyphs), key + "\x00"]),
        st.text(string.ascii_letters + string.digits + ":-_", max_size=30),
    ).filter(lambda k: k != key)


@st.composite
def wrong_key(draw: st.DrawFn, world: World) -> Drawn:
    """A valid payload under a record key that would join it on the wrong partition (now
    and then a 100 KB+ one)."""
    i = draw(_base(world))
    rec = world.records[i]
    if draw(st.integers(0, 19)) == 0:
        key = rec["key"] + "K" * draw(st.integers(100_000, 200_000))
    else:
        key = draw(_other_keys(world, world.role(i), rec["key"]))
    return i, _record(rec, payload_of(_fresh(rec)), ["key_mismatch"], "wrong_key", key=key)


def _recent_original(world: World, i: int) -> st.SearchStrategy[int]:
    """A valid record shortly before ``i`` (in the file and in event time), itself in time:
    a copy of it sent at ``i`` meets its event id in the state."""
    ts = world.records[i]["ts"]
    cands = [j for j in range(max(0, i - 200), i + 1)
             if _is_valid(world.records[j]) and world.role(j) is not None
             and _occurred_ms(world.records[j]["value"]) >= ts - 6 * H_MS]
    return st.sampled_from(cands or [i])


@st.composite
def exact_duplicate(draw: st.DrawFn, world: World) -> Drawn:
    """A byte-identical re-send of a valid record: absorbed, as at-least-once requires."""
    i = draw(_base(world))
    j = draw(_recent_original(world, i))
    orig = world.records[j]
    rec = {"topic": orig["topic"], "key": orig["key"], "ts": world.records[i]["ts"],
           "value": orig["value"], "expect": [], "fuzz": "duplicate:exact"}
    return i, rec


def _conflict(role: str, value: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The same event id with different, valid content."""
    def shift(minutes: int) -> dict[str, Any]:
        when = datetime.fromisoformat(value["occurred_at"]) + timedelta(minutes=minutes)
        return {**value, "occurred_at": when.isoformat()}

    options: list[st.SearchStrategy[dict[str, Any]]] = [
        st.integers(1, 120).flatmap(lambda m: st.sampled_from([m, -m])).map(shift)]
    for (r, name), values in ENUMS.items():
        if r == role:
            options.append(st.sampled_from([v for v in values if v != value[name]])
                           .map(lambda v, name=name: {**value, name: v}))
    if role == "inventory":
        options.append(st.integers(1, 50).map(
            lambda d: {**value, "quantity": value["quantity"] + d}))
    if role == "scans":
        options.append(st.sampled_from(["Seoul hub", "Busan hub", "Unknown"]).filter(
            lambda loc: loc != value.get("location")).map(lambda loc: {**value, "location": loc}))
    return st.one_of(options)


@st.composite
def conflicting_duplicate(draw: st.DrawFn, world: World) -> Drawn:
    """An earlier valid record's event id and key, with other content: not the same event,
    and not a re-send either."""
    i = draw(_base(world))
    j = draw(_recent_original(world, i))
    orig = world.records[j]
    role = world.role(j)
    value = draw(_conflict(role, orig["value"]))
    base = {**orig, "ts": world.records[i]["ts"]}
    return i, _record(base, payload_of(value), ["conflicting_duplicate"], "duplicate:conflict")


# kind -> (strategy maker, weight out of 100): huge strings are few, they weigh megabytes
FUZZ_KINDS: dict[str, tuple[Callable[[World], st.SearchStrategy[Drawn]], int]] = {
    "missing_field": (missing_field, 7),
    "bad_utf8": (bad_utf8, 8),
    "not_json": (not_json, 8),
    "deep_json": (deep_json, 5),
    "wrong_type": (wrong_type, 10),
    "huge_string": (huge_string, 1),
    "unknown_enum": (unknown_enum, 8),
    "time:not_iso": (bad_time_text, 7),
    "time:out_of_range": (out_of_range_time, 7),
    "time:far_future": (far_future, 5),
    "time:far_past": (far_past, 5),
    "time:before_order": (before_order, 6),
    "wrong_key": (wrong_key, 9),
    "duplicate:exact": (exact_duplicate, 6),
    "duplicate:conflict": (conflicting_duplicate, 8),
}
assert sum(w for _, w in FUZZ_KINDS.values()) == 100


def hostile_record(world: World) -> st.SearchStrategy[Drawn]:
    """``(position, record)``: one hostile record of any kind, by the weights above."""
    wheel = [name for name, (_, w) in FUZZ_KINDS.items() for _ in range(w)]
    makers = {name: make(world) for name, (make, _) in FUZZ_KINDS.items()}
    return st.sampled_from(wheel).flatmap(lambda name: makers[name])


def hostile_batches(world: World, size: int) -> st.SearchStrategy[list[Drawn]]:
    return st.lists(hostile_record(world), min_size=size, max_size=size)


def interleave(world: World, drawn: Iterable[Drawn], start_id: int = 0) -> list[Rec]:
    """The world with each hostile record right after its position (in draw order among
    records at the same position); fresh event ids numbered from ``start_id``."""
    after: dict[int, list[Rec]] = {}
    n = start_id
    for pos, rec in drawn:
        if "raw" in rec and FRESH_ID in rec["raw"]:
            rec = {**rec, "raw": rec["raw"].replace(FRESH_ID, f"fuzz-{n}")}
        elif "raw_b64" in rec:
            raw = base64.b64decode(rec["raw_b64"])
            if FRESH_ID.encode() in raw:
                raw = raw.replace(FRESH_ID.encode(), f"fuzz-{n}".encode())
                rec = {**rec, "raw_b64": base64.b64encode(raw).decode("ascii")}
        n += 1
        after.setdefault(pos, []).append(rec)
    out: list[Rec] = []
    for i, rec in enumerate(world.records):
        out.append(rec)
        out.extend(after.get(i, ()))
    return out


def preview(rec: Rec) -> str:
    body = rec.get("raw") or rec.get("raw_b64") or str(rec.get("value"))
    return f"{rec['fuzz']} key={rec['key']!r:.40} payload={body[:160]!r}"


def verdicts(records: list[Rec], letters: dict[Any, list[Any]], ref: Callable[[int], Any]
             ) -> tuple[list[str], Counter[str], int]:
    """Check each hostile record of ``records`` against the dead letters found for it:
    ``letters`` maps a source reference to its dead letters (dicts or DeadLetter models);
    ``ref(k)`` is the reference of ``records[k]``. Returns (problems, reasons of the dead
    letters that were right, exact re-sends); found letters are popped from ``letters``."""
    problems: list[str] = []
    reasons: Counter[str] = Counter()
    exact = 0
    for k, rec in enumerate(records):
        if "fuzz" not in rec:
            continue
        got = [d if isinstance(d, dict) else d.model_dump() for d in letters.pop(ref(k), [])]
        if not rec["expect"]:
            exact += 1
            if got:
                problems.append(f"re-send dead-lettered ({got[0]['reason']}): {preview(rec)}")
        elif len(got) != 1:
            problems.append(f"{len(got)} dead letters, expected 1 of {rec['expect']}: "
                            f"{preview(rec)}")
        elif got[0]["reason"] not in rec["expect"] or not got[0]["error"]:
            problems.append(f"reason {got[0]['reason']!r} ({got[0]['error'][:120]}), "
                            f"expected {rec['expect']}: {preview(rec)}")
        else:
            reasons[got[0]["reason"]] += 1
    return problems, reasons, exact
