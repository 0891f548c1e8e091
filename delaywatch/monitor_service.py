"""``delaywatch monitor``: the ops monitor (``delaywatch.core.monitor``) on live topics.

It reads every partition of the input topics (feed health) and of the alert topics
(incidents) and writes ``category="system"`` alerts to ``alerts.system``. The monitor needs
the whole shop, so it runs as **one** process that assigns itself all partitions (no
consumer group to split them); a standby started with the same ``--state`` file takes over
where the last checkpoint left off.

Delivery: the state file holds the monitor and the offset of every partition it has
consumed, written atomically (temp file + rename) only after the producer has delivered
everything decided before it; after a crash the monitor restarts from that file and decides
again what it decided since, with the same alert ids (they follow from scope and episode),
so consumers deduplicate re-sends as they do the worker's.

Time: event time, as in replay. A silent feed produces no records; the other feeds move the
clock. When *every* input is idle for ``idle_advance_s`` and the latest event time is within
``max_wall_skew_s`` of the wall clock (a live shop, not a replayed history), the wall clock
minus the lateness moves the clock instead.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from delaywatch.config.settings import Settings
from delaywatch.config.thresholds import Thresholds, load_thresholds
from delaywatch.core.decode import DecodeError, decode
from delaywatch.core.monitor import OpsMonitor
from delaywatch.kafka_io import client_config
from delaywatch.schemas.alerts import Alert

__all__ = ["MonitorService"]

log = structlog.get_logger(__name__)
# 2: OpsMonitor gained the WMS progress detector; a pickled v1 monitor lacks it
STATE_VERSION = 2


class MonitorService:
    def __init__(self, settings: Settings, state_path: Path,
                 thresholds: Thresholds | None = None, checkpoint_s: float = 10.0,
                 idle_advance_s: float = 60.0, max_wall_skew_s: float = 7200.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.thresholds = thresholds or load_thresholds(settings.thresholds_file)
        self.th = self.thresholds.monitor
        self.state_path = state_path
        self.checkpoint_s = checkpoint_s
        self.idle_advance_s = idle_advance_s
        self.max_wall_skew_s = max_wall_skew_s
        self.clock = clock
        t = settings.topics
        self.roles = {t.orders: "orders", t.inventory: "inventory", t.scans: "scans"}
        self.alert_topics = [t.alerts_delay]  # incidents read the per-order delay alerts
        self.out_topic = t.alerts_system
        self.monitor, self.offsets = self._load()
        self.sent = 0
        self.consumed = 0
        self.latest_event = -float("inf")

    # -- state -------------------------------------------------------------------------------
    def _load(self) -> tuple[OpsMonitor, dict[tuple[str, int], int]]:
        if self.state_path.exists():
            version, monitor, offsets = pickle.loads(self.state_path.read_bytes())
            if version == STATE_VERSION:
                log.info("monitor_restored", partitions=len(offsets))
                return monitor, offsets
            log.warning("monitor_state_ignored", version=version)
        return OpsMonitor.of(self.thresholds), {}

    def _checkpoint(self, producer: Producer) -> None:
        if producer.flush(60) != 0:
            raise RuntimeError("alerts.system: records not delivered within 60 s")
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps((STATE_VERSION, self.monitor, self.offsets)))
        os.replace(tmp, self.state_path)

    # -- the loop ----------------------------------------------------------------------------
    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        out = []
        for topic in [*self.roles, *self.alert_topics]:
            md = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if md is None or md.error is not None:
                continue
            for p in sorted(md.partitions):
                start = self.offsets.get((topic, p))
                out.append(TopicPartition(topic, p, OFFSET_BEGINNING if start is None else start))
        return out

    def run(self, max_idle_s: float | None = None, should_stop: Callable[[], bool] = bool
            ) -> int:
        """Consume until ``should_stop()`` (or ``max_idle_s`` without a record); returns the
        number of system alerts sent."""
        cfg = client_config(self.settings)
        consumer = Consumer({**cfg, "group.id": "delaywatch-monitor",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        producer = Producer({**cfg, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 20})
        assignment = self._assignment(consumer)
        self.monitor.expect(
            [f"{tp.topic}:{tp.partition}" for tp in assignment if tp.topic in self.roles],
            [f"{tp.topic}:{tp.partition}" for tp in assignment if tp.topic not in self.roles])
        consumer.assign(assignment)
        started = time.monotonic()
        last_record = last_ckpt = time.monotonic()
        heard: dict[str, float] = {}  # stream -> when it last delivered (monotonic)
        dropped: set[str] = set()
        try:
            while not should_stop():
                msgs = consumer.consume(500, timeout=0.5)
                now = time.monotonic()
                for msg in msgs:
                    if msg.error():
                        continue
                    last_record = now
                    self.consumed += 1
                    stream = f"{msg.topic()}:{msg.partition()}"
                    heard[stream] = now
                    dropped.discard(stream)
                    self._emit(producer, self._handle(msg))
                    self.offsets[(str(msg.topic()), int(msg.partition() or 0))] = int(
                        msg.offset() or 0) + 1
                if not msgs:
                    if max_idle_s is not None and now - last_record >= max_idle_s:
                        break
                    self._emit(producer, self._wall_advance(now - last_record))
                elif now - last_ckpt >= self.checkpoint_s:
                    # partitions silent on the wall clock while others deliver: judge
                    # without them (a whole feed topic down must not stop all judging)
                    for stream in self.monitor.streams():
                        if (stream not in dropped
                                and now - heard.get(stream, started) >= self.idle_advance_s
                                and self._caught_up(consumer, stream)):
                            log.info("monitor_stream_silent", stream=stream)
                            self.monitor.drop_stream(stream)
                            dropped.add(stream)
                producer.poll(0)
                if now - last_ckpt >= self.checkpoint_s:
                    self._checkpoint(producer)
                    last_ckpt = now
            self._checkpoint(producer)
        finally:
            consumer.close()
        return self.sent

    def _caught_up(self, consumer: Consumer, stream: str) -> bool:
        """Silent means nothing new on the broker, not "not read yet": a partition still
        behind (a backlog after a restart, a slow fetch) is never judged without."""
        topic, _, part = stream.rpartition(":")
        try:
            marks = consumer.get_watermark_offsets(TopicPartition(topic, int(part)),
                                                   timeout=2.0)
        except KafkaException:  # unknown is not caught up
            return False
        return marks is not None and self.offsets.get((topic, int(part)), 0) >= marks[1]

    def _handle(self, msg: Any) -> list[Alert]:
        topic, raw = msg.topic(), msg.value()
        stream = f"{topic}:{msg.partition()}"
        role = self.roles.get(topic)
        if role is None:  # an alert topic
            try:
                alert = Alert.model_validate_json(raw)
            except ValueError:
                return []
            return self.monitor.on_alerts(stream, [alert])
        key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
        try:  # what the worker accepts (it dead-letters the rest: not the monitor's job)
            event = decode(role, raw, key, received_ms=msg.timestamp()[1],
                           max_future_s=self.settings.time.max_future_s)
        except DecodeError:
            return []
        at = float(event.occurred_at.timestamp())  # type: ignore[attr-defined]
        self.latest_event = max(self.latest_event, at)
        return self.monitor.on_input(stream, role, orjson.loads(raw), at)

    def _wall_advance(self, idle_s: float) -> list[Alert]:
        wall = self.clock()
        if idle_s < self.idle_advance_s or abs(wall - self.latest_event) > self.max_wall_skew_s:
            return []
        return self.monitor.advance_to(wall - self.th.lateness_s)

    def _emit(self, producer: Producer, alerts: list[Alert]) -> None:
        for a in alerts:
            log.info("system_alert", kind=a.kind, key=a.key, status=a.status.value)
            producer.produce(self.out_topic, key=a.key.encode(), value=a.model_dump_json())
            self.sent += 1
