"""The edge: every DLQ reason decode() gives, and what passes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from delaywatch.core.decode import MAX_PAYLOAD_BYTES, DecodeError, decode
from delaywatch.schemas.dlq import DLQ_REASONS
from delaywatch.schemas.events import InventoryEvent, OrderEvent, ScanEvent

VALID: dict[str, tuple[dict[str, Any], str]] = {
    "orders": ({
        "event_id": "ev-o-1", "occurred_at": "2024-05-01T10:00:00+09:00",
        "event_type": "order_placed", "order_id": "O-1", "customer_tier": "vip",
        "promised_at": "2024-05-02T22:00:00+09:00", "warehouse_id": "W1",
        "lines": [{"sku": "SKU-1", "quantity": 2}],
        "customer": {"name": "Hong Gildong", "phone": "010-0000-0000"},
    }, "O-1"),
    "inventory": ({
        "event_id": "ev-i-1", "occurred_at": "2024-05-01T01:00:00Z",
        "event_type": "stock_snapshot", "warehouse_id": "W1", "sku": "SKU-1",
        "quantity": 40, "source": "wms",
    }, "W1:SKU-1"),
    "scans": ({
        "event_id": "ev-s-1", "occurred_at": "2024-05-01T12:00:00+09:00",
        "tracking_number": "T-1", "order_id": "O-1", "carrier": "cj",
        "scan_type": "picked_up", "location": "Icheon hub",
    }, "O-1"),
}
MODELS = {"orders": OrderEvent, "inventory": InventoryEvent, "scans": ScanEvent}

Payload = Callable[..., bytes]


@pytest.fixture
def payload() -> Payload:
    """A valid record of ``role`` as bytes, with fields replaced (``None`` drops one)."""

    def make(role: str = "orders", **changes: Any) -> bytes:
        obj = dict(VALID[role][0])
        for name, value in changes.items():
            if value is None:
                obj.pop(name, None)
            else:
                obj[name] = value
        return orjson.dumps(obj)

    return make


def rejected(role: str, raw: bytes | None, key: str | bytes | None = "O-1") -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(role, raw, key)
    err = info.value
    assert err.reason in DLQ_REASONS
    assert err.message and str(err) == err.message
    return err


# -- what passes -------------------------------------------------------------------------------
@pytest.mark.parametrize("role", VALID)
def test_valid_event_of_each_topic_passes(role, payload) -> None:
    event = decode(role, payload(role), VALID[role][1])
    assert isinstance(event, MODELS[role])
    assert event.occurred_at.tzinfo == UTC


def test_record_key_may_come_as_bytes(payload) -> None:
    assert decode("orders", payload(), b"O-1").order_id == "O-1"


def test_unknown_extra_fields_are_ignored(payload) -> None:
    event = decode("scans", payload("scans", shiny_new_field={"a": 1}, eta_model="v9"),
                   "O-1")
    assert "shiny_new_field" not in event.model_dump()
    assert not hasattr(event, "eta_model")


def test_year_2099_is_fine(payload) -> None:
    event = decode("orders", payload(occurred_at="2099-12-31T23:59:59Z"), "O-1")
    assert event.occurred_at == datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)


# -- every DLQ reason --------------------------------------------------------------------------
def test_bad_utf8_is_undecodable() -> None:
    err = rejected("orders", b"\xff\xfe{}")
    assert err.reason == "undecodable"
    assert "not UTF-8" in err.message


def test_bad_utf8_inside_a_json_string_is_undecodable(payload) -> None:
    raw = payload().replace(b'"ev-o-1"', b'"ev-\xff"')
    assert rejected("orders", raw).reason == "undecodable"


@pytest.mark.parametrize("raw, words", [
    (b'{"event_id": "e1", ', "invalid JSON"),
    (b"not json at all", "invalid JSON"),
    (b'[{"event_id": "e1"}]', "expected a JSON object, got list"),
    (b"null", "expected a JSON object"),
    (b"", "empty payload"),
    (None, "empty payload"),
], ids=["truncated", "text", "array", "null", "empty", "tombstone"])
def test_not_a_json_object_is_invalid_json(raw, words) -> None:
    err = rejected("orders", raw)
    assert err.reason == "invalid_json"
    assert words in err.message


@pytest.mark.parametrize("role, field", [
    ("orders", "order_id"), ("orders", "event_id"), ("orders", "occurred_at"),
    ("inventory", "source"), ("scans", "tracking_number"),
])
def test_missing_field(role, field, payload) -> None:
    err = rejected(role, payload(role, **{field: None}), VALID[role][1])
    assert err.reason == "missing_field"
    assert repr(field) in err.message


@pytest.mark.parametrize("role, field, value", [
    ("scans", "scan_type", "teleported"),
    ("orders", "event_type", "order_exploded"),
    ("inventory", "source", "erp"),
])
def test_unknown_enum(role, field, value, payload) -> None:
    err = rejected(role, payload(role, **{field: value}), VALID[role][1])
    assert err.reason == "unknown_enum"
    assert field in err.message and repr(value) in err.message
    assert err.event_id == VALID[role][0]["event_id"]


@pytest.mark.parametrize("changes, where", [
    ({"order_value": "a lot"}, "order_value"),
    ({"lines": [{"sku": "SKU-1", "quantity": -1}]}, "lines.0.quantity"),
    ({"lines": [{"sku": "SKU-1", "quantity": 2.5}]}, "lines.0.quantity"),
    ({"order_id": ""}, "order_id"),
    ({"order_id": "O" * 129}, "order_id"),
    ({"occurred_at": 1714525200}, "occurred_at"),
], ids=["wrong_type", "negative_quantity", "fractional_quantity", "empty_id", "long_id",
        "epoch_number"])
def test_schema_violation(changes, where, payload) -> None:
    key = changes.get("order_id", "O-1")
    err = rejected("orders", payload(**changes), key)
    assert err.reason == "schema_violation"
    assert err.message.startswith(f"{where}: ")


def test_oversized_payload_is_a_schema_violation(payload) -> None:
    raw = payload(padding="x" * MAX_PAYLOAD_BYTES)
    err = rejected("orders", raw)
    assert err.reason == "schema_violation"
    assert f"{len(raw)} bytes exceeds the limit" in err.message


def test_naive_timestamp_is_a_schema_violation_with_a_readable_message(payload) -> None:
    err = rejected("orders", payload(occurred_at="2024-05-01T10:00:00"))
    assert err.reason == "schema_violation"
    assert err.message == "occurred_at: Input should have timezone info"
    assert err.event_id == "ev-o-1"


@pytest.mark.parametrize("when", ["2100-01-01T00:00:00Z", "1999-12-31T23:59:59Z",
                                  "1970-01-01T00:00:00Z"])
def test_out_of_range_timestamp_is_impossible(when, payload) -> None:
    err = rejected("orders", payload(occurred_at=when))
    assert err.reason == "impossible_timestamp"
    assert "out of range" in err.message
    assert err.event_id == "ev-o-1"


@pytest.mark.parametrize("role, key", [
    ("orders", "O-2"), ("orders", None), ("orders", b"\xff"), ("scans", "W1:SKU-1"),
    ("inventory", "W1"), ("inventory", "O-1"),
])
def test_key_mismatch(role, key, payload) -> None:
    err = rejected(role, payload(role), key)
    assert err.reason == "key_mismatch"
    assert repr(VALID[role][1]) in err.message
    assert err.event_id == VALID[role][0]["event_id"]


# -- found by the bad input fuzz (tests/core/test_fuzz_core.py) --------------------------------
@pytest.mark.parametrize("role, field", [
    ("orders", "occurred_at"), ("orders", "promised_at"), ("scans", "carrier_eta"),
])
@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00"])
def test_timestamp_that_leaves_the_calendar_in_utc_is_impossible_not_a_crash(
        role, field, when, payload) -> None:
    # was: OverflowError out of decode (a crashed replay, a processing_error live)
    err = rejected(role, payload(role, **{field: when}), VALID[role][1])
    assert err.reason == "impossible_timestamp"
    assert err.message.startswith(f"{field}: ") and when in err.message


@pytest.mark.parametrize("role, field, when", [
    ("orders", "promised_at", "1970-01-01T00:00:00Z"),  # was: promise_broken at once
    ("orders", "promised_at", "0001-01-02T00:00:00Z"),  # was: ValueError in the core
    ("scans", "carrier_eta", "9999-12-31T00:00:00Z"),  # was: promise_at_risk forever
    ("scans", "carrier_eta", "2100-01-01T00:00:00Z"),
])
def test_every_timestamp_of_an_event_is_range_checked(role, field, when, payload) -> None:
    err = rejected(role, payload(role, **{field: when}), VALID[role][1])
    assert err.reason == "impossible_timestamp"
    assert err.message.startswith(f"{field} ") and "out of range" in err.message


@pytest.mark.parametrize("role, changes, where", [
    ("inventory", {"quantity": True}, "quantity"),
    ("inventory", {"quantity": "40"}, "quantity"),
    ("orders", {"lines": [{"sku": "SKU-1", "quantity": True}]}, "lines.0.quantity"),
    ("orders", {"lines": [{"sku": "SKU-1", "quantity": "2"}]}, "lines.0.quantity"),
    ("orders", {"order_value": True}, "order_value"),
    ("orders", {"order_value": "1.5"}, "order_value"),
    ("orders", {"occurred_at": "1714525200"}, "occurred_at"),
    ("scans", {"carrier_eta": "1714525200000"}, "carrier_eta"),
], ids=["bool_quantity", "text_quantity", "bool_line_quantity", "text_line_quantity",
        "bool_value", "text_value", "epoch_seconds_text", "epoch_ms_text"])
def test_wrong_json_types_are_not_coerced(role, changes, where, payload) -> None:
    err = rejected(role, payload(role, **changes), VALID[role][1])
    assert err.reason == "schema_violation"
    assert err.message.startswith(f"{where}: ")


@pytest.mark.parametrize("raw", [
    b'"order_value": NaN', b'"order_value": Infinity', b'"attributes": {"a": NaN}',
    b'"attributes": {"a": -Infinity}', b'"attributes": {"a": 1e400}',
])
def test_non_finite_numbers_are_a_schema_violation(raw, payload) -> None:
    err = rejected("orders", payload()[:-1] + b"," + raw + b"}")
    assert err.reason == "schema_violation"


def test_schema_version_true_is_not_1(payload) -> None:
    err = rejected("orders", payload(schema_version=True))
    assert err.reason == "unknown_enum"
    assert err.message.startswith("schema_version: ")
