"""Learned stock risk (issue #4): an anomaly score over inventory flows, a stock-out forecast.

Both join the ledger rules (:class:`~delaywatch.models.rules.StockRules`) of a
``warehouse_id:sku`` key behind the same detector interface, so their alerts go through the
key's :class:`~delaywatch.core.alerts.AlertBook` like every other stock alert.

* :class:`StockAnomaly` -- river ``HalfSpaceTrees`` over three features of each inventory
  event (adjustment size, snapshot jump, reservation churn), each scaled into [0, 1] against
  the key's *own* history, so one model serves thousands of SKUs of any size. Scores first,
  then learns. ``stock_anomaly`` when a score clearly passes a high running quantile of all
  scores seen (after a warm-up), so the threshold adapts to the shop.
* :class:`StockoutForecast` -- per key an event-time decayed rate of new demand (units/hour),
  the expected next receipt (from the key's receipt intervals, else a fixed horizon) and the
  ledger. ``stockout_forecast`` while on-hand still covers the open orders but will not cover
  the demand still to come before the next receipt.
* :class:`StockModels` -- both, one set per stock partition (checkpointed whole with pickle).

Contract (river style, as for the delay models): constructor arguments are stored under
their own names; ``learn_one`` updates a model, ``score_one`` / ``findings`` never do;
everything is event time (no wall clock) and seeded, so a replay gives the same alerts as a
live run. What a model needs to remember per key lives in
:class:`~delaywatch.core.state.StockHistory` (``StockState.history``), a fixed handful of
numbers. Call :meth:`StockModels.learn_one` *before* the ledger applies the event (features
compare the event with the ledger it arrives at), :meth:`StockModels.findings` after.

>>> m = StockModels()
>>> m.kinds
('stock_anomaly', 'stockout_forecast')
>>> m.anomaly.score_one({"adjust": 0.9, "jump": 0.0, "churn": 0.0})  # nothing learned yet
0.0
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from river import anomaly, stats

from delaywatch.core.alerts import Finding
from delaywatch.core.state import StockHistory, StockState
from delaywatch.schemas.alerts import Severity
from delaywatch.schemas.events import InventoryEvent, InventoryEventType

__all__ = [
    "FEATURES",
    "STOCK_MODEL_KINDS",
    "StockAnomaly",
    "StockModels",
    "StockoutForecast",
    "stock_features",
]

H = 3600.0
FEATURES = ("adjust", "jump", "churn")
STOCK_MODEL_KINDS = ("stock_anomaly", "stockout_forecast")
_MOVE_ALPHA = 0.05  # EWMA weight of one event in the key's typical flow size
_CHURN_TAU_H = 24.0  # reservation churn looks at about the last day
_CHURN_PRIOR = 10.0  # ... as if it had also seen this many typical reservations (few events)
_CHURN_FREE = 2.0  # released units up to this many typical flows are no churn at all
_RECEIPT_ALPHA = 0.3  # EWMA weight of the latest receipt interval

_FLOWS = (InventoryEventType.STOCK_PICKED, InventoryEventType.STOCK_RESERVED,
          InventoryEventType.RESERVATION_RELEASED, InventoryEventType.STOCK_ADJUSTED)
_DRIVER_WORDS = {
    "adjust": "stock adjustment large for this SKU",
    "jump": "counted level jumped away from the ledger",
    "churn": "reservations released at an unusual rate",
}
_REASONS = {
    "adjust": "unusual_adjustment",
    "jump": "snapshot_jump",
    "churn": "reservation_churn",
}


def _squash(x: float) -> float:
    """[0, inf) -> [0, 1), 1 at x = 1 is 0.5: a ratio to the key's own scale."""
    return x / (1.0 + x) if x > 0 else 0.0


def _decay(value: float, since: float | None, now: float, tau_h: float) -> float:
    if since is None or now <= since:
        return value
    return value * math.exp(-(now - since) / (tau_h * H))


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _known(s: StockState) -> StockHistory | None:
    # getattr: a stock table checkpointed before StockState had ``history`` unpickles
    # without the slot, and switching the models on must not break on it
    return getattr(s, "history", None)


def _history(s: StockState) -> StockHistory:
    h = _known(s)
    if h is None:
        h = s.history = StockHistory()
    return h


