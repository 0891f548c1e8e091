"""Import the real Olist "classified" orders extract as wire-contract-v1 records plus truth.

``import_olist(csv_path)`` reads ``olist_classified_public_dataset.csv`` (3,584 orders placed
in Brazil between 2017-02 and 2018-04, see ``shared/data/olist_classified/README.md``) and
returns ``(records, truth)`` in the same shape as :func:`delaywatch.simulate.simulate`:

* ``records`` - ``{"topic", "key", "ts", "value"}`` sorted by ``ts`` (stable). There is no
  transport in this data, so ``ts`` is the event's own time in epoch milliseconds. Per order
  (``order_id = f"olist-{id}"``, ``key = order_id``):

  - ``orders`` / ``order_placed`` at ``order_purchase_timestamp`` with the promise, basket and
    destination;
  - ``orders`` / ``payment_confirmed`` at ``order_aproved_at`` (when present; it always is);
  - ``orders`` / ``order_cancelled`` for status ``canceled``. The extract has no cancellation
    time, so it is placed at the approval time (purchase + 1 h without approval) - an
    assumption, not a fact of the data;
  - ``carrier-scans`` / ``delivered`` at ``order_delivered_customer_date`` (when present),
    carrier ``olist-carrier``, tracking number ``olist-{id}``. It is the only scan: the extract
    has no intermediate carrier events.

* ``truth`` - one ``{"type": "order", ...}`` row per order (no meta row), in CSV order.

Time zone. All timestamps in the extract are naive São Paulo local times. They are localised
with ``zoneinfo("America/Sao_Paulo")``, so they get ``-03:00`` or, during Brazilian daylight
saving time (until Feb 2019; here 2017-10-15 .. 2018-02-17), ``-02:00``. A wall time inside
the autumn repeated hour is read as its first occurrence (``fold=0``); one inside the spring
gap keeps the pre-transition offset. No timestamp of the extract falls on either. Wire times
carry millisecond precision (sub-millisecond digits are truncated); ``ts`` and all comparisons
use those same millisecond values.

Promise reading. ``order_estimated_delivery_date`` is a calendar date (always ``00:00:00`` in
the file). It is read as the END of that local day: ``promised_at`` = 23:59:59 local on that
date (precisely: the next local midnight minus one second, so a 23- or 25-hour DST day is
handled). An order is late when ``delivered_at > promised_at``. With this reading **339 of
the 3,467 delivered orders are late** - exactly the README's "delivered on a later calendar
day" count (380 if the date were read as midnight at its start).

Outcome. ``late`` is ``True``/``False`` for delivered orders; cancelled orders are
``late=False`` with ``cancelled=True``; orders still ``shipped``/``invoiced``/``processing``
have no delivery, so their outcome is unknown: ``late=None`` and ``outcome_known=False``.

Leakage. Only facts known when the order was placed go into ``order_placed``. The
``review_*``, ``votes_*`` and ``most_voted_*`` columns are written after delivery and are never
read (``_POST_DELIVERY_PREFIXES``); they may serve as labels elsewhere, never as features.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "CARRIER",
    "DELIVERED_STATUS",
    "SAO_PAULO",
    "UNKNOWN_OUTCOME_STATUSES",
    "WAREHOUSE",
    "import_olist",
]

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
WAREHOUSE = "olist"
CARRIER = "olist-carrier"
SERVICE_LEVEL = "standard"
ORIGIN_REGION = "BR"
DELIVERED_STATUS = "delivered"
CANCELLED_STATUS = "canceled"
UNKNOWN_OUTCOME_STATUSES = frozenset({"shipped", "invoiced", "processing"})
CANCEL_FALLBACK = timedelta(hours=1)

# Columns written after delivery: never read by this module.
_POST_DELIVERY_PREFIXES = ("review_", "votes_", "most_voted_")
# The only columns read (all known at order placement, or the outcome for truth).
_USED_COLUMNS = (
    "id",
    "order_status",
    "order_products_value",
    "order_freight_value",
    "order_items_qty",
    "order_sellers_qty",
    "order_purchase_timestamp",
    "order_aproved_at",
    "order_estimated_delivery_date",
    "order_delivered_customer_date",
    "customer_city",
    "customer_state",
    "customer_zip_code_prefix",
    "product_category_name",
    "product_description_lenght",
    "product_photos_qty",
)
assert not any(c.startswith(_POST_DELIVERY_PREFIXES) for c in _USED_COLUMNS)


def _local(text: str) -> datetime:
    """Naive São Paulo wall time from the CSV -> aware datetime, truncated to milliseconds."""
    naive = datetime.fromisoformat(text.strip())
    naive = naive.replace(microsecond=naive.microsecond // 1000 * 1000)
    return naive.replace(tzinfo=SAO_PAULO)  # fold=0: first occurrence of a repeated hour


def _end_of_local_day(text: str) -> datetime:
    """23:59:59 local on the date in ``text``: the next local midnight minus one second."""
    day = datetime.fromisoformat(text.strip()).date()
    # a non-existent midnight (DST start) keeps the pre-transition offset: the real end of day
    next_midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=SAO_PAULO)
    # subtract in UTC: aware +/- timedelta is wall-clock arithmetic in Python
    return (next_midnight.astimezone(UTC) - timedelta(seconds=1)).astimezone(SAO_PAULO)


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _iso(value: datetime) -> str:
    """ISO-8601 with milliseconds and the São Paulo offset of that instant."""
    return value.astimezone(SAO_PAULO).isoformat(timespec="milliseconds")


def _int(text: str) -> int:
    return int(float(text)) if text.strip() else 0


def _order_rows(
    row: dict[str, str],
) -> tuple[list[tuple[int, str, str, dict[str, Any]]], dict[str, Any]]:
    """Events ``(ts, topic, key, value)`` and the truth row of one CSV row."""
    oid_raw = row["id"].strip()
    order_id = f"olist-{oid_raw}"
    status = row["order_status"].strip()
    purchase = _local(row["order_purchase_timestamp"])
    promised = _end_of_local_day(row["order_estimated_delivery_date"])
    approved = _local(row["order_aproved_at"]) if row["order_aproved_at"].strip() else None
    delivered_raw = row["order_delivered_customer_date"].strip()
    delivered = _local(delivered_raw) if delivered_raw else None
    category = row["product_category_name"].strip()
    state = row["customer_state"].strip()
    items_qty = _int(row["order_items_qty"])

    events: list[tuple[int, str, str, dict[str, Any]]] = []

    def order_event(kind: str, at: datetime, extra: dict[str, Any] | None = None) -> None:
        value: dict[str, Any] = {
            "schema_version": 1,
            "event_id": f"{order_id}-{kind}",
            "event_type": kind,
            "occurred_at": _iso(at),
            "order_id": order_id,
        }
        if extra:
            value.update(extra)
        events.append((_ms(at), "orders", order_id, value))

    order_event(
        "order_placed",
        purchase,
        {
            "promised_at": _iso(promised),
            "customer_ref": f"olist-c-{row['customer_zip_code_prefix'].strip()}",
            "warehouse_id": WAREHOUSE,
            "carrier": CARRIER,
            "service_level": SERVICE_LEVEL,
            "origin_region": ORIGIN_REGION,
            "destination_region": state,
            "lines": [{"sku": category or "unknown", "quantity": items_qty}],
            "order_value": float(row["order_products_value"]),
            "attributes": {
                "category": category,
                "freight_value": float(row["order_freight_value"]),
                "items_qty": items_qty,
                "sellers_qty": _int(row["order_sellers_qty"]),
                "product_photos_qty": _int(row["product_photos_qty"]),
                "customer_city": row["customer_city"].strip(),
                "state": state,
                "description_length": _int(row["product_description_lenght"]),
            },
        },
    )
    if approved is not None:
        order_event("payment_confirmed", approved)
    cancelled = status == CANCELLED_STATUS
    if cancelled:
        cancel_at = approved if approved is not None else purchase + CANCEL_FALLBACK
        order_event("order_cancelled", cancel_at)
    if delivered is not None:
        scan = {
            "schema_version": 1,
            "event_id": f"{order_id}-delivered",
            "occurred_at": _iso(delivered),
            "tracking_number": order_id,
            "order_id": order_id,
            "carrier": CARRIER,
            "scan_type": "delivered",
        }
        events.append((_ms(delivered), "carrier-scans", order_id, scan))

    if delivered is not None:
        late: bool | None = _ms(delivered) > _ms(promised)
        known = True
    elif cancelled:
        late, known = False, True
    else:  # shipped / invoiced / processing (or anything else undelivered): outcome unknown
        late, known = None, False
    truth: dict[str, Any] = {
        "type": "order",
        "order_id": order_id,
        "purchase_at": _iso(purchase),
        "promised_at": _iso(promised),
        "delivered_at": _iso(delivered) if delivered is not None else None,
        "cancelled": cancelled,
        "late": late,
        "outcome_known": known,
        "status": status,
        "carrier": CARRIER,
        "warehouse_id": WAREHOUSE,
        "incidents": [],
    }
    return events, truth


def import_olist(csv_path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return ``(records, truth)`` for the Olist extract at ``csv_path``; deterministic.

    ``records`` are sorted by ``ts`` (event time, epoch ms; stable, so an order's events at
    the same instant keep placed -> paid -> cancelled order); ``truth`` holds one order row
    per CSV row, in file order. Raises ``ValueError`` on a missing column or a duplicate id.
    """
    events: list[tuple[int, str, str, dict[str, Any]]] = []
    truth: list[dict[str, Any]] = []
    seen: set[str] = set()
    with Path(csv_path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _USED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{csv_path}: missing columns {missing}")
        for row in reader:
            used = {c: row[c] or "" for c in _USED_COLUMNS}  # nothing post-delivery passes
            if used["id"].strip() in seen:
                raise ValueError(f"{csv_path}: duplicate order id {used['id']!r}")
            seen.add(used["id"].strip())
            order_events, order_truth = _order_rows(used)
            events.extend(order_events)
            truth.append(order_truth)
    events.sort(key=lambda e: e[0])
    records = [{"topic": t, "key": k, "ts": ts, "value": v} for ts, t, k, v in events]
    return records, truth
