"""Waiting for a live worker to finish a known input."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from delaywatch.config import Settings
from delaywatch.kafka_io import read_all


def alert_signature(alerts: list[dict[str, Any]]) -> Counter[tuple[str, str, str, Any]]:
    """Alert messages by identity: one episode's ETA/stage-change notices are numbered."""
    return Counter((a["alert_id"], a["kind"], a["status"], _notice(a)) for a in alerts)


def same_alerts(live: list[dict[str, Any]], expected: list[Any]
                ) -> Counter[tuple[str, str, str, Any]]:
    """Assert the live alert messages are the expected run's (pydantic Alerts), re-sent
    duplicates aside (at-least-once: a redelivered record may repeat an alert, never invent
    or lose one); returns the live ones by identity, duplicates counted."""
    got = alert_signature(live)
    want = alert_signature([a.model_dump(mode="json") for a in expected])
    missing, extra = set(want) - set(got), set(got) - set(want)
    assert not missing and not extra, (
        f"missing {len(missing)} {sorted(missing)[:5]} extra {len(extra)} {sorted(extra)[:5]}")
    return got


def _notice(a: dict[str, Any]) -> Any:
    evidence = a.get("evidence")
    return evidence.get("notice") if isinstance(evidence, dict) else None


def wait_for_outputs(settings: Settings, worker: Any, expected_alerts: int, expected_dlq: int,
                     timeout_s: float = 240.0, settle_s: float = 6.0,
                     counted: Callable[[dict[str, Any]], bool] | None = None
                     ) -> dict[str, list]:
    """Poll the output topics until they hold at least the expected number of distinct
    alerts (of those ``counted`` accepts, default all) and dead letters, and stop growing."""
    t = settings.topics
    deadline = time.monotonic() + timeout_s
    last: tuple[int, int] | None = None
    stable_since = time.monotonic()
    out: dict[str, list] = {}
    while time.monotonic() < deadline:
        assert worker.alive(), f"worker died:\n{worker.log_tail()}"
        alerts = [r["value"] for r in read_all(settings, t.alerts_delay)] + [
            r["value"] for r in read_all(settings, t.alerts_stock)]
        dlq = [r["value"] for r in read_all(settings, t.dlq)]
        out = {"alerts": alerts, "dlq": dlq}
        # distinct: after a crash, at-least-once re-sends some records with the same identity
        now = (len(alert_signature([a for a in alerts if counted is None or counted(a)])),
               len({(d["source"]["topic"], d["source"]["partition"], d["source"]["offset"],
                     d["reason"]) for d in dlq}))
        if now != last:
            last, stable_since = now, time.monotonic()
        elif (now[0] >= expected_alerts and now[1] >= expected_dlq
              and time.monotonic() - stable_since >= settle_s):
            return out
        time.sleep(1.0)
    return out


# -- learned models (tests/streams/test_models_live.py) --------------------------------------
def model_kinds() -> frozenset[str]:
    """Alert kinds raised by the learned models; every other kind comes from a rule."""
    from delaywatch.models.risk import RiskDetector
    from delaywatch.models.stock_risk import STOCK_MODEL_KINDS

    return frozenset((*RiskDetector.kinds, *STOCK_MODEL_KINDS))


def split_model_kinds(sig: Counter[tuple[Any, ...]]
                      ) -> tuple[Counter[tuple[Any, ...]], Counter[tuple[Any, ...]]]:
    """(rule alerts, model alerts) of an :func:`alert_signature`."""
    kinds = model_kinds()
    rules = Counter({k: n for k, n in sig.items() if k[1] not in kinds})
    return rules, Counter({k: n for k, n in sig.items() if k[1] in kinds})


def models_env(checkpoint: Any, interval_s: float = 60.0) -> dict[str, str]:
    """Worker environment (added to ``worker_env``'s) with the learned models on."""
    return {"DELAYWATCH_MODELS__ENABLED": "true",
            "DELAYWATCH_MODELS__CHECKPOINT_PATH": str(checkpoint),
            "DELAYWATCH_MODELS__CHECKPOINT_INTERVAL_S": str(interval_s)}


def p_late_of(alerts: list[dict[str, Any]]) -> set[tuple[str, str, str, float]]:
    """(alert_id, kind, status, risk.p_late) of every delay alert that carries a risk."""
    return {(a["alert_id"], a["kind"], a["status"], a["risk"]["p_late"])
            for a in alerts if a.get("category") == "delay" and a.get("risk")}


def is_rule_alert(alert: dict[str, Any]) -> bool:
    return alert["kind"] not in model_kinds()
