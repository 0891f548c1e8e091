"""Rule detectors: thresholds from ``config/thresholds.yaml``, decisions in event time.

Each detector answers two questions about one key's state:
``deadlines(state)`` — at which event times could my condition change without a new event?
``findings(state, at)`` — does my condition hold at event time ``at``?
The engine calls ``findings`` after every applied event and at every deadline; the
:class:`~delaywatch.core.alerts.AlertBook` turns the answers into open/updated/resolved.
The learned detectors (issue #4) implement the same two methods.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from delaywatch.config.thresholds import LaneThresholds, Thresholds
from delaywatch.core.alerts import Finding
from delaywatch.core.state import ShipmentState, Stage, StockState
from delaywatch.models.feeds import CarrierFeeds, Silence
from delaywatch.schemas.alerts import Severity

__all__ = [
    "DELAY_KINDS",
    "INTEGRITY_KINDS",
    "STOCK_KINDS",
    "DelayRules",
    "IntegrityRules",
    "ShipmentDetector",
    "StockRules",
    "dispatch_deadlines",
]

DELAY_KINDS = (
    "waybill_missing",
    "handover_missed",
    "tracking_stale",
    "carrier_exception",
    "promise_at_risk",
    "promise_broken",
    "stock_shortage",
)
STOCK_KINDS = ("oversell", "negative_stock", "stock_mismatch", "reservation_not_released")
# process integrity of one order: facts that contradict each other across OMS and TMS
INTEGRITY_KINDS = ("scan_after_cancel", "address_after_pickup", "status_backwards",
                   "misdelivery_suspected")
H = 3600.0
RESERVED_LIMIT = 400  # open OMS reservations kept per warehouse:sku
UNRELEASED_LISTED = 50  # orders listed in one reservation_not_released alert

_UP = {Severity.LOW: Severity.MEDIUM, Severity.MEDIUM: Severity.HIGH,
       Severity.HIGH: Severity.CRITICAL, Severity.CRITICAL: Severity.CRITICAL}


def _sev(base: Severity, tier: str | None) -> Severity:
    # VIP customers first: every delay alert about them is one level more urgent.
    return _UP[base] if tier == "vip" else base


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, ZoneInfo("UTC")).isoformat() if ts is not None else None


def dispatch_deadlines(paid_at: float, th: LaneThresholds, tz: ZoneInfo) -> tuple[float, float]:
    """(waybill due, handover due): payment before the cut-off ships the same local day."""
    local = datetime.fromtimestamp(paid_at, tz)
    day = local.date() if local.time() < th.cutoff else local.date() + timedelta(days=1)
    cutoff = datetime.combine(day, th.cutoff, tzinfo=tz).timestamp()
    return cutoff + th.waybill_grace_h * H, cutoff + th.handover_grace_h * H


def _remaining_key(stage: Stage) -> str | None:
    if stage in (Stage.PAID,):
        return "paid"
    if stage == Stage.WAYBILL:
        return "waybill"
    if stage in (Stage.PICKED_UP, Stage.IN_TRANSIT):
        return "picked_up"
    if stage == Stage.OUT_FOR_DELIVERY:
        return "out_for_delivery"
    return None


class ShipmentDetector(Protocol):
    kinds: tuple[str, ...]

    def deadlines(self, s: ShipmentState) -> list[float]: ...

    def findings(self, s: ShipmentState, at: float, pulse: str | None = None) -> list[Finding]: ...


class DelayRules:
    """The rule detectors over one order's shipment state."""

    kinds: tuple[str, ...] = DELAY_KINDS

    def __init__(self, thresholds: Thresholds, feeds: CarrierFeeds | None = None) -> None:
        self.thresholds = thresholds
        self.tz = ZoneInfo(thresholds.timezone)
        self.feeds = feeds  # carrier feeds of this partition: stale alerts they explain wait

    def lane(self, s: ShipmentState) -> LaneThresholds:
        return self.thresholds.for_lane(s.carrier, s.service_level)

    def risk_due(self, s: ShipmentState) -> float | None:
        key = _remaining_key(s.stage)
        if s.promised_at is None or key is None:
            return None
        remaining = self.lane(s).remaining_h.get(key)
        return None if remaining is None else s.promised_at - remaining * H

    def deadlines(self, s: ShipmentState) -> list[float]:
        if s.cancelled_at is not None or s.delivered_at is not None or s.returned_at is not None:
            return []
        out: list[float] = []
        if s.stage < Stage.WAYBILL and s.waybill_due is not None:
            out.append(s.waybill_due)
        if s.stage < Stage.PICKED_UP and s.handover_due is not None:
            out.append(s.handover_due)
        if s.stage >= Stage.PICKED_UP and s.last_scan_at is not None:
            th = self.lane(s)
            out += [s.last_scan_at + th.stale_after_h * H, s.last_scan_at + th.stale_escalate_h * H]
            if s.stale_hold is not None:
                out.append(s.stale_hold[1])
        if s.stage >= Stage.PAID and s.promised_at is not None:
            out.append(s.promised_at)
            risk = self.risk_due(s)
            if risk is not None:
                out.append(risk)
        return out

    def findings(self, s: ShipmentState, at: float, pulse: str | None = None) -> list[Finding]:
        th = self.lane(s)
        tier = s.customer_tier
        cancelled = s.cancelled_at is not None
        done = cancelled or s.delivered_at is not None or s.returned_at is not None
        # Evidence is built lazily: only when a finding changes an alert (rarely).
        def last_scan() -> dict[str, Any]:
            return {"type": s.last_scan_type, "at": _iso(s.last_scan_at),
                    "location": s.last_location}

        out: list[Finding] = []

        waybill = (not done and s.waybill_due is not None and s.stage < Stage.WAYBILL
                   and at >= s.waybill_due)
        out.append(Finding("waybill_missing", waybill, _sev(Severity.MEDIUM, tier),
                           ("waybill_not_created_by_sla",),
                           lambda: {"deadline": _iso(s.waybill_due), "paid_at": _iso(s.paid_at),
                                    "warehouse_id": s.warehouse_id}))

        handover = (not done and s.handover_due is not None and s.stage < Stage.PICKED_UP
                    and at >= s.handover_due)
        out.append(Finding("handover_missed", handover, _sev(Severity.HIGH, tier),
                           ("no_pickup_after_cutoff",),
                           lambda: {"deadline": _iso(s.handover_due), "carrier": s.carrier,
                                    "warehouse_id": s.warehouse_id}))

        silent_h = (at - s.last_scan_at) / H if s.last_scan_at is not None else 0.0
        stale = not done and s.stage >= Stage.PICKED_UP and silent_h >= th.stale_after_h
        is_open = s.book.is_open("tracking_stale")
        if stale and not is_open:
            stale = not self._hold_stale(s, at, silent_h - th.stale_after_h)
        else:
            s.stale_hold = None  # scanned again (or finished) while held: nothing to say
        if not stale and not is_open and s.stale_hold is None:
            s.stale_silence = None
        stale_reasons: tuple[str, ...] = (f"no_scan_for_{int(th.stale_after_h)}h",)
        if s.stale_silence is not None and stale:
            stale_reasons += ("still_stale_after_feed_returned" if s.stale_silence[2] is not None
                        else "feed_silent_hold_expired",)
        out.append(Finding("tracking_stale", stale,
                           _sev(Severity.HIGH if silent_h >= th.stale_escalate_h
                                else Severity.MEDIUM, tier), stale_reasons,
                           lambda: {"last_scan": last_scan(), "silent_hours": round(silent_h, 1),
                                    "allowed_hours": th.stale_after_h,
                                    **self._silence_evidence(s)}))

        out.append(Finding("carrier_exception", not done and s.exception_open,
                           _sev(Severity.HIGH, tier), (f"scan_{s.exception_type}",),
                           lambda: {"last_scan": last_scan()}))

        risk_due = self.risk_due(s)
        eta_late = (s.carrier_eta is not None and s.promised_at is not None
                    and s.carrier_eta > s.promised_at + th.eta_margin_h * H)
        stage_late = risk_due is not None and at >= risk_due
        reasons = tuple(r for r, on in (("carrier_eta_after_promise", eta_late),
                                        ("stage_behind_schedule", stage_late)) if on)
        out.append(Finding("promise_at_risk",
                           not done and s.stage >= Stage.PAID and (eta_late or stage_late),
                           _sev(Severity.MEDIUM, tier), reasons,
                           lambda: {"stage": s.stage.label, "stage_deadline": _iso(risk_due),
                                    "carrier_eta": _iso(s.carrier_eta),
                                    "last_scan": last_scan()}))

        broken = (not done and s.stage >= Stage.PAID and s.promised_at is not None
                  and at >= s.promised_at)
        late_h = ((s.delivered_at or at) - s.promised_at) / H if s.promised_at else 0.0
        out.append(Finding("promise_broken", broken, _sev(Severity.HIGH, tier),
                           ("not_delivered_by_promise",) if broken else ("delivered_late",),
                           lambda: {"late_hours": round(late_h, 1), "stage": s.stage.label,
                                    "delivered_at": _iso(s.delivered_at),
                                    "last_scan": last_scan()}))

        short = not cancelled and bool(s.shortages) and s.stage < Stage.WAYBILL
        out.append(Finding("stock_shortage", short, _sev(Severity.HIGH, tier),
                           ("stock_short_at_warehouse",),
                           lambda: {"shortages": s.shortages[-3:]},
                           pulse=pulse == "stock_shortage"))
        return out


    def _hold_stale(self, s: ShipmentState, at: float, overdue_h: float) -> bool:
        """Hold this order's ``tracking_stale`` while its carrier's silent feed explains it
        (``models.feeds``); True while held. The hold ends when the feed has been back for
        the grace period, or ``max_hold_h`` after the stale deadline."""
        if self.feeds is None:
            return False
        th = self.thresholds.feed_hold
        silence = self.feeds.explains(s.carrier, s.last_scan_at, at)
        if silence is None or overdue_h >= th.max_hold_h:
            s.stale_hold = None
            return False
        s.stale_silence = (silence.carrier, silence.since, silence.returned)
        first = s.stale_hold[0] if s.stale_hold is not None else at
        s.stale_hold = (first, at + th.recheck_min * 60.0)
        return True

    @staticmethod
    def _silence_evidence(s: ShipmentState) -> dict[str, Any]:
        if s.stale_silence is None:
            return {}
        carrier, since, returned = s.stale_silence
        return {"held_for_feed": {**Silence(carrier, since, returned).evidence()}}


