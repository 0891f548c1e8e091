"""Model checkpoints: everything a process has learned, in one file, written atomically.

A process (a Faust worker, a replay, ``delaywatch train``) holds one :class:`ModelSet`: the
delay-risk detector's learned parts and the stock models, shared by all its partitions.

Where checkpoints live, and why a local file: the models are per process, not per key or
partition, so they do not fit the partitioned changelog tables; a file written by rename is
atomic, needs no broker round trip, and can be copied, inspected and used to warm-start any
other worker or a replay (a model of the same shop is a good start for any worker of it).
Point ``DELAYWATCH_MODELS__CHECKPOINT_PATH`` at a volume that survives the worker. A worker
that crashes loses what it learned since its last checkpoint (at most
``checkpoint_interval_s`` of labels); the orders themselves are not lost.

>>> from zoneinfo import ZoneInfo
>>> from delaywatch.models.risk import MODEL_VERSION, RiskDetector
>>> ms = ModelSet(RiskDetector(ZoneInfo("Asia/Seoul")), None)
>>> clone = ModelSet.loads(ms.dumps(), RiskDetector(ZoneInfo("Asia/Seoul")), None)
>>> clone.probe() == ms.probe()
True
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delaywatch.core.state import ShipmentState, Stage
from delaywatch.models.features import order_features
from delaywatch.models.risk import MODEL_VERSION, RiskDetector
from delaywatch.models.stock_risk import StockModels

__all__ = ["CHECKPOINT_VERSION", "ModelSet", "probe_order"]

CHECKPOINT_VERSION = 1
_RISK_FIELDS = ("model", "eta", "threshold", "aggregates", "drift_risk", "drift_events")


def probe_order() -> ShipmentState:
    """A fixed order scored at checkpoint and restore: equal scores = the same model."""
    return ShipmentState(
        order_id="probe", placed_at=1_779_000_000.0, paid_at=1_779_000_600.0,
        promised_at=1_779_000_000.0 + 46 * 3600, stage=Stage.PAID, carrier="CJ",
        service_level="standard", warehouse_id="ICN-1", origin_region="ICN",
        destination_region="JEJ", customer_tier="standard", lines=[("SKU-1", 1)],
        order_value=25_000.0)


@dataclass
class ModelSet:
    risk: RiskDetector | None
    stock: StockModels | None

    def dumps(self) -> bytes:
        risk = ({f: getattr(self.risk, f) for f in _RISK_FIELDS}
                if self.risk is not None else None)
        return pickle.dumps({"version": CHECKPOINT_VERSION, "model_version": MODEL_VERSION,
                             "risk": risk, "stock": self.stock},
                            protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def loads(cls, data: bytes, risk: RiskDetector | None, stock: StockModels | None
              ) -> ModelSet:
        """Restore into the given (freshly built) detectors; a part that is off stays off."""
        blob: dict[str, Any] = pickle.loads(data)  # our own checkpoint file
        found = (blob.get("version"), blob.get("model_version"))
        if found != (CHECKPOINT_VERSION, MODEL_VERSION):
            raise ValueError(f"checkpoint (format, model) version {found} is not "
                             f"{(CHECKPOINT_VERSION, MODEL_VERSION)}: retrain or start cold")
        if risk is not None and blob.get("risk") is not None:
            for name, value in blob["risk"].items():
                setattr(risk, name, value)
            risk.threshold.target = risk.target_precision
        if stock is not None and blob.get("stock") is not None:
            stock.__dict__.update(blob["stock"].__dict__)
        return cls(risk, stock)

    def save(self, path: Path) -> int:
        """Write atomically (temp file + rename); returns the size in bytes."""
        data = self.dumps()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        return len(data)

    def load(self, path: Path) -> bool:
        if not path.exists():
            return False
        ModelSet.loads(path.read_bytes(), self.risk, self.stock)
        return True

    def probe(self) -> float | None:
        """p(late) of :func:`probe_order`; None when the delay model is off."""
        if self.risk is None:
            return None
        s = probe_order()
        at = s.paid_at or 0.0
        return round(self.risk.model.p_late(
            order_features(s, at, self.risk.aggregates, self.risk.tz)), 12)

    def learned(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.risk is not None:
            out["delay_risk"] = self.risk.model.n_learned
            out["eta"] = self.risk.eta.n_learned
        if self.stock is not None:
            out.update(self.stock.n_learned)
        return out