def stock_features(h: StockHistory, s: StockState, ev: InventoryEvent, at: float
                   ) -> dict[str, float]:
    """Features of one inventory event in [0, 1], against the ledger it arrives at.

    ``adjust``: |adjustment| / typical units per flow event of this key;
    ``jump``: a WMS count's distance from the WMS ledger, or the change of (OMS count - WMS
    ledger) since the last OMS count (a lasting WMS/OMS gap is one jump, not one per
    snapshot), in typical flow units;
    ``churn``: on a release, the share of the last day's reservation flow released beyond a
    couple of orders' worth. Ratios are squashed with x / (1 + x); normal flow maps to 0, so
    the trees learn which departures from 0 are routine for this shop.
    Pure: reads ``h`` and ``s``, changes nothing.
    """
    et = ev.event_type
    move = (h.move or 1.0) + 1.0
    adjust = jump = churn = 0.0
    if et == InventoryEventType.STOCK_ADJUSTED:
        adjust = _squash(abs(ev.quantity) / move)
    elif et == InventoryEventType.STOCK_SNAPSHOT and s.wms_level is not None:
        gap = ev.quantity - s.wms_level
        # a WMS count resets the ledger; an OMS count is compared with it, gap for gap
        jump = _squash(abs(gap if ev.source == "wms" else gap - h.oms_gap) / move)
    elif et == InventoryEventType.RESERVATION_RELEASED:
        released = _decay(h.released, h.churn_at, at, _CHURN_TAU_H) + ev.quantity
        reserved = _decay(h.reserved, h.churn_at, at, _CHURN_TAU_H)
        typical = h.move or 1.0
        # beyond a couple of orders' worth: single cancellations are part of normal flow
        churn = max(0.0, released - _CHURN_FREE * typical) / (
            released + reserved + _CHURN_PRIOR * typical)
    return {"adjust": adjust, "jump": jump, "churn": churn}


def _remember(h: StockHistory, s: StockState, ev: InventoryEvent, at: float) -> None:
    """Fold the event into the key's own scale (after it was scored)."""
    et, q = ev.event_type, abs(ev.quantity)
    if et in _FLOWS and q > 0:
        h.move = float(q) if h.move is None else h.move + _MOVE_ALPHA * (q - h.move)
    if et == InventoryEventType.STOCK_SNAPSHOT and ev.source == "oms":
        h.oms_gap = float(ev.quantity - s.wms_level) if s.wms_level is not None else 0.0
    elif et in (InventoryEventType.STOCK_RESERVED, InventoryEventType.RESERVATION_RELEASED):
        h.reserved = _decay(h.reserved, h.churn_at, at, _CHURN_TAU_H)
        h.released = _decay(h.released, h.churn_at, at, _CHURN_TAU_H)
        if et == InventoryEventType.STOCK_RESERVED:
            h.reserved += q
        else:
            h.released += q
        h.churn_at = at if h.churn_at is None else max(h.churn_at, at)


