"""Learned delay risk: river models behind the same detector interface as the rules.

* :class:`DelayRiskModel` -- StandardScaler | LogisticRegression on :func:`order_features`;
  p(late) for an order at any moment.
* :class:`EtaModel` -- two quantile regressions (p50, p90) of log remaining hours.
* :class:`PrecisionThreshold` -- picks the lowest alert threshold whose precision on
  labelled orders holds the target (default 0.6).
* :class:`RiskDetector` -- scores an order whenever it is evaluated, keeps the feature vectors
  in the shipment state (bounded), and learns them when the outcome is known (delivered, or
  the promise passed without delivery), each order weighing 1 however often it was scored.

One set of models per partition: the learning order inside a partition is the same live and
in replay, so results are reproducible; checkpointed with the partition's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from river import drift, linear_model, optim, stats

from delaywatch.core.alerts import Finding
from delaywatch.core.state import ShipmentState, Stage
from delaywatch.models.features import Aggregates, order_features
from delaywatch.schemas.alerts import Severity

__all__ = [
    "MAX_SCORINGS",
    "DelayRiskModel",
    "EtaModel",
    "ModelEvent",
    "OnlineScaler",
    "Outcome",
    "PrecisionThreshold",
    "Prediction",
    "RiskDetector",
    "Scoring",
]

H = 3600.0
MAX_SCORINGS = 3  # kept per order: the first (at placement) and the latest two
MODEL_NAME = "delay-risk-lr"
MODEL_VERSION = 1


class OnlineScaler:
    """Standardises numeric features only (running mean/variance, Welford); one-hot
    indicators (``name=value``) pass unchanged, so a rare category is not blown up to a huge
    scaled value that destabilises SGD."""

    def __init__(self) -> None:
        self.n: dict[str, float] = {}
        self.mean: dict[str, float] = {}
        self.m2: dict[str, float] = {}

    def learn_one(self, x: dict[str, float]) -> None:
        for k, v in x.items():
            if "=" in k:
                continue
            n = self.n.get(k, 0.0) + 1.0
            mean = self.mean.get(k, 0.0)
            delta = v - mean
            mean += delta / n
            self.n[k], self.mean[k] = n, mean
            self.m2[k] = self.m2.get(k, 0.0) + delta * (v - mean)

    def transform_one(self, x: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in x.items():
            if "=" in k:
                out[k] = v
                continue
            n = self.n.get(k, 0.0)
            if n < 2:
                out[k] = 0.0
                continue
            sd = math.sqrt(self.m2[k] / (n - 1))
            out[k] = (v - self.mean[k]) / sd if sd > 1e-9 else 0.0
        return out


class DelayRiskModel:
    """p(late | features), learned online. river's contract: learn_one / predict_proba_one."""

    def __init__(self, lr: float = 0.01, l2: float = 1e-4) -> None:
        self.lr = lr
        self.l2 = l2
        self.scaler = OnlineScaler()
        # Start at a typical late rate (~8 %) instead of p = 0.5: with delayed, rare labels the
        # intercept otherwise takes thousands of orders to get there (Brier 0.12 -> 0.08).
        self.clf = linear_model.LogisticRegression(
            optimizer=optim.SGD(lr), l2=l2, intercept_init=-2.5, intercept_lr=0.05)
        self.n_learned = 0

    def learn_one(self, x: dict[str, float], y: bool, w: float = 1.0) -> None:
        self.scaler.learn_one(x)
        self.clf.learn_one(self.scaler.transform_one(x), y, w=w)
        self.n_learned += 1

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        return self.clf.predict_proba_one(self.scaler.transform_one(x))

    def p_late(self, x: dict[str, float]) -> float:
        return float(self.predict_proba_one(x).get(True, 0.0))

    def contributions(self, x: dict[str, float], top: int = 3) -> list[tuple[str, float]]:
        """Features pushing p(late) up the most: weight x standardised value."""
        scaled = self.scaler.transform_one(x)
        parts = [(k, self.clf.weights.get(k, 0.0) * v) for k, v in scaled.items()]
        return sorted((p for p in parts if p[1] > 0), key=lambda p: -p[1])[:top]


