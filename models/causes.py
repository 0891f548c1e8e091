"""Why an order is late or at risk: a cause for every delay alert (issue #8).

An order passes stock check -> pick/pack -> waybill -> handover -> carrier. Its cause is the
first step that overran (or is overrunning now), judged only from the order's state at the
alert's event time, so the worker and a replay give the same cause:

* a rule alert names its own step (``waybill_missing`` -> waybill_missing,
  ``tracking_stale`` -> carrier_delay, ...); a ``delivery_failed`` scan is an address issue;
* an outcome or risk alert (``promise_at_risk``, ``promise_broken``, ``delay_risk``) walks
  the steps: a stock shortage on any line, then a waybill after (or still missing at) its
  cut-off, then a handover after its deadline, then the carrier. With no deadline passed
  yet, ``promise_at_risk`` (the order stayed in a step past that step's budget) names the
  step: paid -> picking backlog, waybill -> handover; a model's early warning with nothing
  overrun yet takes the cause its top drivers point at (a slow carrier lane, the site's
  cut-off hour, a backlog, a short line), else ``unknown``.

``feed_outage`` is reserved for the feed-health detector (a silent carrier feed explains its
orders' stale tracking).

>>> from delaywatch.core.state import ShipmentState, Stage
>>> s = ShipmentState("O-1", paid_at=0.0, waybill_due=3600.0, handover_due=7200.0,
...                   stage=Stage.PAID)
>>> diagnose("promise_at_risk", s, 1800.0), diagnose("promise_at_risk", s, 5000.0)
(<Cause.PICKING_BACKLOG: 'picking_backlog'>, <Cause.WAYBILL_MISSING: 'waybill_missing'>)
"""

from __future__ import annotations

from collections.abc import Sequence

from delaywatch.core.state import ShipmentState, Stage
from delaywatch.schemas.alerts import Cause

__all__ = ["diagnose"]

_BY_KIND = {
    "stock_shortage": Cause.STOCK_SHORTAGE,
    "waybill_missing": Cause.WAYBILL_MISSING,
    "handover_missed": Cause.HANDOVER_MISSED,
    "tracking_stale": Cause.CARRIER_DELAY,
    "address_after_pickup": Cause.ADDRESS_ISSUE,
}


# what a model's top drivers point at, for a warning with nothing overrun yet (prefixes of
# feature names, models/features.py; first match wins)
_DRIVER_CAUSES = (
    (("stock_short",), Cause.STOCK_SHORTAGE),
    # the hour an order was paid, against the site's cut-off: whether it makes the handover
    (("warehouse_hour=", "paid_hour="), Cause.HANDOVER_MISSED),
    (("backlog_wh", "warehouse=", "late_rate[warehouse]", "late_rate_of[warehouse]"),
     Cause.PICKING_BACKLOG),
    (("carrier", "lane=", "dest=", "load_day×carrier", "late_rate[carrier]", "late_rate[lane]",
      "late_rate_of[carrier", "late_rate_of[lane]", "late_rate_of[dest]", "h_since_progress",
      "eta_minus_promise", "exception_open"), Cause.CARRIER_DELAY),
)


def diagnose(kind: str, s: ShipmentState, at: float, drivers: Sequence[str] = ()) -> Cause:
    """The cause of a delay alert of ``kind`` on order ``s`` at event time ``at``;
    ``drivers``: the model's top features of a ``delay_risk`` warning, most pushing first."""
    if kind in _BY_KIND:
        return _BY_KIND[kind]
    if kind == "carrier_exception":
        return _carrier(s)
    if s.shortages:
        return Cause.STOCK_SHORTAGE
    # when the order got its waybill / was handed over (a pickup implies the waybill)
    waybill = s.waybill_at if s.waybill_at is not None else s.picked_up_at
    if s.waybill_due is not None and (waybill if waybill is not None else at) > s.waybill_due:
        return Cause.WAYBILL_MISSING
    if s.handover_due is not None and (
            s.picked_up_at if s.picked_up_at is not None else at) > s.handover_due:
        return Cause.HANDOVER_MISSED
    if s.stage >= Stage.PICKED_UP:
        return _carrier(s)
    if kind == "promise_at_risk":  # the step the order is stuck in ran out of its budget
        if s.stage == Stage.PAID:
            return Cause.PICKING_BACKLOG
        if s.stage == Stage.WAYBILL:
            return Cause.HANDOVER_MISSED
    for name in drivers:  # nothing overran yet: what the model saw
        for prefixes, cause in _DRIVER_CAUSES:
            if name.startswith(prefixes):
                return cause
    return Cause.UNKNOWN


def _carrier(s: ShipmentState) -> Cause:
    if s.exception_type == "delivery_failed":
        return Cause.ADDRESS_ISSUE
    return Cause.CARRIER_DELAY