class StockAnomaly:
    """Half-Space Trees over :func:`stock_features`; one model shared by all keys.

    river's anomaly contract: ``score_one(x)`` (high = unusual) then ``learn_one(x)``.
    :meth:`observe` does both for one event of a key and remembers, in the key's history, an
    event whose score passed :attr:`threshold`: the running ``quantile`` of every score seen
    (after ``warmup`` scores), raised ``margin`` of the way towards the top score 1.

    Why both: the quantile adapts to the shop -- if routine cycle counts make 3 % of events,
    it sits at their score; the margin asks for *clearly* more than that, since HST scores
    come in near-ties (every routine +-1 count scores alike) and a bare quantile would flag
    whichever of them land just above it. In a calm shop nearly every event maps to the
    origin, the quantile is that point's score (~0) and the margin alone decides: 0.5 means
    the trees isolate the event from the bulk of the window before their last levels. An
    episode stays open until an event of the key arrives ``cooldown_h`` after the latest
    unusual one (an adjustment and the snapshot that shows it make one alert).

    Small trees on purpose (6 x height 5, ~17 kB pickled per partition): the features are
    few and mostly 0, and every inventory event pays for a score and a learn.
    """

    kinds = ("stock_anomaly",)

    def __init__(self, n_trees: int = 6, height: int = 5, window_size: int = 500,
                 quantile: float = 0.995, margin: float = 0.5, warmup: int = 2000,
                 cooldown_h: float = 6.0, seed: int = 42) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.quantile = quantile
        self.margin = margin
        self.warmup = warmup
        self.cooldown_h = cooldown_h
        self.seed = seed
        self.hst = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height,
                                          window_size=window_size, seed=seed)
        self.scores = stats.Quantile(quantile)
        self.n_scored = 0
        self.n_learned = 0
        self.n_flagged = 0

    # -- river contract --------------------------------------------------------------------
    def score_one(self, x: dict[str, float]) -> float:
        return float(self.hst.score_one(x))

    def learn_one(self, x: dict[str, float]) -> None:
        self.hst.learn_one(x)
        self.n_learned += 1

    @property
    def threshold(self) -> float:
        """Scores above this are unusual: ``margin`` of the way from the running
        ``quantile`` of the scores to the top score 1; infinite while warming up."""
        q = self.scores.get()
        if self.n_scored < self.warmup or q is None:
            return math.inf
        return float(q) + self.margin * (1.0 - float(q))

    # -- per key ---------------------------------------------------------------------------
    def observe(self, s: StockState, ev: InventoryEvent, at: float) -> float:
        """Score then learn one inventory event of key ``s``; returns its score."""
        h = _history(s)
        x = stock_features(h, s, ev, at)
        score = self.score_one(x)
        threshold = self.threshold
        self.learn_one(x)
        self.scores.update(score)
        self.n_scored += 1
        if score > threshold:
            self.n_flagged += 1
            h.anomaly = {
                "at": at, "score": round(score, 4), "threshold": round(threshold, 4),
                "event_type": str(ev.event_type), "event_id": ev.event_id,
                "source": ev.source, "quantity": ev.quantity,
                "on_hand_before": s.wms_level,
                "features": {k: round(v, 3) for k, v in x.items()},
            }
        _remember(h, s, ev, at)
        return score

    def deadlines(self, s: StockState) -> list[float]:
        return []

    def findings(self, s: StockState, at: float) -> list[Finding]:
        h = _known(s)
        last = h.anomaly if h is not None else None
        if last is None:
            return [Finding("stock_anomaly", False, Severity.MEDIUM,
                            ("unusual_inventory_flow",))]
        active = at - last["at"] < self.cooldown_h * H
        features: dict[str, float] = last["features"]
        top = max(FEATURES, key=lambda k: features.get(k, 0.0))
        reason = _REASONS[top] if features.get(top, 0.0) > 0 else "unusual_inventory_flow"
        return [Finding(
            "stock_anomaly", active, Severity.MEDIUM, (reason,),
            lambda: {"score": last["score"], "threshold": last["threshold"],
                     "event_type": last["event_type"], "event_id": last["event_id"],
                     "source": last["source"], "quantity": last["quantity"],
                     "on_hand_before": last["on_hand_before"], "at": _iso(last["at"]),
                     "features": dict(features),
                     "drivers": [_DRIVER_WORDS[k] for k in sorted(
                         FEATURES, key=lambda k: -features.get(k, 0.0))
                         if features.get(k, 0.0) >= 0.5]},
        )]