class EtaModel:
    """Remaining time to delivery: a regression of log hours plus online quantiles of its
    residuals per stage (split-conformal style), so p90 is calibrated by construction
    rather than by how fast a quantile loss converges."""

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr
        self.scaler = OnlineScaler()
        self.reg = linear_model.LinearRegression(optimizer=optim.SGD(lr), intercept_lr=0.05)
        self.residuals: dict[str, tuple[stats.Quantile, stats.Quantile]] = {}
        self.n_learned = 0

    def _res(self, x: dict[str, float]) -> tuple[stats.Quantile, stats.Quantile]:
        stage = next((k for k in x if k.startswith("stage=")), "stage=?")
        if stage not in self.residuals:
            self.residuals[stage] = (stats.Quantile(0.5), stats.Quantile(0.9))
        return self.residuals[stage]

    def learn_one(self, x: dict[str, float], remaining_h: float, w: float = 1.0) -> None:
        y = math.log1p(max(remaining_h, 0.0))
        self.scaler.learn_one(x)
        z = self.scaler.transform_one(x)
        q50, q90 = self._res(x)
        residual = y - self.reg.predict_one(z)
        q50.update(residual)
        q90.update(residual)
        self.reg.learn_one(z, y, w=w)
        self.n_learned += 1

    def predict_one(self, x: dict[str, float]) -> tuple[float, float]:
        """(p50, p90) remaining hours; p90 >= p50."""
        base = self.reg.predict_one(self.scaler.transform_one(x))
        q50, q90 = self._res(x)
        lo = base + (q50.get() or 0.0)
        hi = base + (q90.get() or 0.0)
        lo_h = math.expm1(max(0.0, min(lo, 8.0)))
        return lo_h, max(lo_h, math.expm1(max(0.0, min(hi, 8.0))))


@dataclass(slots=True)
class PrecisionThreshold:
    """Lowest threshold (on a grid) whose precision over labelled orders >= target."""

    target: float = 0.6
    min_labels: int = 200
    grid: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(2, 20))
    alerted: list[int] = field(default_factory=list)  # per grid point: orders with max p >= t
    hits: list[int] = field(default_factory=list)  # ... of which late
    labels: int = 0

    def record(self, max_p: float, late: bool) -> None:
        if not self.alerted:
            self.alerted = [0] * len(self.grid)
            self.hits = [0] * len(self.grid)
        self.labels += 1
        for i, t in enumerate(self.grid):
            if max_p >= t:
                self.alerted[i] += 1
                self.hits[i] += int(late)

    @property
    def value(self) -> float:
        if self.labels < self.min_labels:
            return math.inf  # warming up: a model that has not learned yet alerts nobody
        for i, t in enumerate(self.grid):
            if self.alerted[i] >= 20 and self.hits[i] / self.alerted[i] >= self.target:
                return t
        return self.grid[-1]


@dataclass(slots=True)
class Scoring:
    at: float
    x: dict[str, float]
    p: float
    trigger: str


@dataclass(slots=True)
class Prediction:
    """One row of ``predictions.parquet`` (an output of replay, ignored by the worker)."""

    order_id: str
    scored_at: float
    trigger: str
    p_late: float
    eta_p50: float | None
    eta_p90: float | None
    promised_at: float | None
    x: dict[str, float] | None = None  # the feature vector, when asked for (keep_features)


@dataclass(slots=True)
class Outcome:
    """The label an order finally got (joins predictions to what happened)."""

    order_id: str
    delivered_at: float | None
    late: bool


@dataclass(slots=True)
class ModelEvent:
    """For the ``delaywatch.model`` topic and the log: drift detected, checkpoint written."""

    kind: str
    at: float
    detail: dict[str, Any]


