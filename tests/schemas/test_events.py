"""Input events: what the edge refuses that pydantic alone would let through (found by the
bad input fuzz, ``tests/core/test_fuzz_core.py``)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from delaywatch.core.engine import Pending
from delaywatch.schemas.events import InventoryEvent, OrderEvent, ScanEvent

ORDER = {"event_id": "e1", "occurred_at": "2026-05-20T09:00:00+09:00",
         "event_type": "order_placed", "order_id": "O-1",
         "attributes": {"weight_kg": 1.5, "gift": True, "channel": "app", "n": 2}}


def errors(model: type, payload: bytes) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(payload)
    return [(".".join(map(str, e["loc"])), e["type"]) for e in info.value.errors()]


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_numbers_are_refused(value) -> None:
    raw = orjson.dumps({**ORDER, "order_value": 0})
    assert ("order_value", "finite_number") in errors(
        OrderEvent, raw.replace(b'"order_value":0', b'"order_value":' + value))
    raw = orjson.dumps({**ORDER, "attributes": {"a": 0}})
    assert ("attributes.a.float", "finite_number") in errors(
        OrderEvent, raw.replace(b'"a":0', b'"a":' + value))


def test_a_valid_event_survives_the_way_state_stores_it() -> None:
    # Pending events are pickled as their JSON: a NaN written as null could not be read back
    # after a restart (every recovery of that partition would fail).
    event = OrderEvent.model_validate_json(orjson.dumps({**ORDER, "order_value": 1.5}))
    pending = Pending(1.0, 0, "e1", "orders", event)
    stored = pickle.dumps(pending)
    restored = pickle.loads(stored)
    assert restored.event == event
    # its JSON is made once and kept, also by the restored copy: the bytes do not change
    assert pending.dump == restored.dump == event.model_dump_json()
    assert pickle.dumps(pending) == pickle.dumps(restored) == stored


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00"])
def test_a_timestamp_outside_the_calendar_in_utc_is_a_validation_error(when) -> None:
    raw = orjson.dumps({**ORDER, "occurred_at": when, "promised_at": when})
    assert errors(OrderEvent, raw) == [("occurred_at", "datetime_out_of_range"),
                                       ("promised_at", "datetime_out_of_range")]


@pytest.mark.parametrize("when", ["1714525200", "1714525200000", "-1", "0", "1714525200.5"])
def test_a_string_of_digits_is_not_read_as_epoch_time(when) -> None:
    raw = orjson.dumps({"event_id": "s1", "occurred_at": when, "tracking_number": "T",
                        "order_id": "O-1", "carrier": "cj", "scan_type": "picked_up"})
    assert errors(ScanEvent, raw) == [("occurred_at", "datetime_type")]


def test_python_callers_still_pass_datetimes() -> None:
    event = OrderEvent(event_id="e1", occurred_at=datetime(2026, 5, 20, tzinfo=UTC),
                       event_type="order_placed", order_id="O-1")  # type: ignore[arg-type]
    assert event.occurred_at == datetime(2026, 5, 20, tzinfo=UTC)


@pytest.mark.parametrize("field, value", [
    ("quantity", True), ("quantity", "5"), ("quantity", 5.5), ("schema_version", True),
])
def test_numbers_are_json_numbers(field, value) -> None:
    raw = orjson.dumps({"event_id": "i1", "occurred_at": "2026-05-20T09:00:00Z",
                        "event_type": "stock_snapshot", "warehouse_id": "W1", "sku": "S",
                        "quantity": 5, "source": "wms", field: value})
    [(where, _)] = errors(InventoryEvent, raw)
    assert where == field


def test_order_value_takes_integers() -> None:
    event = OrderEvent.model_validate_json(orjson.dumps({**ORDER, "order_value": 151000}))
    assert event.order_value == 151000.0
