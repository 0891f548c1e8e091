"""Escalation service (``delaywatch escalate``, issue #8): the I/O shell around
:class:`delaywatch.core.escalation.Escalator`.

Consumes the alert topics (``alerts.delay``, ``alerts.stock``) and ``alerts.ack`` in a
consumer group, keeps each alert's state in a local SQLite store, and on the wall clock
(``clock``, ``time.time`` unless a test injects one) writes an escalation copy of every open,
unacknowledged alert past its per-severity time to ``alerts.escalation`` (key: the alert's
key; the notifier consumes it).

Contract:

* **One instance.** Acks are keyed by alert_id and alerts by order or stock key, so an
  alert and its ack land on unrelated partitions: two members of the group could each hold
  one half and the alert would escalate although acked. The state is a local file, too.
  Alerts are few (not events), so one instance is plenty; run it under a supervisor that
  restarts it on the same store. (Scaling out would need acks re-keyed by the alert's key.)
* **Time.** An alert's escalation clock starts when it was published (its record's
  timestamp, capped at the wall clock), not when this service read it: a service that was
  down, or lagging, escalates on time once it catches up, and reading the same record again
  gives the same result. Escalation copies carry their due time as ``detected_at``.
* **State, then offsets.** A record's effect is written to SQLite (one transaction) before
  its offset is stored for the background commit: a crash re-reads at most the records
  after the last commit, and the core ignores messages it has already applied.
* **Escalations at least once.** Copies are produced (idempotent producer, acks=all) and
  acknowledged by the broker before the state that records them is written; if the broker
  does not acknowledge them in ``ack_timeout_s`` the in-memory state is reloaded from the
  store and the next tick tries again. A crash between the two re-sends a copy, which the
  notifier dedupes (alert_id, status, severity and escalation level).
* **Invalid records** (not JSON, not an Alert/Ack) are logged, counted and skipped: acks
  come from ops tools, and a bad one must not stop escalations.
* **Admin alarms** (``system`` thresholds given; the CLI's default): the service also
  consumes the worker's DLQ (``delaywatch.dlq``) and the notifier's (``alerts.dlq``),
  counts their records by publish time (:class:`delaywatch.core.system.SystemAlarms`) and
  sends ``dlq_rate``, ``retries_exhausted`` and ``notifier_failures`` alerts (open, then
  resolved) to ``alerts.system``, produced and stored like the escalations. It reads only
  the DLQ records' ``reason``; their payloads (PII) are neither kept nor logged. Admin
  alerts are not escalated themselves.
* **Counts** (:attr:`EscalationService.counts`, returned by :meth:`EscalationService.run`)
  and, with ``metrics_port``, the same figures as Prometheus counters on 127.0.0.1.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from pydantic import ValidationError

from delaywatch.config.settings import Settings
from delaywatch.config.thresholds import EscalationThresholds, SystemThresholds
from delaywatch.core.escalation import Escalator, Tracked
from delaywatch.core.system import Alarm, SystemAlarms
from delaywatch.kafka_io import client_config, ensure_topics
from delaywatch.log import get_logger
from delaywatch.schemas.acks import Ack
from delaywatch.schemas.alerts import Alert, Severity

__all__ = ["EscalationService", "EscalationStore"]

log = get_logger(__name__)


class EscalationStore:
    """The escalator's state in SQLite: one JSON row per tracked alert, one per pending ack.
    Bounded by the core (it forgets closed and stale alerts, expired acks)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS alerts (alert_id TEXT PRIMARY KEY, "
                        "row TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS acks (alert_id TEXT PRIMARY KEY, "
                        "until REAL NOT NULL, by TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS system (kind TEXT PRIMARY KEY, "
                        "row TEXT NOT NULL)")
        self.db.commit()

    def load(self, thresholds: EscalationThresholds) -> Escalator:
        alerts = {i: Tracked.from_row(orjson.loads(row))
                  for i, row in self.db.execute("SELECT alert_id, row FROM alerts")}
        acks = {i: (until, by) for i, until, by in
                self.db.execute("SELECT alert_id, until, by FROM acks")}
        return Escalator.restore(thresholds, alerts, acks)

    def load_system(self, thresholds: SystemThresholds) -> SystemAlarms:
        alarms = {kind: Alarm.from_row(orjson.loads(row))
                  for kind, row in self.db.execute("SELECT kind, row FROM system")}
        return SystemAlarms(thresholds).restore(alarms)

    def save(self, escalator: Escalator, alarms: SystemAlarms | None = None) -> None:
        """Write what changed in ``escalator`` (and ``alarms``) since the last save, in one
        transaction."""
        alerts, acks = escalator.take_changes()
        system = alarms.take_changes() if alarms is not None else {}
        if not alerts and not acks and not system:
            return
        with self.db:
            for kind, alarm in system.items():
                self.db.execute("INSERT OR REPLACE INTO system VALUES (?, ?)",
                                (kind, orjson.dumps(alarm.to_row()).decode()))
            for alert_id, t in alerts.items():
                if t is None:
                    self.db.execute("DELETE FROM alerts WHERE alert_id = ?", (alert_id,))
                else:
                    self.db.execute("INSERT OR REPLACE INTO alerts VALUES (?, ?)",
                                    (alert_id, orjson.dumps(t.to_row()).decode()))
            for alert_id, ack in acks.items():
                if ack is None:
                    self.db.execute("DELETE FROM acks WHERE alert_id = ?", (alert_id,))
                else:
                    self.db.execute("INSERT OR REPLACE INTO acks VALUES (?, ?, ?)",
                                    (alert_id, *ack))

    def close(self) -> None:
        self.db.close()


