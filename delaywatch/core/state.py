"""Per-key state of the two tables: one shipment per order, one stock ledger per SKU.

Plain dataclasses with slots: cheap to update, pickled whole into the Faust table once per
commit interval. Raw PII (``customer``) is never copied here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from delaywatch.core.alerts import AlertBook
from delaywatch.core.compact import compact_state
from delaywatch.schemas.alerts import ProcessStage

__all__ = ["ShipmentState", "Stage", "StockHistory", "StockState"]


class Stage(IntEnum):
    """Where an order is; scans only ever move it forward (they may arrive out of order)."""

    ORDERED = 0
    PAID = 1
    WAYBILL = 2
    PICKED_UP = 3
    IN_TRANSIT = 4
    OUT_FOR_DELIVERY = 5
    DELIVERED = 6

    @property
    def label(self) -> str:
        return self.name.lower()


# ShipmentState's fields before the feed hold (issue #8): its pickles in changelogs written by
# that version are read by name
_SHIPMENT_V1 = (
    "order_id", "placed_at", "paid_at", "promised_at", "cancelled_at", "customer_ref",
    "customer_tier", "warehouse_id", "carrier", "service_level", "origin_region",
    "destination_region", "lines", "order_value", "attributes", "waybill_due", "handover_due",
    "stage", "waybill_at", "picked_up_at", "delivered_at", "returned_at", "last_scan_at",
    "last_scan_type", "last_location", "exception_open", "exception_type", "carrier_eta",
    "scans", "shortages", "book", "scorings", "labelled", "eta_learned", "eta_issued", "max_p",
    "risk", "first_seen_at", "scanned_after_cancel_at", "address_changed_after_pickup_at",
    "backwards_scan", "told", "told_at", "model_told_at", "notices",
)


# ... and before the misdelivery check and the received order lines (issue #8)
_SHIPMENT_V2 = (*_SHIPMENT_V1, "stale_hold", "stale_silence")


@compact_state(_SHIPMENT_V1, _SHIPMENT_V2)
@dataclass(slots=True)
class ShipmentState:
    order_id: str
    placed_at: float | None = None
    paid_at: float | None = None
    promised_at: float | None = None
    cancelled_at: float | None = None
    customer_ref: str | None = None
    customer_tier: str | None = None
    warehouse_id: str | None = None
    carrier: str | None = None
    service_level: str | None = None
    origin_region: str | None = None
    destination_region: str | None = None
    lines: list[tuple[str, int]] = field(default_factory=list)
    order_value: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # deadlines fixed at payment
    waybill_due: float | None = None
    handover_due: float | None = None
    # carrier facts
    stage: Stage = Stage.ORDERED
    waybill_at: float | None = None
    picked_up_at: float | None = None
    delivered_at: float | None = None
    returned_at: float | None = None
    last_scan_at: float | None = None
    last_scan_type: str | None = None
    last_location: str | None = None
    exception_open: bool = False
    exception_type: str | None = None
    carrier_eta: float | None = None
    scans: int = 0
    shortages: list[dict[str, Any]] = field(default_factory=list)
    book: AlertBook = field(default_factory=AlertBook)
    # learned models (delaywatch.models.risk): stored feature vectors await the outcome
    scorings: list[Any] = field(default_factory=list)
    labelled: bool = False  # the delay label was learned (at the promise)
    eta_learned: bool = False  # the ETA model learned the delivery time
    # (stage, p90 as epoch s) of each ETA given, checked against the delivery (coverage)
    eta_issued: list[tuple[str, int]] = field(default_factory=list)
    max_p: float = 0.0  # highest p(late) before the promise (what a threshold would alert on)
    risk: tuple[float, float, float] | None = None  # p_late, eta p50, eta p90 (epoch s)
    # event time of the key's first item: its age when the placement itself was never seen
    first_seen_at: float | None = None
    # process integrity (models.rules.IntegrityRules)
    scanned_after_cancel_at: float | None = None
    address_changed_after_pickup_at: float | None = None
    backwards_scan: tuple[str, float] | None = None  # the latest scan dated after delivery
    # what the customer was last told (process stage, ETA epoch s) and when (last 24 h)
    told: tuple[str, float | None] | None = None
    told_at: list[float] = field(default_factory=list)  # rule alerts' customer messages
    model_told_at: list[float] = field(default_factory=list)  # the model's warnings
    notices: int = 0  # ETA/stage-change notices sent (numbers them for deduplication)
    # tracking_stale held while the carrier's feed is silent (models.feeds): (first held at,
    # next look at); the silence that explained it last, (carrier, since, returned)
    stale_hold: tuple[float, float] | None = None
    stale_silence: tuple[str, float, float | None] | None = None
    # a last-mile scan at a place that serves other regions (models.atlas): its evidence,
    # and whether the alert told it (reported once)
    misdelivery: dict[str, Any] | None = None
    misdelivery_told: bool = False
    # A cancel's stock release needs the order's lines. They are taken at *arrival* of the
    # order_placed (warehouse, lines) until it is applied, so whether a cancel finds them
    # depends only on the orders topic's per-partition order, never on the watermark; a
    # cancel that arrives before its order_placed leaves its release owed here
    # (event_id, occurred_at) until the order_placed arrives.
    received_lines: tuple[str | None, list[tuple[str, int]]] | None = None
    release_owed: tuple[str, float] | None = None

    @property
    def finished_at(self) -> float | None:
        return self.delivered_at or self.cancelled_at or self.returned_at

    @property
    def process_stage(self) -> ProcessStage:
        """Where the order is in the shop's process (``schemas.alerts.ProcessStage``)."""
        if self.cancelled_at is not None:
            return ProcessStage.CANCELLED
        if self.returned_at is not None:
            return ProcessStage.RETURNED
        if self.stage == Stage.PAID:
            return ProcessStage.STOCK_CHECK if self.shortages else ProcessStage.PICK_PACK
        return _PROCESS_STAGE[self.stage]

    @property
    def started_at(self) -> float | None:
        return self.placed_at if self.placed_at is not None else self.first_seen_at


