"""Shipment logic end to end through the in-process Topology (no broker).

Times are Korea time (the thresholds' zone). With the default thresholds an order paid at
10:00 on day 0 and promised for 22:00 on day 1 must have a waybill by 19:00 (cut-off 18:00 +
1 h) and be picked up by 23:00 (+5 h); the promise is at risk at 19:00 if still only paid.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from delaywatch.config import Settings, Thresholds
from delaywatch.core.pipeline import Topology
from delaywatch.core.shipment import ORDERS, ShipmentLogic
from delaywatch.core.state import ShipmentState
from delaywatch.schemas.alerts import Alert, AlertStatus, Severity, alert_id_for
from delaywatch.schemas.dlq import DeadLetter, SourceRef
from delaywatch.schemas.events import OrderEvent

KST = ZoneInfo("Asia/Seoul")
DAY0 = date(2024, 5, 6)
FILLER = "O-FILLER"
FILLER_STOCK = ("W0", "FILL")


def kst(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(DAY0 + timedelta(days=day), time(hour, minute), KST)


def iso(dt: datetime) -> str:
    return dt.isoformat()


class World:
    """A one-partition topology fed with JSON records, plus a clock-driving helper.

    The shipment watermark is min(orders clock, scans clock) - allowed_lateness, the stock
    watermark min(inventory clock, order-lines clock) - allowed_lateness; :meth:`advance`
    sends filler records of an uninvolved order and SKU on every input so both reach ``until``.
    """

    def __init__(self, settings: Settings, thresholds: Thresholds) -> None:
        self.topology = Topology(settings, thresholds)
        self.lateness = timedelta(seconds=settings.time.allowed_lateness_s)
        self.alerts: list[Alert] = []
        self.dead: list[DeadLetter] = []
        self.clock: datetime | None = None
        self._n = 0
        self.filler_carrier = "cj"  # the carrier of advance()'s filler scans

    # -- input -----------------------------------------------------------------------------
    def feed(self, role: str, key: str, value: dict[str, Any]) -> list[Alert]:
        at = datetime.fromisoformat(value["occurred_at"])
        self.clock = at if self.clock is None else max(self.clock, at)
        return self._collect(self.topology.feed(role, key, orjson.dumps(value),
                                                SourceRef(topic=role, key=key)))

    def _collect(self, outputs: Any) -> list[Alert]:
        new = []
        for out in outputs:
            if isinstance(out, Alert):
                new.append(out)
            else:
                self.dead.append(out)
        self.alerts.extend(new)
        return new

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self._n:05d}"

    def order(self, order_id: str, event_type: str, at: datetime, **fields: Any) -> list[Alert]:
        return self.feed("orders", order_id, {
            "event_id": self._id("ev-o"), "occurred_at": iso(at), "event_type": event_type,
            "order_id": order_id, **fields})

    def place(self, order_id: str, at: datetime, *, promised_at: datetime,
              tier: str = "standard", lines: tuple[tuple[str, int], ...] = (("SKU-1", 1),),
              warehouse: str = "W1", carrier: str = "cj", region: str | None = None,
              ) -> list[Alert]:
        extra = {"destination_region": region} if region else {}
        return self.order(order_id, "order_placed", at, promised_at=iso(promised_at),
                          customer_tier=tier, customer_ref=f"C-{order_id}",
                          warehouse_id=warehouse, carrier=carrier, **extra,
                          lines=[{"sku": s, "quantity": q} for s, q in lines],
                          customer={"name": "Hong Gildong", "phone": "010-1234-5678"})

    def pay(self, order_id: str, at: datetime) -> list[Alert]:
        return self.order(order_id, "payment_confirmed", at)

    def cancel(self, order_id: str, at: datetime) -> list[Alert]:
        return self.order(order_id, "order_cancelled", at)

    def scan(self, order_id: str, scan_type: str, at: datetime, *,
             eta: datetime | None = None, location: str = "Icheon hub",
             event_id: str | None = None, carrier: str = "cj") -> list[Alert]:
        value = {"event_id": event_id or self._id("ev-s"), "occurred_at": iso(at),
                 "tracking_number": f"T-{order_id}", "order_id": order_id, "carrier": carrier,
                 "scan_type": scan_type, "location": location}
        if eta is not None:
            value["carrier_eta"] = iso(eta)
        return self.feed("scans", order_id, value)

    def inventory(self, warehouse: str, sku: str, event_type: str, quantity: int,
                  at: datetime, *, source: str = "wms", order_id: str | None = None,
                  ) -> list[Alert]:
        value = {"event_id": self._id("ev-i"), "occurred_at": iso(at),
                 "event_type": event_type, "warehouse_id": warehouse, "sku": sku,
                 "quantity": quantity, "source": source}
        if order_id is not None:
            value["order_id"] = order_id
        return self.feed("inventory", f"{warehouse}:{sku}", value)

    # -- time ------------------------------------------------------------------------------
    def advance(self, until: datetime) -> list[Alert]:
        """Move every watermark just past ``until`` (in steps, to stay within max_future):
        the engines apply what lies strictly before the watermark."""
        until = until + timedelta(milliseconds=1)
        new: list[Alert] = []
        start = self.clock or until
        step = start
        while True:
            step = min(step + timedelta(hours=12), until)
            at = step + self.lateness
            new += self.order(FILLER, "order_placed", at)
            new += self.scan(FILLER, "waybill_created", at, carrier=self.filler_carrier)
            new += self.inventory(*FILLER_STOCK, "stock_snapshot", 1000, at)
            if step >= until:
                break
        assert all(a.key not in (FILLER, ":".join(FILLER_STOCK)) for a in new)
        return new

    def flush(self) -> list[Alert]:
        return self._collect(self.topology.flush())

    def of(self, key: str, kind: str | None = None) -> list[Alert]:
        return [a for a in self.alerts if a.key == key and (kind is None or a.kind == kind)]


def transitions(alerts: list[Alert]) -> list[tuple[str, AlertStatus, Severity, datetime]]:
    return [(a.kind, a.status, a.severity, a.detected_at) for a in alerts]


@pytest.fixture
def make_world(make_settings, thresholds) -> Callable[[], World]:
    def make() -> World:
        return World(make_settings(partitions=1), thresholds)

    return make


@pytest.fixture
def world(make_world) -> World:
    return make_world()


def paid_order(w: World, order_id: str = "O-1", *, tier: str = "standard",
               promised_at: datetime | None = None) -> None:
    w.place(order_id, kst(0, 9, 55), promised_at=promised_at or kst(1, 22), tier=tier)
    w.pay(order_id, kst(0, 10))


def picked_up_order(w: World, order_id: str = "O-1", *, tier: str = "standard",
                    promised_at: datetime | None = None) -> None:
    paid_order(w, order_id, tier=tier, promised_at=promised_at)
    w.scan(order_id, "waybill_created", kst(0, 14))
    w.scan(order_id, "picked_up", kst(0, 17))


# -- the happy path ----------------------------------------------------------------------------
def test_a_normal_order_raises_no_alert(world) -> None:
    picked_up_order(world)
    world.scan("O-1", "arrived_at_hub", kst(0, 22))
    world.scan("O-1", "departed_hub", kst(1, 2))
    world.scan("O-1", "out_for_delivery", kst(1, 9))
    world.scan("O-1", "delivered", kst(1, 13))
    world.advance(kst(4, 0))
    world.flush()
    assert world.alerts == []
    assert world.dead == []
    state = world.topology.shipments[0].engine.states["O-1"].data
    assert state.delivered_at == kst(1, 13).timestamp() and state.scans == 6


# -- dispatch ----------------------------------------------------------------------------------
def test_waybill_missing_opens_at_the_deadline_and_resolves_on_the_waybill(world) -> None:
    paid_order(world)
    assert world.advance(kst(0, 18, 59)) == []
    world.advance(kst(0, 20))
    [opened] = world.of("O-1", "waybill_missing")
    assert (opened.status, opened.severity) == (AlertStatus.OPEN, Severity.MEDIUM)
    assert opened.detected_at == kst(0, 19)  # the deadline, not when the clock noticed
    assert datetime.fromisoformat(opened.evidence["deadline"]) == kst(0, 19)
    assert opened.stage == "pick_pack" and opened.customer_ref == "C-O-1"

    world.scan("O-1", "waybill_created", kst(0, 20, 30))
    world.advance(kst(0, 21))
    assert transitions(world.of("O-1", "waybill_missing")) == [
        ("waybill_missing", AlertStatus.OPEN, Severity.MEDIUM, kst(0, 19)),
        ("waybill_missing", AlertStatus.RESOLVED, Severity.MEDIUM, kst(0, 20, 30)),
    ]
    assert len({a.alert_id for a in world.of("O-1", "waybill_missing")}) == 1


def test_no_pickup_by_the_deadline_is_handover_missed(world) -> None:
    paid_order(world)
    world.scan("O-1", "waybill_created", kst(0, 14))
    world.advance(kst(0, 22, 59))
    assert world.of("O-1", "handover_missed") == []
    world.advance(kst(1, 0))
    assert transitions(world.of("O-1", "handover_missed")) == [
        ("handover_missed", AlertStatus.OPEN, Severity.HIGH, kst(0, 23))]
    world.scan("O-1", "picked_up", kst(1, 1))
    world.advance(kst(1, 2))
    assert world.of("O-1", "handover_missed")[-1].status == AlertStatus.RESOLVED


# -- in transit --------------------------------------------------------------------------------
@pytest.mark.parametrize("tier, first, escalated", [
    ("standard", Severity.MEDIUM, Severity.HIGH),
    ("vip", Severity.HIGH, Severity.CRITICAL),
])
def test_silent_carrier_is_tracking_stale_then_escalates_then_resolves(
        world, tier, first, escalated) -> None:
    picked_up_order(world, tier=tier, promised_at=kst(6, 22))
    world.advance(kst(1, 12, 59))
    assert world.of("O-1", "tracking_stale") == []
    world.advance(kst(2, 11, 59))
    world.scan("O-1", "arrived_at_hub", kst(2, 12))
    world.advance(kst(2, 13))
    stale = world.of("O-1", "tracking_stale")
    assert transitions(stale) == [
        ("tracking_stale", AlertStatus.OPEN, first, kst(1, 13)),  # picked up 17:00 + 20 h
        ("tracking_stale", AlertStatus.UPDATED, escalated, kst(2, 9)),  # + 40 h
        ("tracking_stale", AlertStatus.RESOLVED, escalated, kst(2, 12)),
    ]
    assert stale[0].evidence["silent_hours"] == 20.0
    assert stale[1].evidence["silent_hours"] == 40.0
    assert stale[0].reason_codes == ["no_scan_for_20h"]


def test_exception_scan_is_carrier_exception_until_progress(world) -> None:
    picked_up_order(world)
    world.scan("O-1", "exception", kst(0, 20), location="Okcheon hub")
    world.advance(kst(0, 21))
    [opened] = world.of("O-1", "carrier_exception")
    assert opened.status == AlertStatus.OPEN and opened.detected_at == kst(0, 20)
    assert opened.reason_codes == ["scan_exception"]
    assert opened.evidence["last_scan"]["location"] == "Okcheon hub"
    world.scan("O-1", "arrived_at_hub", kst(0, 22))
    world.advance(kst(0, 23))
    assert world.of("O-1", "carrier_exception")[-1].status == AlertStatus.RESOLVED


def test_carrier_eta_after_the_promise_is_promise_at_risk(world) -> None:
    paid_order(world)
    world.scan("O-1", "waybill_created", kst(0, 14), eta=kst(2, 10))
    world.advance(kst(0, 15))
    [risk] = world.of("O-1")
    assert (risk.kind, risk.status, risk.detected_at) == (
        "promise_at_risk", AlertStatus.OPEN, kst(0, 14))
    assert risk.reason_codes == ["carrier_eta_after_promise"]
    assert datetime.fromisoformat(risk.evidence["carrier_eta"]) == kst(2, 10)
    assert risk.message_en and risk.message_ko


@pytest.mark.parametrize("tier, at_open, at_delivery", [
    ("standard", 2000, 5000),  # late >= 0 h, then late >= 24 h
    ("vip", 5000, 10000),
])
def test_not_delivered_by_the_promise_is_promise_broken_with_compensation(
        world, tier, at_open, at_delivery) -> None:
    picked_up_order(world, tier=tier)
    world.scan("O-1", "arrived_at_hub", kst(1, 2))
    world.advance(kst(1, 21, 59))
    assert world.of("O-1", "promise_broken") == []
    world.advance(kst(1, 23))
    [broken] = world.of("O-1", "promise_broken")
    assert broken.detected_at == kst(1, 22)
    assert broken.severity == (Severity.CRITICAL if tier == "vip" else Severity.HIGH)
    assert broken.compensation_suggested is not None
    assert broken.compensation_suggested.amount_krw == at_open
    assert broken.promised_at == kst(1, 22)

    world.scan("O-1", "delivered", kst(2, 23))  # 25 h late
    world.advance(kst(3, 0))
    resolved = world.of("O-1", "promise_broken")[-1]
    assert resolved.status == AlertStatus.RESOLVED
    assert resolved.compensation_suggested is not None
    assert resolved.compensation_suggested.amount_krw == at_delivery
    assert resolved.evidence["late_hours"] == 25.0


def test_the_compensation_policy_weighs_the_cause_and_names_its_rule(world) -> None:
    # never picked up: the handover was missed (the shop's side), delivered 25 h late
    paid_order(world)
    world.scan("O-1", "waybill_created", kst(0, 14))
    world.scan("O-1", "picked_up", kst(1, 6))
    world.scan("O-1", "delivered", kst(2, 23))
    world.advance(kst(3, 0))
    opened, resolved = world.of("O-1", "promise_broken")
    assert opened.cause == resolved.cause == "handover_missed"
    assert opened.compensation_suggested is not None
    assert (opened.compensation_suggested.rule, opened.compensation_suggested.amount_krw) == (
        "late", 2000)
    comp = resolved.compensation_suggested
    assert comp is not None
    assert (comp.rule, comp.kind, comp.amount_krw) == ("shop-fault-day-late", "coupon", 7000)
    assert comp.expires_at == resolved.detected_at + timedelta(days=14)
    assert "cause handover_missed" in comp.reason


def test_a_none_rule_grants_no_compensation(make_settings, thresholds) -> None:
    from delaywatch.config.thresholds import CompensationRule

    policy = thresholds.model_copy(update={"compensation": [
        CompensationRule(name="no-coupon-for-carrier", causes=["carrier_delay"], kind="none",
                         amount_krw=0),
        *thresholds.compensation]})
    w = World(make_settings(partitions=1), policy)
    picked_up_order(w)
    w.scan("O-1", "arrived_at_hub", kst(1, 2))
    w.advance(kst(1, 23))
    [broken] = w.of("O-1", "promise_broken")
    assert broken.cause == "carrier_delay" and broken.compensation_suggested is None


def test_compensation_rules_match_in_order_and_names_are_unique(thresholds) -> None:
    from delaywatch.config.thresholds import Thresholds

    rule = thresholds.compensation_for
    assert rule("vip", 30.0, "carrier_delay").name == "vip-day-late"  # type: ignore[union-attr]
    assert rule("standard", 30.0, "waybill_missing").name == "shop-fault-day-late"  # type: ignore[union-attr]
    assert rule("standard", 30.0, "carrier_delay").name == "day-late"  # type: ignore[union-attr]
    assert rule("vip", 1.0, "address_issue").kind == "none"  # type: ignore[union-attr]
    unnamed = Thresholds.model_validate({"compensation": [
        {"kind": "coupon", "amount_krw": 1}, {"kind": "coupon", "amount_krw": 2}]})
    assert [r.name for r in unnamed.compensation] == ["compensation[0]", "compensation[1]"]
    with pytest.raises(ValueError, match="unique"):
        Thresholds.model_validate({"compensation": [
            {"name": "a", "kind": "coupon", "amount_krw": 1},
            {"name": "a", "kind": "coupon", "amount_krw": 2}]})


def test_alerts_carry_the_process_stage_and_say_where_the_parcel_is(world) -> None:
    picked_up_order(world)
    world.scan("O-1", "departed_hub", kst(0, 22), location="옥천 허브", eta=kst(3, 12))
    world.advance(kst(0, 23))
    [risk] = world.of("O-1", "promise_at_risk")
    assert risk.stage == "in_transit"
    assert risk.message_ko is not None and risk.message_en is not None
    assert risk.message_ko.startswith("5/6 22:00 옥천 허브 출발, 다음 분류 허브로 이동 중. ")
    assert risk.message_en.startswith(
        "Left 옥천 허브 at 22:00 on 5/6, on its way to the next sorting hub. ")
    assert "5/9 12:00" in risk.message_en  # the carrier's new ETA


@pytest.mark.parametrize("facts, stage", [
    ({}, "order"),
    ({"stage": 1}, "pick_pack"),
    ({"stage": 1, "shortages": [{"sku": "S"}]}, "stock_check"),
    ({"stage": 2}, "waybill"),
    ({"stage": 3}, "handover"),
    ({"stage": 4}, "in_transit"),
    ({"stage": 5}, "out_for_delivery"),
    ({"stage": 6}, "delivered"),
    ({"stage": 4, "returned_at": 1.0}, "returned"),
    ({"stage": 1, "cancelled_at": 1.0}, "cancelled"),
])
def test_the_process_stage_of_each_state(facts, stage) -> None:
    from delaywatch.core.state import ShipmentState, Stage

    s = ShipmentState("O-1", **{k: Stage(v) if k == "stage" else v for k, v in facts.items()})
    assert s.process_stage == stage


# -- ETA and stage-change notices ----------------------------------------------------------------
def test_a_stage_or_eta_change_tells_the_customer_again_within_the_daily_cap(world) -> None:
    paid_order(world)
    world.scan("O-1", "waybill_created", kst(0, 14), eta=kst(2, 10))  # after the promise
    world.scan("O-1", "picked_up", kst(0, 17))  # stage: waybill -> handover
    world.scan("O-1", "arrived_at_hub", kst(0, 19), eta=kst(2, 10))  # -> in transit
    world.scan("O-1", "departed_hub", kst(0, 21), eta=kst(3, 10))  # ETA +24 h: cap reached
    world.advance(kst(0, 22))
    risk = world.of("O-1", "promise_at_risk")
    assert [(a.status, a.reason_codes, a.stage) for a in risk] == [
        (AlertStatus.OPEN, ["carrier_eta_after_promise"], "waybill"),
        (AlertStatus.UPDATED, ["stage_changed"], "handover"),
        (AlertStatus.UPDATED, ["stage_changed"], "in_transit"),
    ]
    assert len({a.alert_id for a in risk}) == 1
    assert [a.evidence["notice"] for a in risk[1:]] == [1, 2]
    assert all(a.message_ko for a in risk)
    # a day later the ETA change is told (the next look at the order: a scan)
    world.scan("O-1", "departed_hub", kst(1, 15), eta=kst(3, 10))
    world.advance(kst(1, 16))
    last = world.of("O-1", "promise_at_risk")[-1]
    assert (last.status, last.reason_codes, last.evidence["notice"]) == (
        AlertStatus.UPDATED, ["eta_changed"], 3)
    assert datetime.fromisoformat(last.evidence["eta"]["to"]) == kst(3, 10)


def test_past_the_cap_an_alert_goes_to_the_teams_without_its_customer_text(world) -> None:
    world.inventory("W1", "SKU-1", "stock_snapshot", 1, kst(0, 8))
    world.place("O-1", kst(0, 9, 55), promised_at=kst(1, 22), lines=(("SKU-1", 3),))
    world.pay("O-1", kst(0, 10))
    world.advance(kst(0, 23, 30))
    opened = [a for a in world.of("O-1") if a.status == AlertStatus.OPEN]
    assert [a.kind for a in opened] == [
        "stock_shortage", "waybill_missing", "promise_at_risk", "handover_missed"]
    assert [a.message_ko is not None for a in opened] == [True, True, True, False]
    assert opened[-1].evidence["customer_message"] == "withheld_daily_cap"


def test_with_the_models_on_the_rules_leave_one_message_a_day_to_them(
        make_settings, thresholds) -> None:
    settings = make_settings(partitions=1)
    settings.models.enabled = True
    world = World(settings, thresholds)
    world.inventory("W1", "SKU-1", "stock_snapshot", 1, kst(0, 8))
    world.place("O-1", kst(0, 9, 55), promised_at=kst(1, 22), lines=(("SKU-1", 3),))
    world.pay("O-1", kst(0, 10))
    world.advance(kst(0, 23, 30))
    opened = [a for a in world.of("O-1")
              if a.status == AlertStatus.OPEN and a.kind != "delay_risk"]
    assert [a.kind for a in opened] == [
        "stock_shortage", "waybill_missing", "promise_at_risk", "handover_missed"]
    assert [a.message_ko is not None for a in opened] == [True, True, False, False]


# -- process integrity -------------------------------------------------------------------------
def test_a_scan_after_the_cancellation_opens_until_the_parcel_is_returned(world) -> None:
    paid_order(world)
    world.cancel("O-1", kst(0, 11))
    world.scan("O-1", "waybill_created", kst(0, 14))  # shipped anyway
    world.scan("O-1", "picked_up", kst(0, 17))
    world.advance(kst(0, 18))
    [opened] = world.of("O-1", "scan_after_cancel")
    assert (opened.status, opened.detected_at, opened.severity) == (
        AlertStatus.OPEN, kst(0, 14), Severity.HIGH)
    assert opened.cause is None and opened.message_ko is None  # for logistics, not customers
    assert datetime.fromisoformat(opened.evidence["first_scan_after"]) == kst(0, 14)
    world.scan("O-1", "returned", kst(1, 9))
    world.advance(kst(1, 10))
    assert world.of("O-1", "scan_after_cancel")[-1].status == AlertStatus.RESOLVED


def test_scans_before_a_late_cancellation_are_not_after_it(world) -> None:
    picked_up_order(world)
    world.cancel("O-1", kst(0, 20))  # cancelled in transit: the return is the carrier's job
    world.scan("O-1", "returned", kst(1, 9))
    world.advance(kst(1, 10))
    assert world.of("O-1", "scan_after_cancel") == []


def test_an_address_change_after_pickup_opens_until_delivery(world) -> None:
    picked_up_order(world)
    world.order("O-1", "address_changed", kst(0, 16), destination_region="SEL")  # before
    world.advance(kst(0, 18))
    assert world.of("O-1", "address_after_pickup") == []
    world.order("O-1", "address_changed", kst(0, 19), destination_region="BSN")
    world.advance(kst(0, 20))
    [moved] = world.of("O-1", "address_after_pickup")
    assert (moved.status, moved.detected_at, moved.cause) == (
        AlertStatus.OPEN, kst(0, 19), "address_issue")
    assert moved.evidence["destination_region"] == "BSN"
    world.scan("O-1", "delivered", kst(1, 13))
    world.advance(kst(1, 14))
    assert world.of("O-1", "address_after_pickup")[-1].status == AlertStatus.RESOLVED


def test_a_progress_scan_after_the_delivery_is_status_backwards(world) -> None:
    picked_up_order(world)
    world.scan("O-1", "delivered", kst(1, 13))
    world.scan("O-1", "arrived_at_hub", kst(1, 2))  # late but earlier: not backwards
    world.advance(kst(1, 14))
    assert world.of("O-1", "status_backwards") == []
    world.scan("O-1", "arrived_at_hub", kst(1, 15), location="Okcheon hub")
    world.advance(kst(1, 16))
    opened, resolved = world.of("O-1", "status_backwards")  # a fact: reported once
    assert (opened.status, resolved.status) == (AlertStatus.OPEN, AlertStatus.RESOLVED)
    assert opened.detected_at == kst(1, 15)
    assert opened.evidence["scan"]["type"] == "arrived_at_hub"


# -- a cancel's stock release (issue #8) ----------------------------------------------------------
def _order_event(event_id: str, event_type: str, at: datetime, **fields: Any) -> OrderEvent:
    return OrderEvent.model_validate({"event_id": event_id, "event_type": event_type,
                                      "occurred_at": iso(at), "order_id": "O-1", **fields})


PLACED = _order_event("p-1", "order_placed", kst(0, 9, 55), warehouse_id="W1",
                      lines=[{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}])
CANCEL = _order_event("c-1", "order_cancelled", kst(0, 10, 15))


def _sent(logic: ShipmentLogic, s: ShipmentState, *events: OrderEvent) -> list[tuple[str, ...]]:
    out = []
    for ev in events:
        out += [(f.value["kind"], f.key, f.value["event_id"], f.value["quantity"],
                 f.value["occurred_at"])
                for f in logic.on_receipt(s, ORDERS, ev, {}) if f.key is not None]
    return out


LINES = [("line", "W1:SKU-1", "p-1:0", 2, kst(0, 9, 55).timestamp()),
         ("line", "W1:SKU-2", "p-1:1", 1, kst(0, 9, 55).timestamp())]
RELEASES = [("release", "W1:SKU-1", "c-1:0", 2, kst(0, 10, 15).timestamp()),
            ("release", "W1:SKU-2", "c-1:1", 1, kst(0, 10, 15).timestamp())]


@pytest.mark.parametrize("placed_applied", [False, True])
def test_a_cancel_releases_the_lines_of_its_order_placed_received_before_it(
        thresholds, placed_applied) -> None:
    """Whether the order_placed was applied yet (the watermark) makes no difference: what
    the orders topic delivered before the cancel decides."""
    logic = ShipmentLogic(thresholds)
    s = logic.new_state("O-1")
    assert _sent(logic, s, PLACED) == LINES
    if placed_applied:
        logic.apply(s, ORDERS, PLACED, kst(0, 9, 55).timestamp())
    assert _sent(logic, s, CANCEL) == RELEASES


def test_a_cancel_received_before_its_order_placed_releases_once_that_arrives(
        thresholds) -> None:
    logic = ShipmentLogic(thresholds)
    s = logic.new_state("O-1")
    assert _sent(logic, s, CANCEL) == []  # no lines known yet: the release is owed
    assert _sent(logic, s, PLACED) == LINES + RELEASES  # dated at the cancel
    # another order_placed of the order (a correction) sends its lines, not the release again
    again = _order_event("p-2", "order_placed", kst(0, 9, 56), warehouse_id="W1",
                         lines=[{"sku": "SKU-1", "quantity": 2}])
    assert [k for k, *_ in _sent(logic, s, again)] == ["line"]


# -- cancellation, identity, severity ----------------------------------------------------------
def test_cancelling_an_order_resolves_its_open_alerts(world) -> None:
    paid_order(world)
    world.advance(kst(0, 20))
    open_kinds = {a.kind for a in world.of("O-1") if a.status == AlertStatus.OPEN}
    assert {"waybill_missing", "promise_at_risk"} <= open_kinds
    world.cancel("O-1", kst(0, 20, 30))
    world.advance(kst(3, 0))
    last = {a.kind: a for a in world.of("O-1")}
    assert set(last) == open_kinds  # nothing new (no handover_missed, no promise_broken)
    assert all(a.status == AlertStatus.RESOLVED and a.detected_at == kst(0, 20, 30)
               for a in last.values())


def stale_twice(w: World) -> None:
    picked_up_order(w, promised_at=kst(9, 22))
    w.advance(kst(1, 14))
    w.scan("O-1", "arrived_at_hub", kst(1, 14))
    w.advance(kst(2, 11))  # 14:00 + 20 h: silent again
    w.flush()


def test_alert_ids_are_deterministic_and_differ_per_episode(make_world) -> None:
    first, second = make_world(), make_world()
    stale_twice(first)
    stale_twice(second)
    sig = [(a.alert_id, a.kind, a.status, a.detected_at, a.severity) for a in first.alerts]
    assert sig == [(a.alert_id, a.kind, a.status, a.detected_at, a.severity)
                   for a in second.alerts]

    stale = first.of("O-1", "tracking_stale")
    assert [(a.episode, a.status) for a in stale] == [
        (1, AlertStatus.OPEN), (1, AlertStatus.RESOLVED), (2, AlertStatus.OPEN)]
    assert stale[0].alert_id == stale[1].alert_id == alert_id_for("O-1", "tracking_stale", 1)
    assert stale[2].alert_id == alert_id_for("O-1", "tracking_stale", 2) != stale[0].alert_id


def test_vip_severity_is_one_level_up(make_world) -> None:
    sev = {}
    for tier in ("standard", "vip"):
        w = make_world()
        paid_order(w, tier=tier)
        w.advance(kst(1, 0))
        sev[tier] = {a.kind: a.severity for a in w.of("O-1") if a.status == AlertStatus.OPEN}
    assert sev["standard"] == {"waybill_missing": Severity.MEDIUM,
                               "handover_missed": Severity.HIGH,
                               "promise_at_risk": Severity.MEDIUM}
    assert sev["vip"] == {"waybill_missing": Severity.HIGH,
                          "handover_missed": Severity.CRITICAL,
                          "promise_at_risk": Severity.HIGH}


def test_alerts_carry_no_customer_pii(world) -> None:
    paid_order(world)
    world.advance(kst(1, 0))
    assert world.alerts
    for alert in world.alerts:
        text = alert.model_dump_json()
        assert "Hong Gildong" not in text and "010-1234-5678" not in text


def test_late_scans_give_the_same_alerts_however_the_streams_interleave(make_world) -> None:
    def run(orders_clock_ahead: bool) -> list[tuple[str, AlertStatus]]:
        w = make_world()
        picked_up_order(w, promised_at=kst(5, 22))
        w.scan("O-OTHER", "waybill_created", kst(0, 21))  # scans clock 21:00

        def late_scans() -> None:  # both > 30 min behind the scans clock: ordered at 20:30
            w.scan("O-1", "exception", kst(0, 18), event_id="ev-s-b")
            w.scan("O-1", "arrived_at_hub", kst(0, 19), event_id="ev-s-a")

        if orders_clock_ahead:
            w.order("O-OTHER", "order_placed", kst(1, 2))
            late_scans()
        else:
            late_scans()
            w.order("O-OTHER", "order_placed", kst(1, 2))
        w.advance(kst(1, 3))
        return [(a.kind, a.status) for a in w.of("O-1")]

    assert run(orders_clock_ahead=True) == run(orders_clock_ahead=False)


def test_finished_orders_leave_the_table_after_retention(monkeypatch, thresholds):
    """Bounded state (#5): an order finished longer than the retention ago is deleted (a
    changelog tombstone) even when none of its deadlines is left to wake it up."""
    from delaywatch.core import shipment
    from delaywatch.replay import replay
    from delaywatch.simulate import simulate

    monkeypatch.setattr(shipment, "RETENTION_S", 86400.0)  # the 7-day world outlives it
    records, _ = simulate(orders=300, seed=3, profile="stress")
    topo: list = []
    replay(records, Settings(), thresholds, flush=False, configure=topo.append)
    orders = {r["key"] for r in records if r["topic"] == "orders"}
    left = 0
    for part in topo[0].shipments:
        engine = part.engine
        left += len(engine.states)
        for ks in engine.states.values():
            done = ks.data.finished_at
            if done is not None and not ks.data.book.open_kinds():
                assert done + 86400.0 >= engine.watermark, ks.key
    assert left < 0.9 * len(orders), f"{left} of {len(orders)} orders still in state"


def test_an_order_never_placed_leaves_the_table_after_the_max_age(monkeypatch, world) -> None:
    """Bounded state (#5): scans of an order whose placement never arrives (or a stock
    notice for one already gone) must not keep a key forever: its age counts from its
    first event."""
    from delaywatch.core import shipment

    monkeypatch.setattr(shipment, "MAX_AGE_S", 2 * 86400.0)
    world.scan("O-GHOST", "picked_up", kst(0, 10))
    states = world.topology.shipments[0].engine.states
    world.advance(kst(1, 12))
    assert states["O-GHOST"].data.first_seen_at == kst(0, 10).timestamp()
    world.advance(kst(2, 11))
    assert "O-GHOST" not in states


def test_an_order_delivered_days_early_stays_until_its_promise_to_be_learned(
        make_settings, thresholds) -> None:
    """With the models on, an order delivered long before its promise (Olist: most on-time
    orders, by a median 13 days) keeps its stored scorings until the promise passes, and the
    model learns it as on time; after that it leaves. Before, it left 3 days after delivery
    with its label, and the model learned mostly late orders."""
    settings = make_settings(partitions=1)
    settings.models.enabled = True
    w = World(settings, thresholds)
    risk = w.topology.risk
    picked_up_order(w, promised_at=kst(12, 22))
    w.scan("O-1", "delivered", kst(1, 15))
    states = w.topology.shipments[0].engine.states
    w.advance(kst(6, 12))  # retention (3 days) long past
    assert "O-1" in states and states["O-1"].data.scorings and not states["O-1"].data.labelled
    learned = risk.model.n_learned
    w.advance(kst(12, 23))  # the promise passed
    assert risk.model.n_learned > learned  # learned...
    assert risk.threshold.labels >= 1
    assert "O-1" not in states  # ... and gone


# -- a carrier's feed goes silent (issue #8): one outage, not one stale alert per order ------
def carrier_traffic(w: World, carrier: str, start: datetime, end: datetime) -> None:
    """A scan of ``carrier`` every 10 minutes (parcels nobody watches), as a busy feed."""
    t, n = start, 0
    while t < end:
        w.scan(f"F-{carrier}-{n % 20}", "waybill_created", t, carrier=carrier)
        t, n = t + timedelta(minutes=10), n + 1


@pytest.fixture
def feed_world(make_settings, thresholds) -> World:
    # shares learned over 50 scans (the default 1000 would need days of test traffic)
    th = thresholds.model_copy(update={"feed_hold": thresholds.feed_hold.model_copy(
        update={"share_window_scans": 50, "min_expected": 10})})
    w = World(make_settings(partitions=1), th)
    w.filler_carrier = "hj"
    return w


def test_stale_alerts_a_silent_carrier_feed_explains_are_held_until_it_returns(
        feed_world) -> None:
    """cj's feed is silent from day 0 18:00 to day 1 18:00 while hj's keeps scanning. Two cj
    parcels picked up at 17:00 pass their 20 h limit (day 1 13:00) inside the silence: no
    alert then. When the feed returns, the buffered scan of one of them arrives; the other is
    still stale after the grace period (1 h) and only then gets its alert, which says why it
    came late. An hj parcel silent as long is alerted at its own deadline: its feed flows."""
    w = feed_world
    for oid in ("O-1", "O-2"):
        picked_up_order(w, oid, promised_at=kst(6, 22))
    w.place("O-3", kst(0, 9, 55), promised_at=kst(6, 22), carrier="hj")
    w.pay("O-3", kst(0, 10))
    w.scan("O-3", "picked_up", kst(0, 17), carrier="hj")
    carrier_traffic(w, "cj", kst(0, 6), kst(0, 18))
    carrier_traffic(w, "hj", kst(0, 6), kst(1, 18))
    w.advance(kst(1, 17, 50))
    assert w.of("O-1", "tracking_stale") == [] and w.of("O-2", "tracking_stale") == []
    [hj] = w.of("O-3", "tracking_stale")
    assert (hj.status, hj.detected_at) == (AlertStatus.OPEN, kst(1, 13))
    assert "held_for_feed" not in hj.evidence

    # the scan cj buffered at 09:00 comes through (late: applied when its stream noticed it,
    # just after 17:50; backlog, not a sign the feed is back), then its live scans from 18:00
    w.scan("O-1", "arrived_at_hub", kst(1, 9))
    carrier_traffic(w, "cj", kst(1, 18), kst(2, 6))
    carrier_traffic(w, "hj", kst(1, 18), kst(2, 6))
    w.advance(kst(2, 4, 59))  # O-1 is stale again at 05:00 (09:00 + 20 h): on its own
    assert w.of("O-1", "tracking_stale") == []
    [late] = w.of("O-2", "tracking_stale")
    assert late.status == AlertStatus.OPEN
    held = late.evidence["held_for_feed"]
    assert held["carrier"] == "cj"
    assert datetime.fromisoformat(held["since"]) == kst(0, 17, 50)  # its last scan before
    returned = datetime.fromisoformat(held["returned"])
    assert returned == kst(1, 18)
    # + 1 h grace, seen at the next 15-minute look
    assert returned + timedelta(hours=1) <= late.detected_at <= returned + timedelta(
        hours=1, minutes=15)
    assert late.reason_codes == ["no_scan_for_20h", "still_stale_after_feed_returned"]


def test_a_feed_silent_for_longer_than_the_hold_limit_lets_the_alert_out(feed_world) -> None:
    """No order waits more than max_hold_h (24 h) past its stale deadline for its feed."""
    w = feed_world
    picked_up_order(w, "O-1", promised_at=kst(9, 22))
    carrier_traffic(w, "cj", kst(0, 6), kst(0, 18))
    carrier_traffic(w, "hj", kst(0, 6), kst(3, 0))
    w.advance(kst(2, 23))
    [stale] = w.of("O-1", "tracking_stale")
    # stale at day 1 13:00, held 24 h, out at the first look past it
    assert kst(2, 13) <= stale.detected_at <= kst(2, 13, 15)
    assert stale.reason_codes == ["no_scan_for_20h", "feed_silent_hold_expired"]
    assert stale.evidence["held_for_feed"]["returned"] is None


def test_a_quiet_carrier_is_not_a_silent_feed(feed_world) -> None:
    """A carrier with few parcels here (a scan every 4 h among hj's every 10 min) has
    normal gaps of hours: its orders' stale alerts are not held."""
    w = feed_world
    picked_up_order(w, "O-1", promised_at=kst(6, 22))
    t = kst(0, 6)
    while t < kst(1, 18):
        if t.minute == 0 and t.hour % 4 == 0:
            w.scan("F-cj", "waybill_created", t)
        t += timedelta(minutes=10)
    carrier_traffic(w, "hj", kst(0, 6), kst(1, 18))
    w.advance(kst(1, 14))
    [stale] = w.of("O-1", "tracking_stale")
    assert stale.detected_at == kst(1, 13)


def test_the_carrier_feeds_are_written_and_restored_with_the_partition(feed_world) -> None:
    """A worker restarted during an outage must still know the carrier is silent (the
    feeds ride with the partition's clocks); a checkpoint of the version before them (the
    heartbeat alone) still restores."""
    import pickle

    from delaywatch.core.shipment import ShipmentLogic

    w = feed_world
    carrier_traffic(w, "cj", kst(0, 6), kst(0, 18))
    carrier_traffic(w, "hj", kst(0, 6), kst(1, 6))
    w.advance(kst(1, 5))
    logic = w.topology.shipments[0].logic
    assert logic.feeds.explains("cj", kst(0, 12).timestamp(), kst(1, 5).timestamp())
    again = ShipmentLogic(logic.thresholds)
    again.restore_checkpoint(pickle.loads(pickle.dumps(logic.checkpoint())))
    assert again.feeds.snapshot() == logic.feeds.snapshot()
    assert again.atlas.snapshot() == logic.atlas.snapshot()
    assert again.last_heartbeat == logic.last_heartbeat
    assert again.feeds.explains("cj", kst(0, 12).timestamp(), kst(1, 5).timestamp())
    older = ShipmentLogic(logic.thresholds)
    older.restore_checkpoint(123.0)
    assert older.last_heartbeat == 123.0 and older.feeds.snapshot()["total"] == 0


# -- a parcel out for delivery in the wrong region (issue #8) ---------------------------------
def test_a_parcel_sent_out_from_another_regions_centre_is_a_suspected_misdelivery(
        make_settings, thresholds) -> None:
    """Seoul parcels go out from the Seoul centre, Busan ones from Busan's, and every
    region's are left at the door. A Seoul parcel sent out from the Busan centre is suspected
    (once); a Seoul parcel left at the door, a place serving every region, is not."""
    th = thresholds.model_copy(update={"integrity": thresholds.integrity.model_copy(
        update={"misdelivery_min_seen": 20})})
    w = World(make_settings(partitions=1), th)

    def ship(oid: str, region: str, centre: str, minute: int, door: str = "문 앞") -> None:
        w.place(oid, kst(0, 9), promised_at=kst(3, 22), region=region)
        w.pay(oid, kst(0, 9, 5))
        w.scan(oid, "picked_up", kst(0, 17))
        w.scan(oid, "out_for_delivery", kst(1, 8, minute), location=centre)
        w.scan(oid, "delivered", kst(1, 11, minute), location=door)

    for i in range(25):  # a minute apart: the door sees both regions' parcels as it goes
        ship(f"S-{i}", "SEL", "서울 배송센터", i)
        ship(f"B-{i}", "BSN", "부산 배송센터", i)
    ship("O-WRONG", "SEL", "부산  배송센터", 30)  # spacing does not make a new place
    ship("O-DOOR", "SEL", "서울 배송센터", 30)
    w.advance(kst(2, 0))
    got = [(a.key, a.status) for a in w.alerts if a.kind == "misdelivery_suspected"]
    assert got == [("O-WRONG", AlertStatus.OPEN), ("O-WRONG", AlertStatus.RESOLVED)], got
    opened = w.of("O-WRONG", "misdelivery_suspected")[0]
    assert opened.status == AlertStatus.OPEN and opened.cause is None
    assert opened.audience == "logistics"
    ev = opened.evidence
    assert (ev["destination_region"], ev["region_share"]) == ("SEL", 0.0)
    assert ev["usually_serves"] == {"region": "BSN", "share": 1.0}
    assert w.of("O-DOOR", "misdelivery_suspected") == []