class IntegrityRules:
    """Process-integrity checks of one order (issue #8), for logistics, not the customer:

    * ``scan_after_cancel`` -- the carrier scanned the parcel after the order was cancelled
      (it was shipped anyway): open until a ``returned`` scan;
    * ``address_after_pickup`` -- the address changed after the carrier picked the parcel up
      (it travels to the old one unless someone intervenes): open until it is delivered,
      returned or cancelled;
    * ``status_backwards`` -- a progress scan dated after the delivery (delivered -> in
      transit): reported once per such scan;
    * ``misdelivery_suspected`` -- the parcel was scanned out for delivery (or delivered) at
      a place that serves other regions, never the order's own (``models.atlas``): reported
      once per order.

    Facts are compared in event time (``occurred_at``), so a scan that merely arrives late
    is not "backwards".
    """

    kinds: tuple[str, ...] = INTEGRITY_KINDS

    def deadlines(self, s: ShipmentState) -> list[float]:
        return []  # every condition changes only with an event

    def findings(self, s: ShipmentState, at: float, pulse: str | None = None) -> list[Finding]:
        after_cancel = s.scanned_after_cancel_at
        moved = s.address_changed_after_pickup_at
        finished = s.delivered_at is not None or s.returned_at is not None
        return [
            Finding("scan_after_cancel", after_cancel is not None and s.returned_at is None,
                    Severity.HIGH, ("carrier_scan_after_cancellation",),
                    lambda: {"cancelled_at": _iso(s.cancelled_at),
                             "first_scan_after": _iso(after_cancel),
                             "last_scan": {"type": s.last_scan_type, "at": _iso(s.last_scan_at),
                                           "location": s.last_location}}),
            Finding("address_after_pickup",
                    moved is not None and not finished and s.cancelled_at is None,
                    Severity.MEDIUM, ("address_changed_after_pickup",),
                    lambda: {"picked_up_at": _iso(s.picked_up_at), "changed_at": _iso(moved),
                             "destination_region": s.destination_region}),
            Finding("status_backwards", False, Severity.MEDIUM,
                    ("progress_scan_after_delivery",),
                    lambda: {"delivered_at": _iso(s.delivered_at),
                             "scan": {"type": s.backwards_scan[0] if s.backwards_scan else None,
                                      "at": _iso(s.backwards_scan[1] if s.backwards_scan
                                                 else None)}},
                    pulse=pulse == "status_backwards"),
            Finding("misdelivery_suspected", False, Severity.HIGH,
                    ("last_mile_scan_outside_destination_region",),
                    lambda: {**(s.misdelivery or {}),
                             "last_scan": {"type": s.last_scan_type, "at": _iso(s.last_scan_at),
                                           "location": s.last_location}},
                    pulse=self._misdelivery_news(s)),
        ]

    @staticmethod
    def _misdelivery_news(s: ShipmentState) -> bool:
        if s.misdelivery is None or s.misdelivery_told:
            return False
        s.misdelivery_told = True  # a fact: reported once
        return True


