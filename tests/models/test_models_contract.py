"""One contract over every learned model: odd input, pickling, determinism."""

from __future__ import annotations

import pickle
import random
from zoneinfo import ZoneInfo

import pytest

from delaywatch.core.state import ShipmentState, Stage
from delaywatch.models.risk import DelayRiskModel, EtaModel, OnlineScaler, RiskDetector


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


def test_scaler_leaves_indicators_alone():
    sc = OnlineScaler()
    for v in (1.0, 2.0, 3.0):
        sc.learn_one({"n": v, "c=x": 1.0})
    assert sc.transform_one({"n": 2.0, "c=x": 1.0}) == {"n": 0.0, "c=x": 1.0}


def test_detector_keeps_few_scorings_and_learns_each_order_once():
    det = RiskDetector(ZoneInfo("Asia/Seoul"))
    s = ShipmentState("O-1", placed_at=0.0, promised_at=100 * 3600.0, stage=Stage.PAID)
    for i in range(10):
        det.findings(s, i * 3600.0)
    assert len(s.scorings) == 3 and s.scorings[0].at == 0.0
    det.outcome(s, 50 * 3600.0, late=False)
    det.outcome(s, 60 * 3600.0, late=True)
    assert det.model.n_learned == 3 and s.labelled and not s.scorings
