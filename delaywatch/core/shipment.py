"""Shipment logic: the join of order events, carrier scans and stock notices per order."""

from __future__ import annotations

import math
from typing import Any
from zoneinfo import ZoneInfo

from delaywatch.config.thresholds import NO_COMPENSATION, Thresholds
from delaywatch.core.alerts import Transition, ts_to_dt
from delaywatch.core.engine import Forward, Rejected
from delaywatch.core.state import ShipmentState, Stage
from delaywatch.models.atlas import DeliveryAtlas
from delaywatch.models.audience import audience_for
from delaywatch.models.causes import diagnose
from delaywatch.models.feeds import CarrierFeeds
from delaywatch.models.messages import customer_message
from delaywatch.models.risk import MODEL_NAME, MODEL_VERSION, RiskDetector
from delaywatch.models.rules import (
    INTEGRITY_KINDS,
    DelayRules,
    IntegrityRules,
    ShipmentDetector,
    dispatch_deadlines,
)
from delaywatch.schemas.alerts import Alert, AlertStatus, Compensation, Risk, alert_id_for
from delaywatch.schemas.events import OrderEvent, OrderEventType, ScanEvent, ScanType, StockNotice

__all__ = ["ORDERS", "SCANS", "ShipmentLogic"]

ORDERS, SCANS = "orders", "scans"  # and "notices:<stock partition>"
H = 3600.0
RETENTION_S = 3 * 86400.0  # finished orders stay this long (event time) for late events
MAX_AGE_S = 30 * 86400.0  # orders that never finish are dropped after this
SCAN_BEFORE_ORDER_TOLERANCE_S = 3600.0

_SCAN_STAGE = {
    ScanType.WAYBILL_CREATED: Stage.WAYBILL,
    ScanType.PICKED_UP: Stage.PICKED_UP,
    ScanType.ARRIVED_AT_HUB: Stage.IN_TRANSIT,
    ScanType.DEPARTED_HUB: Stage.IN_TRANSIT,
    ScanType.OUT_FOR_DELIVERY: Stage.OUT_FOR_DELIVERY,
    ScanType.DELIVERED: Stage.DELIVERED,
}
_PROGRESS = frozenset(
    {ScanType.ARRIVED_AT_HUB, ScanType.DEPARTED_HUB, ScanType.OUT_FOR_DELIVERY, ScanType.DELIVERED}
)


_LAST_MILE = frozenset({ScanType.OUT_FOR_DELIVERY, ScanType.DELIVERED})


# process-integrity alerts report contradictions, not delays: no cause (the address one
# says address_issue: it is one)
_NOT_DELAYS = frozenset(INTEGRITY_KINDS) - {"address_after_pickup"}


# rule alerts whose messages go to the customer: the ones ETA/stage-change notices follow up.
# The model's delay_risk is not among them, and its messages do not count against the rules'
# daily cap: model scores follow arrival batches live, and rule alerts must stay equal
# between a live run and its replay (their texts too: they quote the carrier's ETA only).
CUSTOMER_KINDS = ("promise_broken", "promise_at_risk", "tracking_stale")
MODEL_MESSAGES_PER_DAY = 1
RESOLVED = AlertStatus.RESOLVED


