"""Waiting for a live worker to finish a known input."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from delaywatch.config import Settings
from delaywatch.kafka_io import read_all


def alert_signature(alerts: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    return Counter((a["alert_id"], a["kind"], a["status"]) for a in alerts)


def wait_for_outputs(settings: Settings, worker: Any, expected_alerts: int, expected_dlq: int,
                     timeout_s: float = 240.0, settle_s: float = 6.0) -> dict[str, list]:
    """Poll the output topics until they hold at least the expected number of distinct
    alerts and dead letters, and stop growing."""
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
        now = (len(alert_signature(alerts)),
               len({(d["source"]["topic"], d["source"]["partition"], d["source"]["offset"],
                     d["reason"]) for d in dlq}))
        if now != last:
            last, stable_since = now, time.monotonic()
        elif (now[0] >= expected_alerts and now[1] >= expected_dlq
              and time.monotonic() - stable_since >= settle_s):
            return out
        time.sleep(1.0)
    return out
