"""Reference notifier: what a downstream notifier service runs, and a template for one.

Consumes the alert topics in a consumer group, delivers each alert message once to a sink
(stdout, a JSON-lines file, or a webhook), remembers what it delivered in a local SQLite
store (so a restart or a re-sent alert does not message a customer twice), retries a failing
sink with backoff and, when that is exhausted, hands the message to ``alerts.dlq`` with the
reason. Offsets are committed only after delivery or hand-off: at-least-once from Kafka,
exactly-once to the sink by the (alert_id, status, severity) key.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from delaywatch.config.settings import Settings
from delaywatch.kafka_io import client_config

__all__ = ["DeliveredStore", "Notifier", "file_sink", "stdout_sink", "webhook_sink"]

Sink = Callable[[dict[str, Any]], None]


def stdout_sink(alert: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(alert, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def file_sink(path: Path) -> Sink:
    def write(alert: dict[str, Any]) -> None:
        with path.open("ab") as fh:
            fh.write(orjson.dumps(alert) + b"\n")

    return write


def webhook_sink(url: str, timeout_s: float = 5.0) -> Sink:
    def post(alert: dict[str, Any]) -> None:
        req = urllib.request.Request(url, data=orjson.dumps(alert), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"webhook answered {resp.status}")

    return post


class DeliveredStore:
    """Which alert messages reached the sink (bounded: entries older than ``keep_days``)."""

    def __init__(self, path: Path, keep_days: float = 14.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.keep_s = keep_days * 86400
        self.db.execute("CREATE TABLE IF NOT EXISTS delivered (key TEXT PRIMARY KEY, at REAL)")
        self.db.execute("DELETE FROM delivered WHERE at < ?", (time.time() - self.keep_s,))
        self.db.commit()

    @staticmethod
    def key(alert: dict[str, Any]) -> str:
        return f"{alert['alert_id']}|{alert['status']}|{alert.get('severity')}"

    def seen(self, alert: dict[str, Any]) -> bool:
        row = self.db.execute("SELECT 1 FROM delivered WHERE key = ?", (self.key(alert),))
        return row.fetchone() is not None

    def mark(self, alert: dict[str, Any]) -> None:
        self.db.execute("INSERT OR IGNORE INTO delivered VALUES (?, ?)",
                        (self.key(alert), time.time()))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class Notifier:
    def __init__(self, settings: Settings, sink: Sink, store: DeliveredStore,
                 group: str = "delaywatch-notifier", attempts: int = 4,
                 backoff_s: float = 0.5) -> None:
        self.settings, self.sink, self.store = settings, sink, store
        self.attempts, self.backoff_s = attempts, backoff_s
        t = settings.topics
        self.topics = [t.alerts_delay, t.alerts_stock]
        self.consumer = Consumer({**client_config(settings), "group.id": group,
                                  "auto.offset.reset": "earliest",
                                  "enable.auto.commit": False})
        self.producer = Producer({**client_config(settings), "enable.idempotence": True,
                                  "acks": "all"})
        self.counts = {"delivered": 0, "duplicates": 0, "retries": 0, "dead_lettered": 0}

    def deliver(self, alert: dict[str, Any]) -> bool:
        """Sink the alert with retries; True when delivered, False when it must go to DLQ."""
        for attempt in range(self.attempts):
            try:
                self.sink(alert)
                return True
            except Exception:  # any sink failure is retried, then dead-lettered
                if attempt + 1 < self.attempts:
                    self.counts["retries"] += 1
                    time.sleep(self.backoff_s * 2**attempt)
        return False

    def handle(self, raw: bytes) -> None:
        alert = orjson.loads(raw)
        if self.store.seen(alert):
            self.counts["duplicates"] += 1
            return
        if self.deliver(alert):
            self.counts["delivered"] += 1
        else:
            self.counts["dead_lettered"] += 1
            self.producer.produce("alerts.dlq", key=alert.get("key", "").encode(), value=raw)
            self.producer.flush(30)
        self.store.mark(alert)

    def run(self, max_idle_s: float | None = None, should_stop: Callable[[], bool] = bool
            ) -> dict[str, int]:
        self.consumer.subscribe(self.topics)
        last = time.monotonic()
        try:
            while not should_stop():
                msg = self.consumer.poll(0.5)
                if msg is None or msg.error():
                    if max_idle_s is not None and time.monotonic() - last > max_idle_s:
                        break
                    continue
                last = time.monotonic()
                self.handle(msg.value() or b"{}")
                self.consumer.commit(message=msg, asynchronous=False)
        finally:
            self.consumer.close()
            self.producer.flush(30)
        return self.counts
