"""Causes of delay alerts: the first step of the pipeline that overran, from state alone."""

from __future__ import annotations

import pytest

from delaywatch.core.state import ShipmentState, Stage
from delaywatch.models.causes import diagnose
from delaywatch.schemas.alerts import Cause

H = 3600.0


def _order(**kw) -> ShipmentState:
    base = dict(order_id="O-1", placed_at=0.0, paid_at=0.0, promised_at=48 * H,
                waybill_due=10 * H, handover_due=15 * H, stage=Stage.PAID)
    return ShipmentState(**(base | kw))


@pytest.mark.parametrize(("kind", "cause"), [
    ("stock_shortage", Cause.STOCK_SHORTAGE), ("waybill_missing", Cause.WAYBILL_MISSING),
    ("handover_missed", Cause.HANDOVER_MISSED), ("tracking_stale", Cause.CARRIER_DELAY),
])
def test_a_rule_alert_names_its_own_step(kind, cause):
    assert diagnose(kind, _order(), 1 * H) == cause


def test_a_failed_delivery_is_an_address_issue_other_carrier_exceptions_the_carrier():
    s = _order(stage=Stage.IN_TRANSIT, waybill_at=2 * H, picked_up_at=5 * H,
               exception_open=True, exception_type="delivery_failed")
    assert diagnose("carrier_exception", s, 30 * H) == Cause.ADDRESS_ISSUE
    assert diagnose("promise_broken", s, 48 * H) == Cause.ADDRESS_ISSUE
    s.exception_type = "exception"
    assert diagnose("carrier_exception", s, 30 * H) == Cause.CARRIER_DELAY


@pytest.mark.parametrize(("changes", "at", "cause"), [
    # the first step that overran is the cause, whatever happened after it
    (dict(shortages=[{"sku": "A", "shortfall": 1}], stage=Stage.IN_TRANSIT, waybill_at=20 * H,
          picked_up_at=30 * H), 48 * H, Cause.STOCK_SHORTAGE),
    (dict(stage=Stage.DELIVERED, waybill_at=12 * H, picked_up_at=30 * H, delivered_at=50 * H),
     50 * H, Cause.WAYBILL_MISSING),
    (dict(stage=Stage.DELIVERED, waybill_at=9 * H, picked_up_at=20 * H, delivered_at=50 * H),
     50 * H, Cause.HANDOVER_MISSED),
    (dict(stage=Stage.DELIVERED, waybill_at=9 * H, picked_up_at=14 * H, delivered_at=50 * H),
     50 * H, Cause.CARRIER_DELAY),
    # a pickup without a waybill scan: the waybill existed by the pickup
    (dict(stage=Stage.IN_TRANSIT, picked_up_at=9 * H), 48 * H, Cause.CARRIER_DELAY),
    # still waiting, past a deadline: the step it is stuck in
    (dict(), 11 * H, Cause.WAYBILL_MISSING),
    (dict(stage=Stage.WAYBILL, waybill_at=9 * H), 16 * H, Cause.HANDOVER_MISSED),
])
def test_an_outcome_alert_walks_the_steps(changes, at, cause):
    assert diagnose("promise_broken", _order(**changes), at) == cause


def test_before_any_deadline_the_rule_names_the_step_the_model_does_not():
    paid = _order()
    assert diagnose("promise_at_risk", paid, 5 * H) == Cause.PICKING_BACKLOG
    packed = _order(stage=Stage.WAYBILL, waybill_at=3 * H)
    assert diagnose("promise_at_risk", packed, 5 * H) == Cause.HANDOVER_MISSED
    # an early warning from the model with nothing overrun and no drivers given: unknown
    assert diagnose("delay_risk", paid, 5 * H) == Cause.UNKNOWN
    assert diagnose("delay_risk", _order(stage=Stage.ORDERED, paid_at=None), 1 * H) == (
        Cause.UNKNOWN)


def test_a_model_warning_with_nothing_overrun_takes_the_cause_its_drivers_point_at():
    paid = _order()
    assert diagnose("delay_risk", paid, 5 * H, ["carrier_dest=HANJIN>JEJ", "h_to_promise"]) == (
        Cause.CARRIER_DELAY)
    assert diagnose("delay_risk", paid, 5 * H, ["h_to_promise", "warehouse_hour=CHA-3@17"]) == (
        Cause.HANDOVER_MISSED)
    assert diagnose("delay_risk", paid, 5 * H, ["backlog_wh"]) == Cause.PICKING_BACKLOG
    assert diagnose("delay_risk", paid, 5 * H, ["h_to_promise", "log_value"]) == Cause.UNKNOWN
    # an overrun step still wins over what the model believes
    assert diagnose("delay_risk", paid, 11 * H, ["carrier=CJ"]) == Cause.WAYBILL_MISSING
