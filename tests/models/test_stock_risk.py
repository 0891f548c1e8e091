"""Learned stock detectors: one contract over each of them, then what they are for.

Driven through the pure core (:class:`StockLogic.apply`), the way the engine calls it, so
alerts come out of the key's AlertBook exactly as in the worker.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from delaywatch.config import Thresholds
from delaywatch.core.alerts import Finding
from delaywatch.core.pipeline import Topology
from delaywatch.core.state import StockState
from delaywatch.core.stock import INVENTORY, StockLogic, lines_stream
from delaywatch.models.stock_risk import (
    FEATURES,
    STOCK_MODEL_KINDS,
    StockAnomaly,
    StockModels,
    StockoutForecast,
    stock_features,
)
from delaywatch.schemas.alerts import Alert, AlertStatus
from delaywatch.schemas.events import InventoryEvent

T0 = 1_714_957_200.0  # 2024-05-06 10:00 Asia/Seoul
H = 3600.0
LINES = lines_stream(0)


def inv(event_type: str, quantity: int, at: float, *, key: str = "W1:S", source: str = "wms",
        order_id: str | None = None, n: list[int] = [0]) -> InventoryEvent:  # noqa: B006
    n[0] += 1  # unique event ids across the test session
    warehouse, _, sku = key.partition(":")
    return InventoryEvent(event_id=f"ev-{n[0]}", occurred_at=datetime.fromtimestamp(at, UTC),
                          event_type=event_type, warehouse_id=warehouse, sku=sku,
                          quantity=quantity, source=source, order_id=order_id)


def line(order_id: str, quantity: int, kind: str = "line") -> dict[str, Any]:
    return {"kind": kind, "order_id": order_id, "quantity": quantity}


Step = tuple[str, Any, float]  # (stream, event, effective time)


@dataclass
class Shop:
    """StockLogic with learned models over any number of keys; collects its alerts."""

    logic: StockLogic
    states: dict[str, StockState] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)

    def state(self, key: str) -> StockState:
        if key not in self.states:
            self.states[key] = self.logic.new_state(key)
        return self.states[key]

    def apply(self, key: str, stream: str, event: Any, at: float) -> list[Alert]:
        out = [o for o in self.logic.apply(self.state(key), stream, event, at)
               if isinstance(o, Alert)]
        self.alerts += out
        return out

    def feed(self, steps: Iterator[tuple[str, str, Any, float]]) -> list[Alert]:
        return [a for key, stream, ev, at in steps for a in self.apply(key, stream, ev, at)]

    def of(self, kind: str, key: str | None = None) -> list[Alert]:
        return [a for a in self.alerts if a.kind == kind and (key is None or a.key == key)]


def normal_flow(keys: int, hours: int, seed: int = 1, start: float = T0,
                routine_adjustments: bool = True) -> Iterator[tuple[str, str, Any, float]]:
    """A calm shop: per key orders (line + reservation, picked ~2 h later), a cancellation
    now and then, a +-1 cycle count now and then, WMS/OMS counts every 6 h that agree with
    the ledger, restock below 40 units."""
    rng = random.Random(seed)
    level = {f"W1:K{k}": 200 for k in range(keys)}
    waiting: dict[str, list[tuple[float, str, int]]] = {k: [] for k in level}
    n = 0
    for key in level:
        yield key, INVENTORY, inv("stock_snapshot", 200, start, key=key), start
        yield key, INVENTORY, inv("stock_snapshot", 200, start, key=key, source="oms"), start
    for hour in range(hours):
        for key in level:
            t = start + hour * H + rng.uniform(60, 3000)
            for due, oid, q in [w for w in waiting[key] if w[0] <= t]:
                waiting[key].remove((due, oid, q))
                level[key] -= q
                yield key, INVENTORY, inv("stock_picked", q, due, key=key, order_id=oid), due
            if rng.random() < 0.8:
                n += 1
                oid, q = f"O-{n}", rng.choice((1, 1, 1, 2))
                yield key, LINES, line(oid, q), t
                yield key, INVENTORY, inv("stock_reserved", q, t + 60, key=key, source="oms",
                                          order_id=oid), t + 60
                if rng.random() < 0.03:
                    yield key, INVENTORY, inv("reservation_released", q, t + 600, key=key,
                                              source="oms", order_id=oid), t + 600
                    yield key, LINES, line(oid, q, "release"), t + 601
                else:
                    waiting[key].append((t + 2 * H, oid, q))
            if routine_adjustments and rng.random() < 0.05:
                d = rng.choice((-1, 1))
                level[key] += d
                yield key, INVENTORY, inv("stock_adjusted", d, t + 900, key=key), t + 900
            if level[key] < 40:
                level[key] += 200
                yield key, INVENTORY, inv("stock_received", 200, t + 1200, key=key), t + 1200
            if hour % 6 == 5:
                snap = start + (hour + 1) * H - 1
                for src in ("wms", "oms"):
                    yield key, INVENTORY, inv("stock_snapshot", level[key], snap, key=key,
                                              source=src), snap


def small_anomaly(seed: int = 0) -> StockAnomaly:
    return StockAnomaly(window_size=100, warmup=300, seed=seed)


def models(shop: Shop) -> StockModels:
    assert shop.logic.models is not None
    return shop.logic.models


@pytest.fixture
def shop(thresholds: Thresholds) -> Shop:
    return Shop(StockLogic(thresholds, models=StockModels(small_anomaly())))


# -- one contract over every learned stock detector -----------------------------------------

DETECTORS: dict[str, Callable[[], Any]] = {
    "StockAnomaly": small_anomaly,
    "StockoutForecast": StockoutForecast,
    "StockModels": lambda: StockModels(small_anomaly()),
}


def _learn(det: Any, s: StockState, stream: str, ev: Any, at: float) -> None:
    if isinstance(det, StockAnomaly):
        if stream == INVENTORY:
            det.observe(s, ev, at)
    else:
        det.learn_one(s, ev, at)


def busy(det: Any, thresholds: Thresholds) -> list[StockState]:
    """States after a short busy history (the detector learns from it too)."""
    logic = StockLogic(thresholds)
    out = []
    for key, wms in (("W1:A", 40), ("W1:B", 3), ("W1:C", None)):
        s = logic.new_state(key)
        steps: list[Step] = [
            (LINES, line("O-1", 2), T0),
            (INVENTORY, inv("stock_reserved", 2, T0 + 60, key=key, source="oms",
                            order_id="O-1"), T0 + 60),
            (INVENTORY, inv("stock_adjusted", -30, T0 + 120, key=key), T0 + 120),
            (INVENTORY, inv("stock_received", 50, T0 + 5 * H, key=key), T0 + 5 * H),
            (INVENTORY, inv("reservation_released", 2, T0 + 6 * H, key=key, source="oms",
                            order_id="O-1"), T0 + 6 * H),
        ]
        if wms is not None:
            steps.insert(0, (INVENTORY, inv("stock_snapshot", wms, T0 - H, key=key), T0 - H))
        for stream, ev, at in steps:
            _learn(det, s, stream, ev, at)
            logic.apply(s, stream, ev, at)
        out.append(s)
    return out


AT = [T0 - 1000 * H, T0, T0 + 7 * H, T0 + 100 * H]


@pytest.fixture(params=list(DETECTORS.values()), ids=list(DETECTORS))
def make(request) -> Callable[[], Any]:
    return request.param


def evidence(f: Finding) -> dict[str, Any]:
    return f.evidence() if callable(f.evidence) else f.evidence


def resolved(findings: list[Finding]) -> list[tuple[Any, ...]]:
    return [(f.kind, f.active, f.severity, f.reason_codes, evidence(f), f.pulse)
            for f in findings]


def test_declares_its_kinds(make) -> None:
    det = make()
    assert isinstance(det.kinds, tuple) and det.kinds
    assert set(det.kinds) <= set(STOCK_MODEL_KINDS)
    assert det.deadlines(StockState("W1:EMPTY")) == []


def test_empty_state_reports_each_kind_once_and_inactive(make) -> None:
    det = make()
    for at in AT:
        findings = det.findings(StockState("W1:EMPTY", "W1", "EMPTY"), at)
        assert [f.kind for f in findings] == list(det.kinds)
        assert not any(f.active for f in findings)


def test_findings_are_json_ready_and_leave_the_state_alone(make, thresholds) -> None:
    det = make()
    for s in busy(det, thresholds):
        before = copy.deepcopy(s)
        for at in AT:
            findings = det.findings(s, at)
            assert [f.kind for f in findings] == list(det.kinds)
            for f in findings:
                ev = evidence(f)
                assert orjson.loads(orjson.dumps(ev)) == ev
        assert s == before


def test_survives_pickling(make, thresholds) -> None:
    det = make()
    states = busy(det, thresholds)
    det2, states2 = pickle.loads(pickle.dumps((det, states)))
    for s, s2 in zip(states, states2, strict=True):
        assert s2 == s
        for at in AT:
            assert resolved(det2.findings(s2, at)) == resolved(det.findings(s, at))


def test_deterministic(make, thresholds) -> None:
    a, b = make(), make()
    for s, s2 in zip(busy(a, thresholds), busy(b, thresholds), strict=True):
        assert s == s2
        for at in AT:
            assert resolved(a.findings(s, at)) == resolved(b.findings(s2, at))


def test_odd_input_is_harmless(make, thresholds) -> None:
    det, s = make(), StockLogic(thresholds).new_state("W1:ODD")
    odd: list[Step] = [
        (INVENTORY, inv("stock_picked", 3, T0, key="W1:ODD"), T0),  # no ledger, no order
        (INVENTORY, inv("stock_adjusted", 0, T0, key="W1:ODD"), T0),
        (INVENTORY, inv("reservation_released", 5, T0 + 1, key="W1:ODD", source="oms",
                        order_id="never-reserved"), T0 + 1),
        (LINES, line("O-x", 1, "release"), T0 + 2),
        (INVENTORY, inv("stock_snapshot", 0, T0 + 3, key="W1:ODD"), T0 + 3),
        (INVENTORY, inv("stock_snapshot", 10_000_000, T0 + 4, key="W1:ODD", source="oms"),
         T0 + 4),
        (INVENTORY, inv("stock_adjusted", -10_000_000, T0 - 99 * H, key="W1:ODD"),
         T0 - 99 * H),  # earlier than everything before it
        (INVENTORY, inv("stock_received", 1, T0 - 100 * H, key="W1:ODD"), T0 - 100 * H),
        (LINES, line("O-y", 100_000), T0 + 5),
    ]
    for stream, ev, at in odd:
        if stream == INVENTORY and s.history is not None:
            x = stock_features(s.history, s, ev, at)
            assert set(x) == set(FEATURES) and all(0.0 <= v <= 1.0 for v in x.values())
        _learn(det, s, stream, ev, at)
        for at2 in AT:
            for f in det.findings(s, at2):
                orjson.dumps(evidence(f))


def test_state_checkpointed_before_the_history_field_still_works(thresholds) -> None:
    s = StockLogic(thresholds).new_state("W1:OLD")
    # what a pre-#4 table checkpoint holds: the slots dataclass default, no ``history``
    legacy = (None, {f.name: getattr(s, f.name) for f in dataclasses.fields(s)
                     if f.name != "history"})
    old = StockState.__new__(StockState)
    old.__setstate__(legacy)
    old = pickle.loads(pickle.dumps(old))
    logic = StockLogic(thresholds, models=StockModels(small_anomaly()))
    logic.apply(old, INVENTORY, inv("stock_snapshot", 5, T0, key="W1:OLD"), T0)
    logic.apply(old, LINES, line("O-1", 1), T0 + 60)
    assert old.history is not None and old.history.demand == 1


def test_scores_before_learning_then_learns(shop) -> None:
    anomaly = models(shop).anomaly
    shop.feed(normal_flow(keys=2, hours=3))
    assert anomaly.n_scored == anomaly.n_learned > 0
    assert models(shop).n_learned["stockout_forecast"] > anomaly.n_learned  # + lines


def test_pickle_round_trip_gives_identical_scores() -> None:
    steps = list(normal_flow(keys=5, hours=30))
    half = len(steps) // 2
    a, states = small_anomaly(), dict[str, StockState]()
    for key, stream, ev, at in steps[:half]:
        if stream == INVENTORY:
            a.observe(states.setdefault(key, StockState(key)), ev, at)
    b, states_b = pickle.loads(pickle.dumps((a, states)))
    assert len(pickle.dumps(a)) < 50_000
    scores_a, scores_b = [], []
    for key, stream, ev, at in steps[half:]:
        if stream == INVENTORY:
            scores_a.append(a.observe(states.setdefault(key, StockState(key)), ev, at))
            scores_b.append(b.observe(states_b.setdefault(key, StockState(key)), ev, at))
    assert scores_a == scores_b and max(scores_a) > 0


def test_same_seed_same_scores_and_alerts(thresholds) -> None:
    runs = []
    for _ in range(2):
        shop = Shop(StockLogic(thresholds, models=StockModels(small_anomaly(seed=3))))
        shop.feed(normal_flow(keys=5, hours=40, seed=9))
        shop.apply("W1:K1", INVENTORY, inv("stock_adjusted", -90, T0 + 41 * H, key="W1:K1"),
                   T0 + 41 * H)
        alerts = [a.model_dump() for a in shop.alerts]
        for a in alerts:  # event ids count up across the session
            a["evidence"].pop("event_id", None)
        runs.append((alerts, models(shop).anomaly.threshold))
    assert runs[0] == runs[1] and runs[0][0]


# -- stock_anomaly --------------------------------------------------------------------------

def test_sudden_large_adjustment_scores_above_the_threshold_after_warm_up(shop) -> None:
    shop.feed(normal_flow(keys=20, hours=48))
    anomaly = models(shop).anomaly
    assert anomaly.n_scored > anomaly.warmup
    # routine +-1 counts, cancellations and agreeing snapshots: nothing unusual
    assert shop.of("stock_anomaly") == []

    key, at = "W1:K7", T0 + 48 * H + 600
    before = shop.state(key).wms_level
    threshold = anomaly.threshold
    [alert] = shop.apply(key, INVENTORY, inv("stock_adjusted", -60, at, key=key), at)
    assert (alert.kind, alert.status, alert.category) == ("stock_anomaly", AlertStatus.OPEN,
                                                           "stock")
    assert alert.reason_codes == ["unusual_adjustment"]
    ev = alert.evidence
    assert ev["score"] > ev["threshold"] == round(threshold, 4)
    assert (ev["event_type"], ev["quantity"], ev["on_hand_before"]) == (
        "stock_adjusted", -60, before)
    assert ev["drivers"] == ["stock adjustment large for this SKU"]

    # the key's next events within the cool-down keep it open; later ones resolve it
    assert shop.apply(key, INVENTORY, inv("stock_picked", 1, at + H, key=key), at + H) == []
    later = at + anomaly.cooldown_h * H + 60
    [done] = shop.apply(key, INVENTORY, inv("stock_picked", 1, later, key=key), later)
    assert (done.kind, done.status, done.alert_id) == ("stock_anomaly", AlertStatus.RESOLVED,
                                                       alert.alert_id)


def test_nothing_is_unusual_while_warming_up(shop) -> None:
    shop.apply("W1:K0", INVENTORY, inv("stock_snapshot", 100, T0, key="W1:K0"), T0)
    for i in range(1, 50):
        at = T0 + i * 60
        shop.apply("W1:K0", INVENTORY, inv("stock_adjusted", -40 * (i % 2) or 40, at,
                                           key="W1:K0"), at)
    assert models(shop).anomaly.n_scored < models(shop).anomaly.warmup
    assert shop.of("stock_anomaly") == []


def test_a_lasting_oms_gap_is_one_jump_not_one_per_snapshot(shop) -> None:
    shop.feed(normal_flow(keys=20, hours=48, routine_adjustments=False))
    key, s = "W1:K3", shop.state("W1:K3")
    scores = []
    for i in range(1, 4):  # OMS keeps believing in 25 units the WMS does not have
        at = T0 + (48 + 6 * i) * H
        level = s.wms_level
        shop.apply(key, INVENTORY, inv("stock_snapshot", level, at, key=key), at)
        ev = inv("stock_snapshot", level + 25, at + 60, key=key, source="oms")
        scores.append(stock_features(s.history, s, ev, at + 60)["jump"])
        shop.apply(key, INVENTORY, ev, at + 60)
    assert scores[0] > 0.5 and scores[1:] == [0.0, 0.0]
    [opened] = shop.of("stock_anomaly", key)[:1]
    assert opened.reason_codes == ["snapshot_jump"]


# -- stockout_forecast ----------------------------------------------------------------------

def depleting(shop: Shop, key: str, on_hand: int, hours: int, per_h: int = 4,
              start: float = T0) -> None:
    """Orders of ``per_h`` units an hour, each picked 3 h later; no receipt."""
    shop.apply(key, INVENTORY, inv("stock_snapshot", on_hand, start, key=key), start)
    for i in range(hours):
        at = start + i * H + 60
        oid = f"{key}-O-{i}"
        shop.apply(key, LINES, line(oid, per_h), at)
        shop.apply(key, INVENTORY, inv("stock_reserved", per_h, at + 60, key=key,
                                       source="oms", order_id=oid), at + 60)
        if i >= 3:
            old = f"{key}-O-{i - 3}"
            shop.apply(key, INVENTORY, inv("stock_picked", per_h, at + 120, key=key,
                                           order_id=old), at + 120)


def test_steady_depletion_forecasts_the_stock_out_before_it_happens(shop) -> None:
    key = "W1:DEPLETE"
    depleting(shop, key, on_hand=120, hours=40)
    forecast, oversell = shop.of("stockout_forecast", key), shop.of("oversell", key)
    assert oversell and forecast
    opened = forecast[0]
    assert opened.status == AlertStatus.OPEN and opened.category == "stock"
    # early enough to act: well before the first order goes short
    assert (oversell[0].detected_at - opened.detected_at).total_seconds() >= 6 * H
    ev = opened.evidence
    assert set(ev) >= {"on_hand", "open_demand", "depletion_per_h", "hours_to_stockout",
                       "next_receipt_expected_at"}
    assert ev["on_hand"] >= ev["open_demand"]  # orders are still covered: not a shortage yet
    assert 3.0 <= ev["depletion_per_h"] <= 5.0
    assert ev["hours_to_stockout"] < models(shop).forecast.horizon_h
    assert opened.reason_codes == ["stock_out_before_next_receipt", "no_receipt_history"]
    # once orders are short, the ledger rules take over: the forecast resolves, not repeats
    assert [(a.status, a.reason_codes) for a in forecast[1:]] == [
        (AlertStatus.RESOLVED, ["orders_now_short"])]
    assert forecast[1].detected_at == oversell[0].detected_at


def test_the_forecast_resolves_after_a_receipt(shop) -> None:
    key = "W1:DEPLETE"
    depleting(shop, key, on_hand=120, hours=20)
    [opened] = shop.of("stockout_forecast", key)
    assert shop.of("oversell", key) == []
    at = T0 + 20 * H
    [done] = shop.apply(key, INVENTORY, inv("stock_received", 300, at, key=key), at)
    assert (done.kind, done.status, done.alert_id) == ("stockout_forecast",
                                                       AlertStatus.RESOLVED, opened.alert_id)
    assert done.reason_codes == ["covered_until_next_receipt"]


def test_no_forecast_while_stock_is_ample(shop) -> None:
    depleting(shop, "W1:AMPLE", on_hand=10_000, hours=40)
    assert shop.alerts == []


def test_the_receipt_rhythm_sets_the_horizon() -> None:
    f, s = StockoutForecast(horizon_h=12.0), StockState("W1:R")
    for day in range(3):
        f.learn_one(s, inv("stock_received", 100, T0 + day * 48 * H, key="W1:R"),
                    T0 + day * 48 * H)
    assert s.history is not None
    assert f.next_receipt(s.history, T0 + 100 * H) == (T0 + 144 * H, "receipt_interval")
    # overdue: no telling when, look the configured horizon ahead
    assert f.next_receipt(s.history, T0 + 150 * H) == (T0 + 162 * H, "receipt_overdue")


def test_a_key_younger_than_tau_does_not_overstate_its_rate() -> None:
    f, s = StockoutForecast(tau_h=12.0), StockState("W1:NEW")
    f.learn_one(s, line("O-1", 5), T0)
    assert s.history is not None
    assert f.rate(s.history, T0 + 60) < 1.0  # counted as tau_h old, not 5 units a minute


# -- wiring -----------------------------------------------------------------------------------

@pytest.mark.parametrize("enabled", [False, True])
def test_stock_partitions_get_models_only_when_enabled(make_settings, thresholds,
                                                       enabled) -> None:
    settings = make_settings(partitions=2)
    settings.models.enabled = enabled
    topo = Topology(settings, thresholds)
    logics = [p.engine.logic for p in topo.stocks]
    assert all(isinstance(logic, StockLogic) for logic in logics)
    learned = [logic.models for logic in logics if isinstance(logic, StockLogic)]
    if enabled:
        assert all(isinstance(m, StockModels) for m in learned)
        a, b = learned  # one model set per process, shared by its partitions
        assert a is b is topo.models.stock
    else:
        assert learned == [None, None]
