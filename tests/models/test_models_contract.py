"""One contract over every learned model: odd input, pickling, determinism."""

from __future__ import annotations

import math
import pickle
import random
from zoneinfo import ZoneInfo

import pytest

from delaywatch.core.state import ShipmentState, Stage
from delaywatch.models.risk import (
    MAX_SCORINGS,
    DelayRiskModel,
    EtaModel,
    OnlineScaler,
    Outcome,
    PrecisionThreshold,
    RiskDetector,
)


def _x(rnd: random.Random) -> dict[str, float]:
    return {"h_to_promise": rnd.uniform(-5, 40), "scans": float(rnd.randint(0, 8)),
            f"carrier={rnd.choice('ABC')}": 1.0, "attr.weight_kg": rnd.uniform(0, 20)}


def _train(model, seed: int = 1) -> list[float]:
    rnd = random.Random(seed)
    outs = []
    for _ in range(300):
        x = _x(rnd)
        late = x["h_to_promise"] < 5 or "carrier=C" in x
        if isinstance(model, EtaModel):
            model.learn_one(x, max(0.0, x["h_to_promise"] + rnd.uniform(-3, 3)))
            outs.append(model.predict_one(x)[1])
        else:
            model.learn_one(x, late)
            outs.append(model.p_late(x))
    return outs


@pytest.mark.parametrize("make", [DelayRiskModel, EtaModel], ids=["risk", "eta"])
def test_learned_model_contract(make):
    model = make()
    # empty and odd input never raises
    for x in ({}, {"only=cat": 1.0}, {"num": 0.0}, {"num": 1e12}):
        if isinstance(model, EtaModel):
            lo, hi = model.predict_one(x)
            assert 0 <= lo <= hi
            model.learn_one(x, 5.0)
        else:
            assert 0.0 <= model.p_late(x) <= 1.0
            model.learn_one(x, True)
    # deterministic for the same data, and survives a pickle round trip mid-stream
    a, b = make(), make()
    assert _train(a) == _train(b)
    clone = pickle.loads(pickle.dumps(a))
    x = _x(random.Random(99))
    if isinstance(a, EtaModel):
        assert clone.predict_one(x) == a.predict_one(x)
    else:
        assert clone.p_late(x) == a.p_late(x)


def test_risk_model_learns_a_simple_rule():
    model = DelayRiskModel(lr=0.05)
    _train(model)
    assert model.p_late({"h_to_promise": 1.0, "carrier=C": 1.0}) > model.p_late(
        {"h_to_promise": 30.0, "carrier=A": 1.0})


def test_scaler_centres_indicators_without_scaling_them():
    sc = OnlineScaler()
    for v, cat in ((1.0, "c=x"), (2.0, "c=x"), (3.0, "c=x"), (4.0, "c=y")):
        sc.learn_one({"n": v, cat: 1.0})
    out = sc.transform_one({"n": 2.5, "c=x": 1.0, "always=on": 1.0})
    assert out["n"] == 0.0 and out["c=x"] == 0.25  # seen on 3 of 4 vectors
    assert out["always=on"] == 1.0  # never learned: no frequency yet


def test_detector_keeps_first_scoring_of_each_stage_and_the_latest():
    det = RiskDetector(ZoneInfo("Asia/Seoul"))
    s = ShipmentState("O-1", placed_at=0.0, promised_at=100 * 3600.0, stage=Stage.PAID)
    for i in range(5):
        det.findings(s, i * 3600.0)
    assert [sc.at for sc in s.scorings] == [0.0, 4 * 3600.0]  # first and latest of PAID
    s.stage = Stage.PICKED_UP
    for i in range(5, 9):
        det.findings(s, i * 3600.0)
    assert [sc.at / 3600 for sc in s.scorings] == [0, 4, 5, 8]
    for _ in range(20):  # bounded however long the journey
        s.stage = Stage(min(int(s.stage) + 1, int(Stage.OUT_FOR_DELIVERY)))
        det.findings(s, 9 * 3600.0)
    assert len(s.scorings) <= MAX_SCORINGS


def test_labels_are_learned_at_the_promise_once_and_eta_at_delivery():
    det = RiskDetector(ZoneInfo("Asia/Seoul"))
    s = ShipmentState("O-1", placed_at=0.0, promised_at=50 * 3600.0, stage=Stage.PAID)
    det.findings(s, 0.0)
    assert det.deadlines(s) == [50 * 3600.0]
    s.delivered_at = 30 * 3600.0  # on time: the label waits for the promise
    det.delivered(s, 30 * 3600.0)
    assert det.eta.n_learned == 1 and det.model.n_learned == 0
    det.settle(s, 40 * 3600.0)  # before the promise: nothing
    assert det.model.n_learned == 0
    det.settle(s, 50 * 3600.0)
    det.settle(s, 60 * 3600.0)
    outcomes = [e for e in det.emitted if isinstance(e, Outcome)]
    assert det.model.n_learned == 1 and s.labelled and not s.scorings
    assert [o.late for o in outcomes] == [False]
    # late: settled at the promise without delivery, ETA learned when it finally arrives
    late = ShipmentState("O-2", placed_at=0.0, promised_at=50 * 3600.0, stage=Stage.PAID)
    det.findings(late, 0.0)
    det.settle(late, 50 * 3600.0)
    assert det.model.n_learned == 2 and late.scorings
    late.delivered_at = 70 * 3600.0
    det.delivered(late, 70 * 3600.0)
    assert det.eta.n_learned == 2 and not late.scorings


def test_precision_threshold_holds_the_target_where_it_has_evidence():
    th = PrecisionThreshold(target=0.6, min_labels=100)
    assert th.value == math.inf  # warming up
    rnd = random.Random(3)
    for _ in range(3000):  # calibrated scores: p is the chance of being late
        p = rnd.random()
        th.record(p, rnd.random() < p)
    # precision over [t, 1] is (1 + t) / 2: >= 0.6 from t = 0.2, plus the Wilson margin
    assert 0.2 <= th.value <= 0.35
    # scores seen only near 0.05 and 0.95: no evidence for a middle threshold
    gap = PrecisionThreshold(target=0.6, min_labels=100)
    for i in range(1000):
        gap.record(0.96 if i % 10 == 0 else 0.05, i % 10 == 0)
    assert gap.value == 0.95
    # a model no better than chance never alerts
    bad = PrecisionThreshold(target=0.6, min_labels=100)
    for _ in range(2000):
        bad.record(rnd.random(), rnd.random() < 0.1)
    assert bad.value == math.inf