class StockRules:
    """Ledger rules over one warehouse:sku.

    ``reservation_not_released`` (process integrity, issue #8): the order was cancelled (its
    release line reached this key) and the OMS reservation it held here was still not
    released ``release_grace_h`` later. Resolved when the OMS releases it, when the WMS picks
    the order (the reservation was used: it shipped anyway, ``scan_after_cancel`` says so
    on the order), or ``release_give_up_h`` after it opened (the order is forgotten).
    One alert per key lists every such order; the list changing while it is open sends it
    again as ``updated`` (``evidence.notice`` numbers them).
    """

    kinds: tuple[str, ...] = STOCK_KINDS

    def __init__(self, thresholds: Thresholds) -> None:
        self.th = thresholds.stock

    def deadlines(self, s: StockState) -> list[float]:
        """The other stock conditions change only with events; a cancel's grace runs out."""
        grace, give_up = self.th.release_grace_h * H, self.th.release_give_up_h * H
        out: list[float] = []
        for cancelled_at in s.cancels.values():
            out += (cancelled_at + grace, cancelled_at + grace + give_up)
        return out

    def cancelled(self, s: StockState, order_id: str, at: float) -> None:
        """A release line: ``order_id`` was cancelled at ``at``; its reservation is due back."""
        s.cancels.setdefault(order_id, at)

    def settle(self, s: StockState, order_id: str) -> None:
        """The OMS released the order's reservation here, or the WMS picked the order."""
        s.reserved.pop(order_id, None)
        s.cancels.pop(order_id, None)

    def reserve(self, s: StockState, order_id: str, units: int, at: float) -> None:
        s.reserved[order_id] = (max(units, s.reserved.get(order_id, (0, at))[0]), at)
        if len(s.reserved) > RESERVED_LIMIT:  # reservations never picked nor released
            for old in sorted(s.reserved, key=lambda o: s.reserved[o][1])[:RESERVED_LIMIT // 4]:
                del s.reserved[old]

    def unreleased(self, s: StockState, at: float) -> list[tuple[str, float, int, float]]:
        """(order, cancelled at, units, since) of the reservations held past the grace, oldest
        cancel first; forgets cancels with nothing left to release and those given up."""
        grace, give_up = self.th.release_grace_h * H, self.th.release_give_up_h * H
        out = []
        for order_id, cancelled_at in list(s.cancels.items()):
            since = cancelled_at + grace
            if at < since:
                continue
            held = s.reserved.get(order_id)
            if held is None:  # released before the cancel reached us, or never reserved
                del s.cancels[order_id]
            elif at >= since + give_up:
                del s.cancels[order_id]
                del s.reserved[order_id]
            else:
                out.append((order_id, cancelled_at, held[0], since))
        out.sort(key=lambda u: (u[1], u[0]))
        return out

    @staticmethod
    def unreleased_evidence(found: list[tuple[str, float, int, float]]) -> dict[str, Any]:
        orders = [{"order_id": o, "cancelled_at": _iso(c), "quantity": q, "since": _iso(t)}
                  for o, c, q, t in found]
        first = orders[0] if orders else {}
        return {**first, "orders": orders[:UNRELEASED_LISTED],
                "orders_held": len(orders), "units_held": sum(q for _, _, q, _ in found)}

    def update_mismatch(self, s: StockState) -> None:
        """Compare the latest WMS and OMS snapshots if they were taken close together."""
        if s.wms_snapshot is None or s.oms_snapshot is None:
            return
        (wms, wms_at), (oms, oms_at) = s.wms_snapshot, s.oms_snapshot
        if abs(wms_at - oms_at) > self.th.snapshot_pair_window_h * H:
            return
        tolerance = max(self.th.mismatch_abs, self.th.mismatch_rel * abs(wms))
        s.mismatch = oms - wms if abs(oms - wms) > tolerance else None

    def findings(self, s: StockState, at: float) -> list[Finding]:
        held = self.unreleased(s, at) if s.cancels else []
        demand = sum(s.demand.values())
        level = s.wms_level
        return [
            Finding("oversell", level is not None and demand > max(level, 0), Severity.HIGH,
                    ("ordered_beyond_on_hand",),
                    {"on_hand": level, "open_demand": demand,
                     "short_by": demand - max(level or 0, 0), "orders_waiting": len(s.demand)}),
            Finding("negative_stock", level is not None and level < 0, Severity.HIGH,
                    ("wms_level_below_zero",), {"on_hand": level}),
            Finding("stock_mismatch", s.mismatch is not None, Severity.MEDIUM,
                    ("wms_snapshot_differs_from_oms",),
                    {"wms": s.wms_snapshot[0] if s.wms_snapshot else None,
                     "oms": s.oms_snapshot[0] if s.oms_snapshot else None,
                     "oms_minus_wms": s.mismatch}),
            Finding("reservation_not_released", bool(held), Severity.MEDIUM,
                    ("reservation_held_after_cancel",) if held else (),
                    lambda: self.unreleased_evidence(held)),
        ]