_PROCESS_STAGE = {
    Stage.ORDERED: ProcessStage.ORDER,
    Stage.PAID: ProcessStage.PICK_PACK,
    Stage.WAYBILL: ProcessStage.WAYBILL,
    Stage.PICKED_UP: ProcessStage.HANDOVER,
    Stage.IN_TRANSIT: ProcessStage.IN_TRANSIT,
    Stage.OUT_FOR_DELIVERY: ProcessStage.OUT_FOR_DELIVERY,
    Stage.DELIVERED: ProcessStage.DELIVERED,
}


@compact_state()
@dataclass(slots=True)
class StockHistory:
    """What the learned stock models (``delaywatch.models.stock_risk``) remember of one key.

    A fixed handful of numbers whatever the key's traffic; decayed sums and EWMAs in event
    time. ``None`` in :class:`StockState` while the models are off.
    """

    # anomaly features: the key's own scale
    move: float | None = None  # EWMA units per flow event (picks, reservations, adjustments)
    oms_gap: float = 0.0  # OMS count - WMS ledger at the last OMS snapshot
    churn_at: float | None = None
    reserved: float = 0.0  # decayed units reserved / released (reservation churn)
    released: float = 0.0
    anomaly: dict[str, Any] | None = None  # the latest event scored above the threshold
    # stock-out forecast
    demand_since: float | None = None
    demand_at: float | None = None
    demand: float = 0.0  # decayed units of new demand (rate = demand / tau)
    receipt_at: float | None = None
    receipt_every_h: float | None = None  # EWMA hours between receipts


# StockState's fields before the reservation watch (issue #8)
_STOCK_V1 = ("key", "warehouse_id", "sku", "wms_level", "oms_level", "wms_snapshot",
             "oms_snapshot", "mismatch", "demand", "notified", "book", "history")


@compact_state(_STOCK_V1)
@dataclass(slots=True)
class StockState:
    key: str
    warehouse_id: str | None = None
    sku: str | None = None
    wms_level: int | None = None
    oms_level: int | None = None
    wms_snapshot: tuple[int, float] | None = None
    oms_snapshot: tuple[int, float] | None = None
    mismatch: int | None = None  # oms - wms at the last snapshot pair beyond tolerance
    demand: dict[str, int] = field(default_factory=dict)  # open (not yet picked) per order
    notified: list[str] = field(default_factory=list)  # orders told they are short
    book: AlertBook = field(default_factory=AlertBook)
    history: StockHistory | None = None  # learned models only (issue #4)
    # reservation_not_released (models.rules.StockRules): the OMS's open reservations per
    # order (units, reserved at), and the cancels (release lines) whose reservation is still
    # awaited, per order (cancelled at); the orders last reported and the updates sent
    reserved: dict[str, tuple[int, float]] = field(default_factory=dict)
    cancels: dict[str, float] = field(default_factory=dict)
    unreleased_told: list[str] = field(default_factory=list)
    unreleased_notices: int = 0
