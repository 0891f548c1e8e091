"""Raw PII (the ``customer`` block of order events) never reaches state, alerts or logs."""

from __future__ import annotations

import logging
import pickle
from typing import Any

from delaywatch.core.pipeline import Topology
from delaywatch.replay import record_bytes, role_of
from delaywatch.schemas.dlq import DeadLetter, SourceRef


def pii_strings(records: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for r in records:
        v = r.get("value")
        if isinstance(v, dict) and isinstance(v.get("customer"), dict):
            out.update(str(x) for x in v["customer"].values() if x and len(str(x)) >= 5)
    return out


def test_no_pii_in_alerts_state_or_logs(small_world, make_settings, thresholds, caplog):
    records, _ = small_world
    secrets = pii_strings(records)
    assert len(secrets) > 100, "the simulator must send PII for this test to mean anything"
    settings = make_settings(partitions=2)
    topo = Topology(settings, thresholds)
    alerts = []
    state = b""
    with caplog.at_level(logging.DEBUG):
        for i, rec in enumerate(records):
            if i % 500 == 0:  # mid-stream: events still waiting in state are pickled too
                state += b"".join(pickle.dumps(ks) for part in topo.shipments
                                  for ks in part.engine.states.values())
            role = role_of(rec["topic"], settings)
            src = SourceRef(topic=rec["topic"], offset=i, key=rec.get("key"))
            for out in topo.feed(role or "", rec.get("key"), record_bytes(rec), src):
                if out.__class__.__name__ == "Alert":
                    alerts.append(out.model_dump_json())
        alerts.extend(a.model_dump_json() for a in topo.flush() if hasattr(a, "alert_id"))
    assert alerts
    blob = "\n".join(alerts) + caplog.text
    state += b"".join(pickle.dumps(ks) for part in (*topo.shipments, *topo.stocks)
                      for ks in part.engine.states.values())
    for s in secrets:
        assert s not in blob, f"PII {s[:3]}… in an alert or log line"
        assert s.encode() not in state, f"PII {s[:3]}… in table state"


def test_no_pii_in_model_checkpoint_predictions_or_stored_vectors(small_world, make_settings,
                                                                   thresholds):
    """With the learned models on: the checkpoint, every prediction (with its feature vector,
    as analysts get them) and the scorings kept in state."""
    records, _ = small_world
    secrets = pii_strings(records)
    settings = make_settings(partitions=2)
    settings.models.enabled = True
    topo = Topology(settings, thresholds)
    topo.risk.keep_features = True
    outputs = []

    def keep(outs):  # every output but dead letters (the DLQ keeps the original bytes)
        outputs.extend(repr(o) for o in outs if not isinstance(o, DeadLetter))

    for i, rec in enumerate(records):
        role = role_of(rec["topic"], settings)
        src = SourceRef(topic=rec["topic"], offset=i, key=rec.get("key"))
        keep(topo.feed(role or "", rec.get("key"), record_bytes(rec), src))
    keep(topo.flush())
    assert any("Prediction(" in o and "x={" in o for o in outputs)
    blob = "\n".join(outputs)
    checkpoint = topo.models.dumps()
    state = b"".join(pickle.dumps(ks) for part in topo.shipments
                     for ks in part.engine.states.values())
    for s in secrets:
        assert s not in blob, f"PII {s[:3]}… in a prediction or other output"
        assert s.encode() not in checkpoint, f"PII {s[:3]}… in the model checkpoint"
        assert s.encode() not in state, f"PII {s[:3]}… in stored feature vectors"
