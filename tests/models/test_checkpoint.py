"""Checkpoints: a restored model set is the same model, and a bad file never stops a worker."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from delaywatch.core.pipeline import make_models
from delaywatch.models.checkpoint import ModelSet
from delaywatch.models.risk import ResidualWindow


def _trained(make_settings, thresholds):
    settings = make_settings(partitions=1)
    settings.models.enabled = True
    models = make_models(settings, thresholds)
    assert models.risk is not None
    rnd = random.Random(5)
    for _ in range(300):
        x = {"stage=paid": 1.0, "h_to_promise": rnd.uniform(0, 40),
             f"carrier={rnd.choice('AB')}": 1.0}
        models.risk.model.learn_one(x, x["h_to_promise"] < 10)
        models.risk.eta.learn_one(x, rnd.uniform(1, 30))
        models.risk.threshold.record(rnd.random(), rnd.random() < 0.5)
    return settings, models


def test_round_trip_restores_the_same_model(make_settings, thresholds, tmp_path):
    settings, models = _trained(make_settings, thresholds)
    path = tmp_path / "m.ckpt"
    assert models.save(path) > 0 and not list(tmp_path.glob("*.tmp*"))
    settings.models.checkpoint_path = path
    restored = make_models(settings, thresholds)  # a restarting worker
    assert restored.probe() == models.probe() and restored.probe() is not None
    assert restored.learned() == models.learned()
    assert restored.risk.eta.predict_one({"stage=paid": 1.0}) == models.risk.eta.predict_one(
        {"stage=paid": 1.0})
    assert restored.risk.threshold.value == models.risk.threshold.value
    # and it keeps learning from there exactly as the original would
    for m in (models, restored):
        m.risk.model.learn_one({"stage=paid": 1.0, "carrier=A": 1.0}, True)
    assert restored.probe() == models.probe()


def test_incompatible_or_damaged_checkpoint_starts_cold(make_settings, thresholds, tmp_path):
    settings, models = _trained(make_settings, thresholds)
    cold = make_models(settings, thresholds).probe()
    blob = pickle.loads(models.dumps())
    blob["model_version"] = -1
    old = tmp_path / "old.ckpt"
    old.write_bytes(pickle.dumps(blob))
    with pytest.raises(ValueError, match="retrain or start cold"):
        ModelSet.loads(old.read_bytes(), models.risk, models.stock)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"\x80\x05not a pickle")
    for path in (old, broken):
        settings.models.checkpoint_path = path
        assert make_models(settings, thresholds).probe() == cold


def test_residual_window_holds_coverage_on_a_biased_stream():
    """Residuals learned small-first (short deliveries are learned before long ones): the
    adaptive level still brings coverage of the upper quantile near its target."""
    rnd = random.Random(1)
    w = ResidualWindow(size=500, coverage=0.9)
    covered = total = 0
    for i in range(20000):
        r = rnd.gauss(0, 1) + (0.8 if i > 10000 else 0.0)  # a shift half-way
        if i > 12000:
            covered += r <= w.upper()
            total += 1
        w.update(r)
    assert 0.86 <= covered / total <= 0.94


def test_checkpoint_from_before_the_caches_loads_the_same_model(make_settings, thresholds):
    """Checkpoints written before the scaler's (mean, sd) cache and the threshold's cached
    value existed restore to the same scores (an upgrade must not cold-start the models)."""
    _, models = _trained(make_settings, thresholds)
    risk = models.risk
    x = {"stage=paid": 1.0, "h_to_promise": 7.0, "carrier=A": 1.0}
    want = (risk.model.p_late(x), risk.eta.predict_one(x), risk.threshold.value)

    for group in risk.model.groups.values():
        del group.scaler.__dict__["stats"]
    old_threshold = risk.threshold.__reduce_ex__(5)[2]
    del old_threshold[1]["cached"]
    scaler = pickle.loads(pickle.dumps(next(iter(risk.model.groups.values())).scaler))
    assert scaler.stats, "stats rebuilt from the running moments"
    restored_models = pickle.loads(pickle.dumps(risk.model))
    threshold = type(risk.threshold).__new__(type(risk.threshold))
    threshold.__setstate__(old_threshold)
    got = (restored_models.p_late(x), risk.eta.predict_one(x), threshold.value)
    assert got == want


def test_kept_scorings_survive_the_state_pickle_exactly_and_smaller(make_settings, thresholds):
    """The feature vectors an order keeps until its label are float32 in memory and in the
    changelog: a worker that restores the order learns exactly what one without a restart
    learns, from a state that stores each value in 4 bytes."""
    from delaywatch.models.checkpoint import probe_order

    _, models = _trained(make_settings, thresholds)
    risk = models.risk
    s = probe_order()
    s.attributes = {"weight_kg": 1.63, "huge": 1e300, "channel": "app"}
    for i in range(3):
        risk.findings(s, s.paid_at + i * 3600.0)
    assert s.scorings and any(v != 0.0 and v != 1.0 for v in s.scorings[0].x.values())
    restored = pickle.loads(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL))
    assert [(r.at, r.x, r.p, r.trigger, r.stage) for r in restored.scorings] == [
        (o.at, o.x, o.p, o.trigger, o.stage) for o in s.scorings]
    assert math.isfinite(s.scorings[0].x["attr.huge"])  # clamped to float32's range
    as_doubles = pickle.dumps([(o.at, dict(o.x), o.p, o.trigger, o.stage) for o in s.scorings])
    assert len(pickle.dumps(s.scorings)) < 0.8 * len(as_doubles)
    twin = pickle.loads(pickle.dumps(models.dumps()))
    twin = ModelSet.loads(twin, *_fresh(make_settings, thresholds))
    for m, state in ((models, s), (twin, restored)):
        m.risk.settle(state, state.promised_at)
    assert twin.probe() == models.probe()


def _fresh(make_settings, thresholds):
    settings = make_settings(partitions=1)
    settings.models.enabled = True
    fresh = make_models(settings, thresholds)
    return fresh.risk, fresh.stock
