"""Hostile input for tests and drills: every kind of bad record production will send.

``corrupt(records, per_kind, seed)`` returns the records with ``per_kind`` bad ones of each
kind spliced in (after the first tenth, so stream clocks exist), each tagged with the DLQ
``reason`` it must produce (``expect``), plus re-sent duplicates that must be absorbed.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

__all__ = ["BAD_KINDS", "corrupt"]

Rec = dict[str, Any]


def _future(rec: Rec, rnd: random.Random, n: int) -> Rec:
    v = dict(rec["value"], event_id=f"bad-future-{n}", occurred_at="2099-01-01T00:00:00+09:00")
    return {**rec, "value": v, "expect": "impossible_timestamp"}


def _before_order(rec: Rec, rnd: random.Random, n: int) -> Rec:
    # dated days before its order was placed (and before the scan it copies)
    placed = rec.get("_placed") or rec["value"]["occurred_at"]
    when = datetime.fromisoformat(placed) - timedelta(days=rnd.randint(2, 9))
    v = dict(rec["value"], event_id=f"bad-early-{n}", occurred_at=when.isoformat())
    return {**rec, "value": v, "expect": "impossible_timestamp"}


def _bad_utf8(rec: Rec, rnd: random.Random, n: int) -> Rec:
    raw = orjson.dumps(rec["value"])[:40] + bytes([0xFF, 0xFE, rnd.randint(0x80, 0xBF)])
    return {"topic": rec["topic"], "key": rec["key"], "ts": rec["ts"],
            "raw_b64": base64.b64encode(raw).decode(), "expect": "undecodable"}


def _broken_json(rec: Rec, rnd: random.Random, n: int) -> Rec:
    text = orjson.dumps(rec["value"]).decode()
    return {"topic": rec["topic"], "key": rec["key"], "ts": rec["ts"],
            "raw": text[: rnd.randint(1, len(text) - 1)], "expect": "invalid_json"}


def _unknown_enum(rec: Rec, rnd: random.Random, n: int) -> Rec:
    field = "scan_type" if "scan_type" in rec["value"] else "event_type"
    v = dict(rec["value"], event_id=f"bad-enum-{n}", **{field: rnd.choice(
        ["teleported", "lost_in_space", "ORDER_PLACED", ""])})
    return {**rec, "value": v, "expect": "unknown_enum"}


def _missing(rec: Rec, rnd: random.Random, n: int) -> Rec:
    v = {k: x for k, x in rec["value"].items() if k != "occurred_at"}
    v["event_id"] = f"bad-missing-{n}"
    return {**rec, "value": v, "expect": "missing_field"}


def _wrong_type(rec: Rec, rnd: random.Random, n: int) -> Rec:
    v = dict(rec["value"], event_id=f"bad-type-{n}",
             occurred_at=rnd.choice([12345, "yesterday", [1, 2], {"a": 1}]))
    return {**rec, "value": v, "expect": "schema_violation"}


def _wrong_key(rec: Rec, rnd: random.Random, n: int) -> Rec:
    v = dict(rec["value"], event_id=f"bad-key-{n}")
    return {**rec, "key": f"not-{rec['key']}", "value": v, "expect": "key_mismatch"}


BAD_KINDS: dict[str, Callable[[Rec, random.Random, int], Rec]] = {
    "undecodable": _bad_utf8,
    "invalid_json": _broken_json,
    "unknown_enum": _unknown_enum,
    "missing_field": _missing,
    "schema_violation": _wrong_type,
    "future_timestamp": _future,
    "scan_before_order": _before_order,
    "key_mismatch": _wrong_key,
}


def corrupt(records: list[Rec], per_kind: int = 1000, seed: int = 0,
            duplicates: int = 1000) -> list[Rec]:
    rnd = random.Random(seed)
    start = len(records) // 10

    def usable(r: Rec, kind: str) -> bool:
        if not isinstance(r.get("value"), dict) or "malformed" in r:
            return False
        return kind != "scan_before_order" or r["topic"] == "carrier-scans"

    placed = {r["value"]["order_id"]: r["value"]["occurred_at"] for r in records
              if isinstance(r.get("value"), dict) and r["value"].get("event_type") == "order_placed"
              and "malformed" not in r}
    inserts: list[tuple[int, Rec]] = []
    for kind, make in BAD_KINDS.items():
        for n in range(per_kind):
            # derive each bad record from a good one sent at about the same time, so its
            # timestamps are those of the stream around it
            pos = rnd.randint(start, len(records) - 1)
            while not usable(records[pos], kind):
                pos -= 1
            src = records[pos]
            if kind == "scan_before_order":
                src = {**src, "_placed": placed.get(src["value"]["order_id"])}
            bad = make(src, rnd, n)
            bad.pop("_placed", None)
            inserts.append((pos + 1, bad))
    for _ in range(duplicates):
        i = rnd.randint(start, len(records) - 1)
        if "value" in records[i] and "malformed" not in records[i]:
            dup = {**records[i], "expect": "duplicate"}
            inserts.append((rnd.randint(i + 1, min(len(records), i + 2000)), dup))
    out = list(records)
    for pos, rec in sorted(inserts, key=lambda x: x[0], reverse=True):
        out.insert(pos, rec)
    return out