@dataclass
class RiskDetector:
    """The learned detector of a partition: scores, learns from outcomes, raises delay_risk."""

    tz: ZoneInfo
    target_precision: float = 0.6
    model: DelayRiskModel = field(default_factory=DelayRiskModel)
    eta: EtaModel = field(default_factory=EtaModel)
    threshold: PrecisionThreshold = field(default_factory=PrecisionThreshold)
    aggregates: Aggregates = field(default_factory=Aggregates)
    drift_risk: drift.ADWIN = field(default_factory=drift.ADWIN)
    drift_events: int = 0
    kinds: tuple[str, ...] = ("delay_risk",)
    emitted: list[Any] = field(default_factory=list)  # predictions/drift events to hand out
    keep_features: bool = False  # put each scoring's features on its Prediction (analysis)

    def __post_init__(self) -> None:
        self.threshold.target = self.target_precision

    # -- detector interface --------------------------------------------------------------
    def deadlines(self, s: ShipmentState) -> list[float]:
        return []

    def findings(self, s: ShipmentState, at: float, pulse: str | None = None) -> list[Finding]:
        done = (s.cancelled_at is not None or s.delivered_at is not None
                or s.returned_at is not None)
        if done or s.placed_at is None or s.promised_at is None:
            return [Finding("delay_risk", False)]
        x = order_features(s, at, self.aggregates, self.tz)
        p = self.model.p_late(x)
        lo, hi = self.eta.predict_one(x)
        s.risk = (p, at + lo * H, at + hi * H)
        trigger = s.last_scan_type if s.scans else ("paid" if s.paid_at else "placed")
        self._keep(s, Scoring(at, x, p, trigger or "update"))
        self.emitted.append(Prediction(s.order_id, at, trigger or "update", p, at + lo * H,
                                       at + hi * H, s.promised_at,
                                       dict(x) if self.keep_features else None))
        active = p >= self.threshold.value and at < s.promised_at
        return [Finding("delay_risk", active, Severity.HIGH if p >= 0.8 else Severity.MEDIUM,
                        ("model_p_late_above_threshold",),
                        lambda: {"p_late": round(p, 3), "threshold": self.threshold.value,
                                 "drivers": self.explain(x)})]

    # -- outcomes -------------------------------------------------------------------------
    def outcome(self, s: ShipmentState, at: float, late: bool) -> None:
        """Learn every stored scoring of the order once its outcome is known."""
        if s.labelled or not s.scorings:
            return
        s.labelled = True
        w = 1.0 / len(s.scorings)
        max_p = 0.0
        for sc in s.scorings:
            if sc.at < (s.promised_at or math.inf):
                max_p = max(max_p, sc.p)
            self.model.learn_one(sc.x, late, w=w)
            if s.delivered_at is not None:
                self.eta.learn_one(sc.x, (s.delivered_at - sc.at) / H, w=w)
            # ADWIN on the log-loss stream: a lasting change in how wrong the model is
            self.drift_risk.update(-math.log(max(sc.p if late else 1 - sc.p, 1e-6)))
            if self.drift_risk.drift_detected:
                self.drift_events += 1
                self.emitted.append(ModelEvent("drift", at, {
                    "model": MODEL_NAME, "mean_log_loss": round(self.drift_risk.estimation, 4),
                    "learned": self.model.n_learned}))
        self.emitted.append(Outcome(s.order_id, s.delivered_at, late))
        self.threshold.record(max_p, late)
        self.aggregates.record_outcome(s, late)
        s.scorings = []

    def _keep(self, s: ShipmentState, sc: Scoring) -> None:
        if len(s.scorings) < MAX_SCORINGS:
            s.scorings.append(sc)
        else:  # keep the first (at placement) and the most recent ones
            s.scorings = [s.scorings[0], *s.scorings[2:], sc]

    def explain(self, x: dict[str, float]) -> list[str]:
        words = []
        for name, _ in self.model.contributions(x):
            value = x.get(name, 0.0)
            if "=" in name:
                words.append(name.replace("=", " is "))
            elif name.startswith("late_rate["):
                words.append(f"recent late rate for this {name[10:-1]} {value:.0%}")
            elif name.startswith("h_"):
                words.append(f"{name[2:].replace('_', ' ')} {value:.1f} h")
            else:
                words.append(f"{name} {value:g}")
        return words

    def explain_state(self, s: ShipmentState) -> list[str]:
        """Drivers of the latest scoring of this order, in words."""
        return self.explain(s.scorings[-1].x) if s.scorings else []

    def stage_changed(self, s: ShipmentState, old: Stage) -> None:
        if old < Stage.PAID <= s.stage:
            self.aggregates.backlog_change(s.warehouse_id, +1)
        if old < Stage.PICKED_UP <= s.stage and old >= Stage.PAID:
            self.aggregates.backlog_change(s.warehouse_id, -1)