class ShipmentLogic:
    """Keyed logic for the shipment table (key = order_id) of one partition."""

    def __init__(
        self,
        thresholds: Thresholds,
        *,
        partition: int = 0,
        stock_partitions: int = 1,
        heartbeat_s: float = 900.0,
        detectors: list[ShipmentDetector] | None = None,
        risk: RiskDetector | None = None,
    ) -> None:
        self.thresholds = thresholds
        self.tz = ZoneInfo(thresholds.timezone)
        self.partition = partition
        self.stock_partitions = stock_partitions
        self.heartbeat_s = heartbeat_s
        # what this partition's scans say of each carrier's feed (stale alerts it explains
        # are held): partition state, written with the partition's clocks
        self.feeds = CarrierFeeds(thresholds.feed_hold)
        self.atlas = DeliveryAtlas(thresholds.integrity)  # which regions a place serves
        self.rules = DelayRules(thresholds, self.feeds)
        self.risk = risk
        self.detectors: list[ShipmentDetector] = detectors or [self.rules, IntegrityRules()]
        if risk is not None:
            self.detectors = [*self.detectors, risk]
        self.last_heartbeat = -float("inf")
        self._model_kinds = frozenset(risk.kinds if risk is not None else ())
        # customer messages a day the rules may send (a model warning has its own share)
        per_day = thresholds.notices.max_per_day
        self._model_cap = min(MODEL_MESSAGES_PER_DAY, per_day) if risk is not None else 0
        self._rule_cap = per_day - self._model_cap

    # -- partition state (beside the keys': written with the partition's clocks) -----------
    def checkpoint(self) -> tuple[float, dict[str, Any], dict[str, Any]]:
        return self.last_heartbeat, self.feeds.snapshot(), self.atlas.snapshot()

    def restore_checkpoint(self, extra: Any) -> None:
        if isinstance(extra, tuple):
            self.last_heartbeat, feeds, *atlas = extra
            self.feeds.restore(feeds)
            self.atlas.restore(atlas[0] if atlas else None)
        elif extra is not None:  # written before the feeds: the heartbeat alone
            self.last_heartbeat = extra

    def new_state(self, key: str) -> ShipmentState:
        return ShipmentState(order_id=key)

    # -- at arrival: re-key order lines to the stock table -----------------------------------
    def on_receipt(
        self, s: ShipmentState, stream: str, event: Any, clocks: dict[str, float]
    ) -> list[Any]:
        if stream != ORDERS:
            return []
        ev: OrderEvent = event
        out = self._lines(s, ev)
        clock = clocks.get(ORDERS, -float("inf"))
        if clock - self.last_heartbeat >= self.heartbeat_s:
            # Stock partitions order lines by our orders clock; tell all of them it moved.
            self.last_heartbeat = clock
            for p in range(self.stock_partitions):
                out.append(Forward("order_lines", None, {
                    "kind": "heartbeat", "origin": self.partition, "clock": clock}, partition=p))
        return out

    def _lines(self, s: ShipmentState, ev: OrderEvent) -> list[Any]:
        """Order lines (``line``) and a cancel's release (``release``) for the stock table.

        Decided at arrival, from what the orders topic has delivered for this order so far
        (its per-partition order is the same in every run), not from what the watermark has
        applied: a cancel received while its order_placed still waits to be applied finds the
        lines in ``received_lines``, and one received before its order_placed owes its release
        until that arrives. Sent once per cancel: its lines' event ids are the cancel's, so
        the stock table would also drop a re-sent one."""
        t = ev.event_type
        if t == OrderEventType.ORDER_PLACED:
            lines = [(ln.sku, ln.quantity) for ln in ev.lines]
            warehouse = ev.warehouse_id or s.warehouse_id
            s.received_lines = (warehouse, lines)
            out = self._forward(s, "line", ev.event_id, ev.occurred_at.timestamp(), warehouse,
                                lines)
            if s.release_owed is not None and lines:
                cancel_id, cancelled_at = s.release_owed
                s.release_owed = None
                out += self._forward(s, "release", cancel_id, cancelled_at, warehouse, lines)
            return out
        if t != OrderEventType.ORDER_CANCELLED:
            return []
        if ev.lines:
            warehouse, lines = ev.warehouse_id or s.warehouse_id, [
                (ln.sku, ln.quantity) for ln in ev.lines]
        elif s.received_lines is not None:
            warehouse, lines = s.received_lines
            warehouse = ev.warehouse_id or warehouse
        else:
            warehouse, lines = ev.warehouse_id or s.warehouse_id, s.lines
        if not lines:  # its order_placed has not arrived: released when it does
            s.release_owed = (ev.event_id, ev.occurred_at.timestamp())
            return []
        return self._forward(s, "release", ev.event_id, ev.occurred_at.timestamp(), warehouse,
                             lines)

    def _forward(self, s: ShipmentState, kind: str, event_id: str, at: float,
                 warehouse: str | None, lines: list[tuple[str, int]]) -> list[Any]:
        return [Forward("order_lines", f"{warehouse}:{sku}", {
            "kind": kind, "origin": self.partition, "event_id": f"{event_id}:{i}",
            "order_id": s.order_id, "warehouse_id": warehouse, "sku": sku, "quantity": qty,
            "occurred_at": at}) for i, (sku, qty) in enumerate(lines)]

    # -- in event-time order ---------------------------------------------------------------
    def apply(self, s: ShipmentState, stream: str, event: Any, at: float) -> list[Any]:
        if s.first_seen_at is None:
            s.first_seen_at = at
        pulse = None
        old_stage = s.stage
        if stream == ORDERS:
            self._apply_order(s, event)
        elif stream == SCANS:
            outcome = self._apply_scan(s, event)
            if isinstance(outcome, Rejected):
                return [outcome]
            pulse = outcome
            self.feeds.seen(event.carrier or s.carrier, at, event.occurred_at.timestamp())
        else:  # a stock notice
            notice: StockNotice = event
            s.shortages = [*s.shortages, {"warehouse_id": notice.warehouse_id, "sku": notice.sku,
                                          "shortfall": notice.shortfall}][-5:]
            pulse = "stock_shortage"
        if self.risk is not None:
            self._learn(s, at, old_stage, event if stream == ORDERS else None)
        return self._evaluate(s, at, pulse)

    def on_time(self, s: ShipmentState, at: float) -> list[Any]:
        if self.risk is not None and s.cancelled_at is None:
            self.risk.settle(s, at)  # the promise passed: the label is known
        return self._evaluate(s, at, None)

    def _learn(self, s: ShipmentState, at: float, old_stage: Stage, order: Any) -> None:
        assert self.risk is not None
        self.risk.stage_changed(s, old_stage)
        if order is not None and order.event_type == OrderEventType.ORDER_PLACED:
            self.risk.aggregates.record_order(at)
        if s.cancelled_at is not None:
            s.scorings = []  # no outcome to learn from
        elif s.delivered_at is not None:
            self.risk.delivered(s, at)

    def next_due(self, s: ShipmentState, after: float) -> float | None:
        due = [t for d in self.detectors for t in d.deadlines(s) if t > after]
        # the moment the order may leave the table: without it an order with no deadline
        # left would never be looked at again, and state would grow with history
        leave = self._leaves_at(s)
        if leave is not None and leave > after:
            due.append(leave)
        return min(due) if due else None

    @staticmethod
    def _label_pending(s: ShipmentState) -> bool:
        """The learned models still owe this order its delay label: learned when the promise
        passes (``RiskDetector.settle``), from the scorings it keeps. An order delivered days
        early (Olist: 96 % of on-time orders, median 13 days early) must stay until then, or
        its on-time label leaves with it and the model learns mostly late orders."""
        return bool(s.scorings) and not s.labelled and s.promised_at is not None

    @classmethod
    def _leaves_at(cls, s: ShipmentState) -> float | None:
        if s.finished_at is not None:
            leave = s.finished_at + RETENTION_S
            if cls._label_pending(s) and s.promised_at is not None and s.promised_at > leave:
                leave = s.promised_at
                if s.started_at is not None:
                    leave = min(leave, s.started_at + MAX_AGE_S)
            return math.nextafter(leave, math.inf)
        if s.started_at is not None:  # also scans or notices of an order never placed
            return math.nextafter(s.started_at + MAX_AGE_S, math.inf)
        return None

    def expired(self, s: ShipmentState, watermark: float) -> bool:
        started = s.started_at
        if started is not None and watermark > started + MAX_AGE_S:
            return True  # the hard cap, open alerts or not
        if s.book.open_kinds():
            return False
        finished = s.finished_at
        if finished is not None:
            if (self._label_pending(s) and s.promised_at is not None
                    and watermark <= s.promised_at):
                return False
            return watermark > finished + RETENTION_S
        return False

    # -- facts -------------------------------------------------------------------------------
    def _apply_order(self, s: ShipmentState, ev: OrderEvent) -> None:
        t = ev.occurred_at.timestamp()
        if ev.event_type == OrderEventType.ORDER_PLACED:
            s.placed_at = t
            s.promised_at = ev.promised_at.timestamp() if ev.promised_at else s.promised_at
            s.customer_ref = ev.customer_ref
            s.customer_tier = ev.customer_tier
            s.warehouse_id = ev.warehouse_id
            s.carrier = ev.carrier or s.carrier
            s.service_level = ev.service_level
            s.origin_region = ev.origin_region
            s.destination_region = ev.destination_region
            s.lines = [(ln.sku, ln.quantity) for ln in ev.lines]
            s.received_lines = None  # applied: s.lines holds them now
            s.order_value = ev.order_value
            s.attributes = dict(ev.attributes)
            if s.paid_at is not None and s.waybill_due is None:
                self._fix_dispatch(s)
        elif ev.event_type == OrderEventType.PAYMENT_CONFIRMED:
            s.paid_at = t
            if ev.promised_at is not None:
                s.promised_at = ev.promised_at.timestamp()
            if s.stage < Stage.PAID:
                s.stage = Stage.PAID
            self._fix_dispatch(s)
        elif ev.event_type == OrderEventType.ORDER_CANCELLED:
            s.cancelled_at = t
        elif ev.event_type == OrderEventType.ADDRESS_CHANGED:
            s.destination_region = ev.destination_region or s.destination_region
            if (s.picked_up_at is not None and t > s.picked_up_at
                    and s.address_changed_after_pickup_at is None):
                s.address_changed_after_pickup_at = t

    def _fix_dispatch(self, s: ShipmentState) -> None:
        if s.paid_at is None:
            return
        lane = self.thresholds.for_lane(s.carrier, s.service_level)
        s.waybill_due, s.handover_due = dispatch_deadlines(s.paid_at, lane, self.tz)

    def _apply_scan(self, s: ShipmentState, ev: ScanEvent) -> Rejected | str | None:
        """Apply a scan; a refusal, or the name of the pulse it raises."""
        t = ev.occurred_at.timestamp()
        if s.placed_at is not None and t < s.placed_at - SCAN_BEFORE_ORDER_TOLERANCE_S:
            return Rejected("impossible_timestamp",
                            f"scan {ev.scan_type} at {ev.occurred_at.isoformat()} is "
                            f"{(s.placed_at - t) / H:.1f} h before the order was placed",
                            ev.event_id)
        s.scans += 1
        s.carrier = s.carrier or ev.carrier
        pulse = None
        if ev.scan_type != ScanType.RETURNED:
            if (s.cancelled_at is not None and t > s.cancelled_at
                    and s.scanned_after_cancel_at is None):
                s.scanned_after_cancel_at = t
            if (s.delivered_at is not None and t > s.delivered_at
                    and ev.scan_type != ScanType.DELIVERED):
                s.backwards_scan = (ev.scan_type.value, t)
                pulse = "status_backwards"
        if s.last_scan_at is None or t >= s.last_scan_at:
            s.last_scan_at, s.last_scan_type, s.last_location = t, ev.scan_type.value, ev.location
        st = _SCAN_STAGE.get(ev.scan_type)
        if st is not None and st > s.stage:
            s.stage = st
        if ev.scan_type == ScanType.WAYBILL_CREATED:
            s.waybill_at = s.waybill_at or t
        elif ev.scan_type == ScanType.PICKED_UP:
            s.picked_up_at = s.picked_up_at or t
        elif ev.scan_type == ScanType.DELIVERED:
            s.delivered_at = s.delivered_at or t
        elif ev.scan_type == ScanType.RETURNED:
            s.returned_at = s.returned_at or t
        if ev.scan_type in (ScanType.EXCEPTION, ScanType.DELIVERY_FAILED):
            s.exception_open, s.exception_type = True, ev.scan_type.value
        elif ev.scan_type in _PROGRESS:
            s.exception_open = False
        if ev.carrier_eta is not None:
            s.carrier_eta = ev.carrier_eta.timestamp()
        if ev.scan_type in _LAST_MILE:
            if s.misdelivery is None:
                s.misdelivery = self.atlas.judge(ev.location, s.destination_region)
            self.atlas.learn(ev.location, s.destination_region)
        return pulse

    # -- alerts ------------------------------------------------------------------------------
    def _evaluate(self, s: ShipmentState, at: float, pulse: str | None) -> list[Any]:
        findings = [f for d in self.detectors for f in d.findings(s, at, pulse)]
        transitions = s.book.evaluate(s.order_id, findings, at)
        if s.told is not None and not any(
                t.kind in CUSTOMER_KINDS and t.status != RESOLVED for t in transitions):
            notice = self._notice(s, at)
            if notice is not None:
                transitions.append(notice)
        out: list[Any] = [self._capped(s, self._alert(s, t), at) for t in transitions]
        if self.risk is not None and self.risk.emitted:
            out.extend(self.risk.emitted)
            self.risk.emitted.clear()
        return out

    # -- ETA-change notices ----------------------------------------------------------------
    @staticmethod
    def _eta(s: ShipmentState) -> float | None:
        """The carrier's ETA: a fact of the stream. (The model's window moves with every
        scoring, and scoring follows arrival batches live: notices on it would make rule
        alerts differ between a live run and its replay.)"""
        return s.carrier_eta

    @staticmethod
    def _told_today(s: ShipmentState, at: float) -> int:
        s.told_at = [t for t in s.told_at if t > at - 86400.0]
        return len(s.told_at)

    def _capped(self, s: ShipmentState, alert: Alert, at: float) -> Alert:
        """Count a customer message; past the daily cap the alert still goes to the teams,
        without its customer text (``evidence.customer_message = "withheld_daily_cap"``).
        ``notices.max_per_day`` in any 24 h: with the models on, one of them is kept for a
        model warning and the rules have the rest (fixed shares: the rules' messages cannot
        depend on the model's, see CUSTOMER_KINDS)."""
        if alert.message_ko is None or alert.status == RESOLVED:
            return alert
        model = alert.kind not in CUSTOMER_KINDS and alert.kind in self._model_kinds
        if model:
            s.model_told_at = [t for t in s.model_told_at if t > at - 86400.0]
            full = len(s.model_told_at) >= self._model_cap
        else:
            full = self._told_today(s, at) >= self._rule_cap
        if full:
            return alert.model_copy(update={
                "message_ko": None, "message_en": None,
                "evidence": {**alert.evidence, "customer_message": "withheld_daily_cap"}})
        if model:
            s.model_told_at.append(at)
        else:
            s.told = (s.process_stage.value, self._eta(s))
            s.told_at.append(at)
        return alert

    def _notice(self, s: ShipmentState, at: float) -> Transition | None:
        """An ``updated`` message for the order's open customer-facing alert when its stage
        changed or its ETA moved since the customer was last told, within the daily cap."""
        kind = next((k for k in CUSTOMER_KINDS if s.book.is_open(k)), None)
        if kind is None or s.told is None:
            return None
        th = self.thresholds.notices
        stage, eta = s.process_stage.value, self._eta(s)
        was_stage, was_eta = s.told
        if stage != was_stage:
            reason = "stage_changed"
        elif eta is not None and (was_eta is None or abs(eta - was_eta) >= th.eta_change_h * H):
            reason = "eta_changed"
        else:
            return None
        if self._told_today(s, at) >= self._rule_cap:
            return None  # told enough today: the change waits for the next look
        ep = s.book.episodes[kind]
        s.notices += 1
        return Transition(
            alert_id=alert_id_for(s.order_id, kind, ep.number), kind=kind, episode=ep.number,
            status=AlertStatus.UPDATED, severity=ep.severity, reason_codes=(reason,),
            evidence={"notice": s.notices, "reason": reason,
                      "stage": {"from": was_stage, "to": stage},
                      "eta": {"from": ts_to_dt(was_eta).isoformat() if was_eta else None,
                              "to": ts_to_dt(eta).isoformat() if eta else None}},
            at=at)

    def _alert(self, s: ShipmentState, t: Transition) -> Alert:
        cause = None if t.kind in _NOT_DELAYS else diagnose(
            t.kind, s, t.at, self.risk.drivers(s) if (
                self.risk is not None and t.kind == "delay_risk") else ())
        comp = None
        late_h = None
        if t.kind == "promise_broken" and s.promised_at is not None:
            late_h = ((s.delivered_at or t.at) - s.promised_at) / H
            comp = self._compensation(s, late_h, cause, t.at)
        risk = None
        eta = s.carrier_eta
        if s.risk is not None:
            p, lo, hi = s.risk
            top = self.risk.explain_state(s) if self.risk is not None else []
            risk = Risk(p_late=round(p, 4), eta_p50=ts_to_dt(lo), eta_p90=ts_to_dt(hi),
                        model=f"{MODEL_NAME}/v{MODEL_VERSION}", top_features=top)
        stage = s.process_stage
        window = (s.risk[1], s.risk[2]) if s.risk is not None else None
        ko, en = customer_message(
            t.kind, promised_at=s.promised_at, last_scan_at=s.last_scan_at,
            last_location=s.last_location, eta=eta, tz=self.tz, late_h=late_h,
            window=window, stage=stage, last_scan_type=s.last_scan_type,
            compensated=comp is not None)
        return Alert(
            alert_id=t.alert_id, status=t.status, category="delay", kind=t.kind,
            key=s.order_id, episode=t.episode, severity=t.severity,
            reason_codes=list(t.reason_codes), evidence=t.evidence,
            detected_at=ts_to_dt(t.at), order_id=s.order_id, warehouse_id=s.warehouse_id,
            carrier=s.carrier, stage=stage.value,
            promised_at=ts_to_dt(s.promised_at) if s.promised_at else None,
            customer_ref=s.customer_ref, customer_tier=s.customer_tier,
            message_ko=ko, message_en=en, compensation_suggested=comp, risk=risk, cause=cause,
            audience=audience_for(t.kind, "delay"),
        )

    def _compensation(self, s: ShipmentState, late_h: float, cause: str | None,
                      at: float) -> Compensation | None:
        """What the policy grants for a promise broken by ``late_h`` hours: re-decided at
        every transition, so the resolved alert (at delivery) carries the final amount."""
        rule = self.thresholds.compensation_for(s.customer_tier, late_h, cause)
        if rule is None or rule.kind == NO_COMPENSATION:
            return None
        return Compensation(
            kind=rule.kind, amount_krw=rule.amount_krw, rule=rule.name,
            reason=f"late {late_h:.1f} h >= {rule.late_h:g} h, tier {s.customer_tier or '-'}, "
                   f"cause {cause}",
            expires_at=ts_to_dt(at + rule.expires_days * 86400.0))