class EscalationService:
    """Consumer group on the alert topics and ``alerts.ack``; see the module docstring.

    ``clock``: the wall clock in epoch seconds (tests inject one). ``tick_s``: how often due
    escalations are looked for. ``create_topics``: create ``alerts.ack`` and
    ``alerts.escalation`` if missing (off where ACLs forbid it). ``system``: thresholds of
    the admin alarms (None: off, the DLQ topics are not read).
    """

    def __init__(self, settings: Settings, store: EscalationStore,
                 thresholds: EscalationThresholds, group: str = "delaywatch-escalator",
                 clock: Callable[[], float] = time.time, tick_s: float = 1.0,
                 metrics_port: int | None = None, create_topics: bool = True,
                 ack_timeout_s: float = 30.0, system: SystemThresholds | None = None) -> None:
        self.settings, self.store, self.thresholds, self.group = (
            settings, store, thresholds, group)
        self.clock, self.tick_s = clock, tick_s
        self.metrics_port, self.create_topics = metrics_port, create_topics
        self.ack_timeout_s = ack_timeout_s
        t = settings.topics
        self.alert_topics = [t.alerts_delay, t.alerts_stock]
        self.ack_topic, self.out_topic = t.alerts_ack, t.alerts_escalation
        self.topics = [*self.alert_topics, self.ack_topic]
        self.system_thresholds = system
        self.dlq_topic, self.notifier_dlq_topic = t.dlq, settings.notifier.dlq_topic
        self.system_topic = t.alerts_system
        self.alarms = store.load_system(system) if system is not None else None
        if system is not None:
            self.topics += [self.dlq_topic, self.notifier_dlq_topic]
        self.escalator = store.load(thresholds)
        self.consumer = Consumer({**client_config(settings), "group.id": group,
                                  "auto.offset.reset": "earliest",
                                  # commit in the background what _commit stored
                                  "enable.auto.commit": True,
                                  "enable.auto.offset.store": False,
                                  "auto.commit.interval.ms": 1000})
        self.producer = Producer({**client_config(settings), "enable.idempotence": True,
                                  "acks": "all"})
        self.counts: dict[str, int] = {
            "alerts": 0, "acks": 0, "invalid": 0, "dead_letters": 0, "escalated": 0,
            **{f"escalated:{s.value}": 0 for s in Severity}, "system_alerts": 0,
            "produce_failures": 0, "commit_failures": 0}

    # -- one record ------------------------------------------------------------------------
    def _received_at(self, msg: Message) -> float:
        """When the record was published (capped at the wall clock)."""
        kind, ms = msg.timestamp()
        now = self.clock()
        return now if kind == 0 or ms is None or ms <= 0 else min(ms / 1000, now)

    def handle(self, msg: Message) -> None:
        """Apply one record to the escalator and store the result."""
        raw = msg.value() or b""
        at = self._received_at(msg)
        if self.alarms is not None and msg.topic() in (self.dlq_topic,
                                                       self.notifier_dlq_topic):
            self._count_dead_letter(self.alarms, msg.topic(), raw, at)
            self.store.save(self.escalator, self.alarms)
            return
        try:
            if msg.topic() == self.ack_topic:
                self.escalator.on_ack(Ack.model_validate_json(raw), at)
                self.counts["acks"] += 1
            else:
                self.escalator.on_alert(Alert.model_validate_json(raw), at)
                self.counts["alerts"] += 1
        except ValidationError as exc:
            self.counts["invalid"] += 1
            log.warning("escalator_invalid_record", topic=msg.topic(),
                        partition=msg.partition(), offset=msg.offset(),
                        # not the input: an ack's note or an alert's fields stay out of logs
                        error=str(exc.errors(include_url=False, include_input=False)[:1])[:300])
        self.store.save(self.escalator, self.alarms)

    def _count_dead_letter(self, alarms: SystemAlarms, topic: str | None, raw: bytes,
                           at: float) -> None:
        self.counts["dead_letters"] += 1
        if topic == self.notifier_dlq_topic:
            alarms.on_record("notifier_failures", at)
            return
        alarms.on_record("dlq_rate", at)
        try:
            reason = orjson.loads(raw).get("reason")
        except (orjson.JSONDecodeError, AttributeError):
            reason = None
        if reason == "retries_exhausted":
            alarms.on_record("retries_exhausted", at)

    # -- the clock -------------------------------------------------------------------------
    def tick(self) -> int:
        """Send the escalations (and admin alerts) due now; the number sent (0 when the
        broker did not acknowledge them: they are sent again on the next tick)."""
        now = self.clock()
        out = self.escalator.due(now)
        system = self.alarms.check(now) if self.alarms is not None else []
        if not out and not system:
            self.store.save(self.escalator, self.alarms)  # what they forgot
            return 0
        errors: list[KafkaError | None] = []
        for topic, alerts in ((self.out_topic, out), (self.system_topic, system)):
            for alert in alerts:
                self.producer.produce(topic, key=alert.key.encode(),
                                      value=alert.model_dump_json().encode(),
                                      on_delivery=lambda err, _msg: errors.append(err))
        self.producer.flush(self.ack_timeout_s)
        if len(errors) < len(out) + len(system) or any(e is not None for e in errors):
            self.counts["produce_failures"] += 1
            log.warning("escalator_produce_failed", escalations=len(out), system=len(system),
                        error=str(next((e for e in errors if e is not None), "timeout")))
            # forget the attempt
            self.escalator = self.store.load(self.thresholds)
            if self.system_thresholds is not None:
                self.alarms = self.store.load_system(self.system_thresholds)
            return 0
        self.store.save(self.escalator, self.alarms)
        for alert in system:
            self.counts["system_alerts"] += 1
            log.warning("system_alert", alert_id=alert.alert_id, kind=alert.kind,
                        status=alert.status.value, **alert.evidence)
        for alert in out:
            self.counts["escalated"] += 1
            self.counts[f"escalated:{alert.severity.value}"] += 1
            esc = alert.evidence["escalation"]
            log.info("alert_escalated", alert_id=alert.alert_id, kind=alert.kind,
                     key=alert.key, level=esc["level"], severity=alert.severity.value,
                     from_severity=esc["from_severity"], audience=alert.audience)
        return len(out) + len(system)

    # -- the loop --------------------------------------------------------------------------
    def run(self, max_idle_s: float | None = None, should_stop: Callable[[], bool] = bool
            ) -> dict[str, int]:
        """Consume and escalate until ``should_stop()`` or, with ``max_idle_s``, until
        nothing arrived or escalated for that long and nothing is due within it. Returns
        :attr:`counts`."""
        if self.create_topics:
            names = [self.ack_topic, self.out_topic]
            if self.alarms is not None:
                names += [self.system_topic, self.dlq_topic, self.notifier_dlq_topic]
            ensure_topics(self.settings, names, self.consumer,
                          wait_for=[n for n in names if n in self.topics])
        server = self._serve_metrics() if self.metrics_port is not None else None
        self.consumer.subscribe(self.topics)
        last = last_tick = time.monotonic()
        try:
            while not should_stop():
                if time.monotonic() - last_tick >= self.tick_s:
                    last_tick = time.monotonic()
                    if self.tick():
                        last = last_tick
                msg = self.consumer.poll(min(self.tick_s, 0.5))
                if msg is None or msg.error():
                    if max_idle_s is not None and time.monotonic() - last > max_idle_s:
                        due = self.escalator.next_due()
                        if due is None or due > self.clock() + max_idle_s:
                            break
                    continue
                last = time.monotonic()
                self.handle(msg)
                self._commit(msg)
        finally:
            self.consumer.close()  # commits the stored offsets
            self.producer.flush(self.ack_timeout_s)
            if server is not None:
                server.shutdown()
                server.server_close()
        log.info("escalator_stopped", tracked=len(self.escalator.alerts), **self.counts)
        return self.counts

    def _commit(self, msg: Any) -> None:
        """Store the offset past ``msg`` for the background commit (its state is stored)."""
        try:
            self.consumer.store_offsets(message=msg)
        except KafkaException as exc:
            self.counts["commit_failures"] += 1
            log.warning("escalator_commit_failed", topic=msg.topic(),
                        partition=msg.partition(), offset=msg.offset(),
                        error=str(exc.args[0] if exc.args else exc))

    # -- metrics ---------------------------------------------------------------------------
    def _serve_metrics(self) -> Any:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        registry.register(_CountsCollector(self))
        server, _thread = start_http_server(self.metrics_port or 0, addr="127.0.0.1",
                                            registry=registry)
        log.info("escalator_metrics_serving", port=server.server_port)
        return server


class _CountsCollector:
    """:attr:`EscalationService.counts` as Prometheus metrics (read at scrape time)."""

    def __init__(self, service: EscalationService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counts = self.service.counts.copy()
        records = CounterMetricFamily("delaywatch_escalator_records",
                                      "Records consumed, by kind", labels=["kind"])
        for kind in ("alerts", "acks", "invalid", "dead_letters"):
            records.add_metric([kind], counts[kind])
        yield records
        escalated = CounterMetricFamily("delaywatch_escalator_escalations",
                                        "Escalation copies sent, by new severity",
                                        labels=["severity"])
        for severity in Severity:
            escalated.add_metric([severity.value], counts[f"escalated:{severity.value}"])
        yield escalated
        for name in ("system_alerts", "produce_failures", "commit_failures"):
            yield CounterMetricFamily(f"delaywatch_escalator_{name}",
                                      name.replace("_", " ").capitalize(), value=counts[name])
        yield GaugeMetricFamily("delaywatch_escalator_open_alerts",
                                "Alerts open, unacknowledged and tracked",
                                value=sum(t.closed is None
                                          for t in list(self.service.escalator.alerts.values())))