class StockoutForecast:
    """Will the key run out before its next receipt while orders still wait?

    ``learn_one`` folds one event of the key (inventory or order line) into its history,
    before the ledger applies it: new demand (units of an order first seen, or picked beyond
    what was open) feeds an event-time decayed rate with time constant ``tau_h``; receipts
    feed an EWMA of the interval between them. At event time ``at``::

        free       = on_hand - open_demand                    (>= 0, else oversell's turn)
        rate       = decayed demand units / ~tau_h            (units per hour)
        next       = last receipt + learned interval, if still ahead; else at + horizon_h
        projected  = free - rate * (next - at)
        active     : projected < 0 (opens), projected < rate * hold_h (stays open)

    so it fires only while the open orders are still covered (no overlap with ``oversell`` /
    ``stock_shortage``) and resolves with a receipt, or when the stock runs out for real.
    Without PO data the next receipt is a guess: ``horizon_h`` stands for the replenishment
    lead time. It trades lead time for precision (two 20k-order simulations: 12 h warned all
    8 oversold SKUs 4-6 h ahead and 1 other; 24 h warns 29 SKUs for one run's 4).
    """

    kinds = ("stockout_forecast",)

    def __init__(self, tau_h: float = 12.0, horizon_h: float = 12.0, hold_h: float = 2.0
                 ) -> None:
        self.tau_h = tau_h
        self.horizon_h = horizon_h
        self.hold_h = hold_h
        self.n_learned = 0

    def learn_one(self, s: StockState, event: InventoryEvent | dict[str, Any],
                  at: float) -> None:
        """Fold an inventory event or an order-line message of key ``s`` into its history
        (before the ledger applies it: new demand is what ``s.demand`` does not hold yet)."""
        h = _history(s)
        new = 0.0
        if isinstance(event, InventoryEvent):
            ev, et = event, event.event_type
            if et == InventoryEventType.STOCK_RECEIVED:
                if h.receipt_at is not None and at > h.receipt_at:
                    gap = (at - h.receipt_at) / H
                    h.receipt_every_h = gap if h.receipt_every_h is None else (
                        h.receipt_every_h + _RECEIPT_ALPHA * (gap - h.receipt_every_h))
                h.receipt_at = at if h.receipt_at is None else max(h.receipt_at, at)
            elif et == InventoryEventType.STOCK_RESERVED and ev.order_id:
                new = max(0, ev.quantity - s.demand.get(ev.order_id, 0))
            elif et == InventoryEventType.STOCK_PICKED and ev.source == "wms":
                new = max(0, ev.quantity - s.demand.get(ev.order_id, 0)) if ev.order_id \
                    else ev.quantity
        elif event.get("kind") == "line":
            oid = event["order_id"]
            new = max(0, int(event["quantity"]) - s.demand.get(oid, 0))
        if new > 0:
            h.demand = _decay(h.demand, h.demand_at, at, self.tau_h) + new
            h.demand_at = at if h.demand_at is None else max(h.demand_at, at)
            if h.demand_since is None:
                h.demand_since = at
        self.n_learned += 1

    def rate(self, h: StockHistory, at: float) -> float:
        """Units of new demand per hour at ``at``. A key younger than ``tau_h`` counts as
        ``tau_h`` old: early rates err low (no alert from the first order of a key)."""
        if h.demand_since is None:
            return 0.0
        age_h = max((at - h.demand_since) / H, self.tau_h)
        window_h = self.tau_h * (1.0 - math.exp(-age_h / self.tau_h))
        return _decay(h.demand, h.demand_at, at, self.tau_h) / window_h

    def next_receipt(self, h: StockHistory, at: float) -> tuple[float, str]:
        """(expected time of the next receipt, on what basis)."""
        if (h.receipt_at is not None and h.receipt_every_h is not None):
            expected = h.receipt_at + h.receipt_every_h * H
            if expected > at:
                return expected, "receipt_interval"
            return at + self.horizon_h * H, "receipt_overdue"
        return at + self.horizon_h * H, "no_receipt_history"

    def deadlines(self, s: StockState) -> list[float]:
        return []

    def findings(self, s: StockState, at: float) -> list[Finding]:
        h, level = _known(s), s.wms_level
        if h is None or level is None:
            return [Finding("stockout_forecast", False, Severity.MEDIUM,
                            ("stock_out_before_next_receipt",))]
        demand = sum(s.demand.values())
        free = level - demand
        rate = self.rate(h, at)
        expected, basis = self.next_receipt(h, at)
        hours = (expected - at) / H
        projected = free - rate * hours
        limit = rate * self.hold_h if s.book.is_open("stockout_forecast") else 0.0
        active = free >= 0 and rate > 0 and projected < limit
        if active:
            reason: tuple[str, ...] = ("stock_out_before_next_receipt", basis)
        else:  # says why an open forecast resolves: the rules took over, or it is covered
            reason = ("orders_now_short",) if free < 0 else ("covered_until_next_receipt",)
        return [Finding(
            "stockout_forecast", active, Severity.MEDIUM, reason,
            lambda: {"on_hand": level, "open_demand": demand,
                     "depletion_per_h": round(rate, 2),
                     "hours_to_stockout": round(max(free, 0) / rate, 1) if rate > 0 else None,
                     "next_receipt_expected_at": _iso(expected),
                     "next_receipt_basis": basis,
                     "projected_short_by": max(0, math.ceil(-projected))},
        )]


class StockModels:
    """The learned stock detectors of one partition, called by ``StockLogic``.

    Plain picklable objects: the partition checkpoints them whole. ``n_learned`` counts the
    events each model learned from.
    """

    kinds = STOCK_MODEL_KINDS

    def __init__(self, anomaly: StockAnomaly | None = None,
                 forecast: StockoutForecast | None = None) -> None:
        self.anomaly = anomaly if anomaly is not None else StockAnomaly()
        self.forecast = forecast if forecast is not None else StockoutForecast()

    @property
    def n_learned(self) -> dict[str, int]:
        return {"stock_anomaly": self.anomaly.n_learned,
                "stockout_forecast": self.forecast.n_learned}

    def learn_one(self, s: StockState, event: InventoryEvent | dict[str, Any],
                  at: float) -> None:
        """Before the ledger applies ``event``: score/learn it, update the key's history."""
        if isinstance(event, InventoryEvent):
            self.anomaly.observe(s, event, at)
        self.forecast.learn_one(s, event, at)

    def deadlines(self, s: StockState) -> list[float]:
        """Like the ledger rules, both change only with the key's events."""
        return []

    def findings(self, s: StockState, at: float) -> list[Finding]:
        return [*self.anomaly.findings(s, at), *self.forecast.findings(s, at)]
