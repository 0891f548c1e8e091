"""The Olist importer on the real extract: counts, contract, promise reading, no leakage."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from delaywatch.olist import import_olist
from delaywatch.schemas.events import OrderEvent, ScanEvent

CSV_PATH = (
    Path(__file__).resolve().parents[2]
    / "shared/data/olist_classified/olist_classified_public_dataset.csv"
)
POST_DELIVERY = ("review_", "votes_", "most_voted_")

pytestmark = pytest.mark.skipif(not CSV_PATH.exists(), reason=f"{CSV_PATH} not present")


@pytest.fixture(scope="module")
def imported() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return import_olist(CSV_PATH)


@pytest.fixture(scope="module")
def csv_rows() -> list[dict[str, str]]:
    with CSV_PATH.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_counts(imported: Any) -> None:
    records, truth = imported
    assert len(truth) == 3584 == len({t["order_id"] for t in truth})
    statuses = Counter(t["status"] for t in truth)
    assert statuses == {
        "delivered": 3467,
        "shipped": 48,
        "canceled": 25,
        "invoiced": 24,
        "processing": 20,
    }
    kinds = Counter(r["value"].get("event_type", r["value"].get("scan_type")) for r in records)
    assert kinds == {
        "order_placed": 3584,
        "payment_confirmed": 3584,
        "delivered": 3467,
        "order_cancelled": 25,
    }
    assert len(records) == sum(kinds.values())


def test_every_record_validates(imported: Any) -> None:
    records, _ = imported
    ids = set()
    for rec in records:
        raw = orjson.dumps(rec["value"])
        model = OrderEvent if rec["topic"] == "orders" else ScanEvent
        assert rec["topic"] in ("orders", "carrier-scans")
        event = model.model_validate_json(raw)
        assert rec["key"] == event.order_id
        assert rec["ts"] == int(event.occurred_at.timestamp() * 1000)
        ids.add(event.event_id)
        assert rec["value"]["occurred_at"][-6:] in ("-03:00", "-02:00")  # São Paulo, DST-aware
    assert len(ids) == len(records)
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)


def test_order_placed_fields(imported: Any) -> None:
    records, _ = imported
    placed = next(r["value"] for r in records if r["key"] == "olist-1")
    assert placed["event_type"] == "order_placed"
    assert placed["occurred_at"] == "2017-08-30T11:41:01.000-03:00"
    assert placed["promised_at"] == "2017-09-21T23:59:59.000-03:00"
    assert placed["customer_ref"] == "olist-c-308"
    assert placed["destination_region"] == "MG" and placed["origin_region"] == "BR"
    assert placed["lines"] == [{"sku": "beleza_saude", "quantity": 1}]
    assert placed["order_value"] == 89.99
    assert placed["attributes"] == {
        "category": "beleza_saude",
        "freight_value": 14.38,
        "items_qty": 1,
        "sellers_qty": 1,
        "product_photos_qty": 3,
        "customer_city": "Belo Horizonte",
        "state": "MG",
        "description_length": 492,
    }
    # daylight saving time: a December purchase is at -02:00
    dst = [r for r in records if r["value"]["occurred_at"].startswith("2017-12-")]
    assert dst and all(r["value"]["occurred_at"].endswith("-02:00") for r in dst)


def test_late_count_end_of_day_reading(imported: Any, csv_rows: list[dict[str, str]]) -> None:
    _, truth = imported
    delivered = [t for t in truth if t["delivered_at"] is not None]
    late = sum(1 for t in delivered if t["late"])
    print(f"olist: {late} of {len(delivered)} delivered orders late (promise = 23:59:59 local)")
    assert len(delivered) == 3467
    assert late == 339
    # equals the README's calendar-day count, computed independently from the raw CSV
    by_day = sum(
        1
        for r in csv_rows
        if r["order_delivered_customer_date"]
        and datetime.fromisoformat(r["order_delivered_customer_date"]).date()
        > datetime.fromisoformat(r["order_estimated_delivery_date"]).date()
    )
    assert by_day == 339
    for t in delivered:
        assert t["late"] == (
            datetime.fromisoformat(t["delivered_at"]) > datetime.fromisoformat(t["promised_at"])
        )


def test_truth_outcomes(imported: Any) -> None:
    _, truth = imported
    for t in truth:
        assert t["type"] == "order" and t["incidents"] == []
        assert t["carrier"] == "olist-carrier" and t["warehouse_id"] == "olist"
        if t["status"] == "delivered":
            assert t["outcome_known"] and isinstance(t["late"], bool) and not t["cancelled"]
        elif t["status"] == "canceled":
            assert t["cancelled"] and t["late"] is False and t["outcome_known"]
        else:
            assert t["status"] in ("shipped", "invoiced", "processing")
            assert t["late"] is None and t["outcome_known"] is False
            assert t["delivered_at"] is None and not t["cancelled"]


def test_no_post_delivery_column_leaks(
    imported: Any, csv_rows: list[dict[str, str]], tmp_path: Path
) -> None:
    records, truth = imported
    # 1. no post-delivery value appears in the order's records (text values, which are unique)
    by_order: dict[str, list[bytes]] = {}
    for rec in records:
        by_order.setdefault(rec["key"], []).append(orjson.dumps(rec["value"]))
    checked = 0
    for row in csv_rows:
        blob = b"\n".join(by_order[f"olist-{row['id']}"]).decode()
        for col, val in row.items():
            if col.startswith(POST_DELIVERY) and len(val.strip()) >= 4 and not _is_number(val):
                assert val.strip() not in blob, (row["id"], col)
                checked += 1
    assert checked > 3584
    for rec in records:
        assert not any(k.startswith(POST_DELIVERY) for k in rec["value"].get("attributes", {}))
    # 2. the output does not depend on those columns at all: overwrite them with sentinels
    with CSV_PATH.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or ())
        rows = [
            {k: ("LEAK-SENTINEL" if k.startswith(POST_DELIVERY) else v) for k, v in r.items()}
            for r in reader
        ]
    assert sum(f.startswith(POST_DELIVERY) for f in fields) == 16
    poisoned = tmp_path / "poisoned.csv"
    with poisoned.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    records2, truth2 = import_olist(poisoned)
    assert records2 == records and truth2 == truth
    assert b"LEAK" not in orjson.dumps([records2, truth2])


def test_deterministic(imported: Any) -> None:
    records, truth = imported
    again = import_olist(CSV_PATH)
    assert orjson.dumps(again) == orjson.dumps([records, truth])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
