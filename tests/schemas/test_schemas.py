"""Wire contract v1: checked-in JSON Schemas, UTC timestamps, no PII out, stable alert ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from delaywatch.schemas import (
    ALERT_SCHEMA_VERSION,
    Alert,
    DeadLetter,
    InventoryEvent,
    OrderEvent,
    ScanEvent,
    SourceRef,
    StockNotice,
    alert_id_for,
)
from delaywatch.schemas.export import SCHEMA_FILES, json_schemas

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"
SEOUL = timezone(timedelta(hours=9))
PII = ("Hong Gildong", "010-1234-5678", "Teheran-ro 1")

ORDER = {
    "event_id": "ev-1", "occurred_at": "2024-05-06T09:55:00+09:00",
    "event_type": "order_placed", "order_id": "O-1", "promised_at": "2024-05-07T22:00:00+09:00",
    "customer_ref": "C-1", "lines": [{"sku": "SKU-1", "quantity": 2}],
    "customer": {"name": PII[0], "phone": PII[1], "address": PII[2]},
}
SCAN = {
    "event_id": "ev-2", "occurred_at": "2024-05-06T17:00:00-04:00", "tracking_number": "T-1",
    "order_id": "O-1", "carrier": "cj", "scan_type": "picked_up",
    "carrier_eta": "2024-05-07T15:00:00+09:00",
}
INVENTORY = {
    "event_id": "ev-3", "occurred_at": "2024-05-06T08:00:00+05:30", "event_type": "stock_snapshot",
    "warehouse_id": "W1", "sku": "SKU-1", "quantity": 5, "source": "wms",
}


def make_alert(**changes) -> Alert:
    fields = dict(alert_id="al-x", status="open", category="delay", kind="waybill_missing",
                  key="O-1", episode=1, severity="medium", reason_codes=["r"], evidence={},
                  detected_at=datetime(2024, 5, 6, 19, tzinfo=SEOUL))
    return Alert(**{**fields, **changes})


# -- JSON Schema files -------------------------------------------------------------------------
def test_every_published_message_has_a_checked_in_schema() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(SCHEMA_FILES)


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_checked_in_json_schema_matches_the_models(name) -> None:
    on_disk = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    assert on_disk == json_schemas()[name], (
        f"schemas/json/{name} is stale: run `delaywatch schemas --out schemas/json`")


def test_schema_ids_are_unique_urls() -> None:
    ids = [s["$id"] for s in json_schemas().values()]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("https://") for i in ids)


# -- timestamps --------------------------------------------------------------------------------
@pytest.mark.parametrize("model, payload, fields", [
    (OrderEvent, ORDER, ("occurred_at", "promised_at")),
    (ScanEvent, SCAN, ("occurred_at", "carrier_eta")),
    (InventoryEvent, INVENTORY, ("occurred_at",)),
])
def test_event_timestamps_are_normalised_to_utc(model, payload, fields) -> None:
    event = model.model_validate_json(orjson.dumps(payload))
    for name in fields:
        value = getattr(event, name)
        assert value.tzinfo == UTC and value.utcoffset() == timedelta(0)
        assert value == datetime.fromisoformat(payload[name])  # same instant
    dumped = orjson.loads(event.model_dump_json())
    assert all(dumped[name].endswith("Z") or dumped[name].endswith("+00:00") for name in fields)


def test_output_timestamps_are_normalised_to_utc() -> None:
    seoul = datetime(2024, 5, 6, 19, tzinfo=SEOUL)
    alert = make_alert(detected_at=seoul, promised_at=seoul + timedelta(days=1))
    assert alert.detected_at.tzinfo == UTC and alert.detected_at == seoul
    assert alert.promised_at is not None and alert.promised_at.tzinfo == UTC
    dead = DeadLetter(reason="invalid_json", error="x", stage="decode",
                      source=SourceRef(topic="orders"), payload="{", first_failure_at=seoul)
    assert dead.first_failure_at is not None and dead.first_failure_at.tzinfo == UTC
    notice = StockNotice.model_validate_json(orjson.dumps({
        "notice_id": "n", "order_id": "O-1", "warehouse_id": "W1", "sku": "S", "shortfall": 1,
        "occurred_at": seoul.isoformat()}))
    assert notice.occurred_at.tzinfo == UTC


@pytest.mark.parametrize("model, payload", [(OrderEvent, ORDER), (ScanEvent, SCAN),
                                            (InventoryEvent, INVENTORY)])
def test_timestamp_without_offset_is_refused(model, payload) -> None:
    with pytest.raises(ValidationError, match="timezone"):
        model.model_validate_json(orjson.dumps({**payload, "occurred_at": "2024-05-06T10:00:00"}))


def test_naive_datetime_is_refused_in_outputs_too() -> None:
    with pytest.raises(ValidationError):
        make_alert(detected_at=datetime(2024, 5, 6, 19))


# -- PII ---------------------------------------------------------------------------------------
def test_order_event_keeps_customer_in_memory_but_never_dumps_it() -> None:
    event = OrderEvent.model_validate_json(orjson.dumps(ORDER))
    assert event.customer is not None and event.customer.name == PII[0]
    for dumped in (event.model_dump(), event.model_dump(mode="json"),
                   orjson.loads(event.model_dump_json())):
        assert "customer" not in dumped
    text = event.model_dump_json() + repr(event) + str(event.model_dump())
    assert not any(p in text for p in PII)
    assert "customer_ref" in event.model_dump()  # the pseudonymous reference does travel


# -- alerts ------------------------------------------------------------------------------------
def test_alert_schema_version_is_1() -> None:
    assert ALERT_SCHEMA_VERSION == 1
    alert = make_alert()
    assert alert.schema_version == 1
    assert orjson.loads(alert.model_dump_json())["schema_version"] == 1
    with pytest.raises(ValidationError):
        make_alert(schema_version=2)
    assert json_schemas()["alerts.v1.json"]["properties"]["schema_version"]["const"] == 1


def test_alert_id_for_is_a_stable_pin() -> None:
    # Computed once and pinned: changing it re-sends every alert consumers already delivered.
    assert alert_id_for("O-1", "waybill_missing", 1) == "al-bdb5ba6218f8265d4eba"
    assert alert_id_for("O-1", "waybill_missing", 1) == alert_id_for("O-1", "waybill_missing", 1)


@pytest.mark.parametrize("other", [("O-2", "waybill_missing", 1), ("O-1", "tracking_stale", 1),
                                   ("O-1", "waybill_missing", 2)])
def test_alert_id_differs_by_key_kind_and_episode(other) -> None:
    assert alert_id_for(*other) != alert_id_for("O-1", "waybill_missing", 1)


# -- acknowledgements and audience (issue #8) ----------------------------------------------------
def test_ack_is_utc_and_needs_an_offset_and_an_alert_id() -> None:
    from delaywatch.schemas import Ack

    ack = Ack.model_validate_json(b'{"alert_id": "al-1", "by": "ops-kim", '
                                  b'"at": "2024-05-06T19:00:00+09:00", "extra": 1}')
    assert ack.at == datetime(2024, 5, 6, 10, tzinfo=UTC) and ack.note is None
    for bad in ({"alert_id": "al-1", "by": "k", "at": "2024-05-06T19:00:00"},
                {"alert_id": "", "by": "k", "at": "2024-05-06T19:00:00Z"},
                {"by": "k", "at": "2024-05-06T19:00:00Z"}):
        with pytest.raises(ValidationError):
            Ack.model_validate_json(orjson.dumps(bad))


def test_alerts_without_audience_still_validate_and_audience_is_checked() -> None:
    assert make_alert().audience is None  # records written before the field existed
    assert make_alert(audience="cs").audience == "cs"
    with pytest.raises(ValidationError):
        make_alert(audience="marketing")
