"""Reference notifier: what a downstream notifier service runs, and a template for one.

Consumes the alert topics in a consumer group and delivers each alert message once to a sink
(stdout, a JSON-lines file, or a webhook), remembering what it delivered in a local SQLite
store (so a restart or a re-sent alert does not message a customer twice).

Contract:

* **Dedupe** by (alert_id, status, severity) in :class:`DeliveredStore`, plus the
  escalation level for the escalation copies ``delaywatch escalate`` writes to
  ``alerts.escalation`` (consumed here with the alert topics): a copy keeps its alert_id
  and may repeat a severity the detector already sent (or re-page at critical), so without
  the level it would be deduped away. Entries older than ``keep_days`` are pruned at start,
  so the store stays bounded.
* **Retry tiers.** A failing sink is tried ``attempts`` times in-process, then the record is
  handed to the first retry tier topic (``alerts.retry.1m``, ...) with ``dw-notify-*``
  headers (see :data:`HEADERS`). The notifier consumes its tier topics too and delivers a
  tier record no earlier than its due time: the partition is paused and rewound to the
  record, then resumed when it is due, so the alert topics and other tiers keep flowing.
  Each tier is visited up to its ``attempts`` times; after the last tier the record goes to
  ``alerts.dlq`` with ``dw-notify-reason: retries_exhausted`` (undecodable records go there
  directly with ``undecodable``). Tier records name their consumer group; another group
  reading the same tier topics skips them (give each notifier service its own tier topics).
* **Offsets** of a record are stored for commit only after its delivery, its dedupe/skip,
  or after the broker acknowledged its hand-off to a tier or the DLQ (idempotent producer,
  acks=all); the client commits stored offsets in the background (and at close), never in
  the delivery loop: at-least-once from Kafka, exactly-once to the sink by the dedupe key.
  (A synchronous commit blocked the loop for good once a broker stall left the group
  coordinator connection stuck: no poll for 5 minutes, the group left.)
* **Resolved before delivery** (``skip_resolved_before_delivery=True``, off by default): once
  a ``resolved`` message for an alert_id has been seen, later ``open``/``updated`` messages of
  that alert_id (typically coming back from a retry tier) are not delivered, and a
  ``resolved`` whose alert_id never had a message delivered is not delivered either: the
  customer hears nothing about an incident that ended before we could tell them.
* **Counts** (:attr:`Notifier.counts`, returned by :meth:`Notifier.run`) and, with
  ``metrics_port``, the same figures as Prometheus counters on 127.0.0.1.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as TP

from delaywatch.config.settings import NotifierSettings, Settings
from delaywatch.kafka_io import client_config, ensure_topics
from delaywatch.log import get_logger

__all__ = [
    "DEFAULT_TIERS",
    "HEADERS",
    "DeliveredStore",
    "Notifier",
    "RetryTier",
    "file_sink",
    "stdout_sink",
    "webhook_sink",
]

log = get_logger(__name__)

Sink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RetryTier:
    """A retry topic: records wait ``delay_s`` there, and may visit it ``attempts`` times."""

    topic: str
    delay_s: float
    attempts: int = 1


DEFAULT_TIERS = tuple(RetryTier(*t) for t in NotifierSettings().tiers)

# Headers on retry-tier and alerts.dlq records (values are UTF-8 text; times in epoch ms).
# The alert record's own headers (dw-source, dw-source-ts) are carried along unchanged.
HEADERS = {
    "attempts": "dw-notify-attempts",            # failed sink calls so far, all tiers
    "first_failure": "dw-notify-first-failure-ms",
    "last_failure": "dw-notify-last-failure-ms",
    "last_error": "dw-notify-last-error",        # the sink's last exception, truncated
    "topic": "dw-notify-origin-topic",           # the alert record it started as
    "partition": "dw-notify-origin-partition",
    "offset": "dw-notify-origin-offset",
    "tier_attempt": "dw-notify-tier-attempt",    # 1-based visit of the current tier
    "due": "dw-notify-due-ms",                   # not delivered before this time
    "group": "dw-notify-group",                  # the consumer group that owns the retry
    "reason": "dw-notify-reason",                # alerts.dlq only
}
_OURS = frozenset(HEADERS.values())


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
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # raises on 4xx/5xx
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"webhook answered {resp.status}")

    return post


class DeliveredStore:
    """Which alert messages reached the sink, and which alert_ids were seen resolved
    (bounded: entries older than ``keep_days`` are pruned when it opens)."""

    def __init__(self, path: Path, keep_days: float = 14.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread off: a notifier may run in a thread other than its creator
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.keep_s = keep_days * 86400
        self.db.execute("CREATE TABLE IF NOT EXISTS delivered (key TEXT PRIMARY KEY, at REAL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS resolved "
                        "(alert_id TEXT PRIMARY KEY, at REAL)")
        for table in ("delivered", "resolved"):
            self.db.execute(f"DELETE FROM {table} WHERE at < ?", (time.time() - self.keep_s,))
        self.db.commit()

    @staticmethod
    def key(alert: dict[str, Any]) -> str:
        key = f"{alert['alert_id']}|{alert['status']}|{alert.get('severity')}"
        evidence = alert.get("evidence")
        escalation = evidence.get("escalation") if isinstance(evidence, dict) else None
        if isinstance(escalation, dict) and "level" in escalation:
            key += f"|esc{escalation['level']}"
        notice = evidence.get("notice") if isinstance(evidence, dict) else None
        if isinstance(notice, int):  # ETA/stage-change notices of one alert, numbered
            key += f"|n{notice}"
        return key

    def seen(self, alert: dict[str, Any]) -> bool:
        row = self.db.execute("SELECT 1 FROM delivered WHERE key = ?", (self.key(alert),))
        return row.fetchone() is not None

    def mark(self, alert: dict[str, Any]) -> None:
        self.db.execute("INSERT OR IGNORE INTO delivered VALUES (?, ?)",
                        (self.key(alert), time.time()))
        self.db.commit()

    def delivered_any(self, alert_id: str) -> bool:
        """Whether any message of this alert reached the sink ('}' sorts right after '|')."""
        row = self.db.execute("SELECT 1 FROM delivered WHERE key >= ? AND key < ? LIMIT 1",
                              (f"{alert_id}|", f"{alert_id}}}"))
        return row.fetchone() is not None

    def is_resolved(self, alert_id: str) -> bool:
        row = self.db.execute("SELECT 1 FROM resolved WHERE alert_id = ?", (alert_id,))
        return row.fetchone() is not None

    def mark_resolved(self, alert_id: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO resolved VALUES (?, ?)", (alert_id, time.time()))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


@dataclass
class _Retry:
    """Where a record stands in the retry tiers (read from / written to its headers)."""

    group: str = ""           # the notifier group that handed it to a tier
    attempts: int = 0
    first_failure_ms: int | None = None
    last_failure_ms: int | None = None
    tier: int = -1            # index in the notifier's tiers; -1: an alert-topic record
    tier_attempt: int = 0
    due_ms: int = 0


class Notifier:
    """Consumer group on the alert topics and the retry tiers; see the module docstring.

    ``attempts``/``backoff_s``: quick in-process sink attempts before a tier hand-off.
    ``tiers``: the retry topics in order (empty: straight to ``dlq_topic``).
    ``create_topics``: create the tier and DLQ topics if missing (off where ACLs forbid it).
    """

    def __init__(self, settings: Settings, sink: Sink, store: DeliveredStore,
                 group: str = "delaywatch-notifier", attempts: int = 2,
                 backoff_s: float = 0.2, tiers: Sequence[RetryTier] = DEFAULT_TIERS,
                 dlq_topic: str = "alerts.dlq", skip_resolved_before_delivery: bool = False,
                 metrics_port: int | None = None, create_topics: bool = True,
                 ack_timeout_s: float = 30.0) -> None:
        self.settings, self.sink, self.store, self.group = settings, sink, store, group
        self.attempts, self.backoff_s = max(1, attempts), backoff_s
        self.tiers, self.dlq_topic = tuple(tiers), dlq_topic
        self.skip_resolved = skip_resolved_before_delivery
        self.metrics_port, self.create_topics = metrics_port, create_topics
        self.ack_timeout_s = ack_timeout_s
        t = settings.topics
        self.alert_topics = [t.alerts_delay, t.alerts_stock, t.alerts_escalation]
        self.tier_index = {tier.topic: i for i, tier in enumerate(self.tiers)}
        self.topics = [*self.alert_topics, *self.tier_index]
        self.consumer = Consumer({**client_config(settings), "group.id": group,
                                  "auto.offset.reset": "earliest",
                                  # commit in the background what _commit stored
                                  "enable.auto.commit": True,
                                  "enable.auto.offset.store": False,
                                  "auto.commit.interval.ms": 1000,
                                  "on_commit": self._on_commit})
        self.producer = Producer({**client_config(settings), "enable.idempotence": True,
                                  "acks": "all"})
        # (topic, partition) of a tier -> (due time in epoch s, offset of the waiting record)
        self.held: dict[tuple[str, int], tuple[float, int]] = {}
        self.counts: dict[str, int] = {
            "delivered": 0, "duplicates": 0, "skipped_resolved": 0, "sink_failures": 0,
            "retried": 0, **{f"retried:{tier.topic}": 0 for tier in self.tiers},
            "dead_lettered": 0, "handoff_failures": 0, "other_group": 0, "commit_failures": 0}

    # -- one record ------------------------------------------------------------------------
    def _try_sink(self, alert: dict[str, Any]) -> str | None:
        """Quick in-process attempts; None when delivered, else the last error."""
        error = ""
        for attempt in range(self.attempts):
            try:
                self.sink(alert)
                return None
            except Exception as exc:  # any sink failure goes on to the retry tiers
                self.counts["sink_failures"] += 1
                error = f"{type(exc).__name__}: {exc}"[:500]
                if attempt + 1 < self.attempts:
                    time.sleep(self.backoff_s * 2**attempt)
        return error

    def _skip(self, alert: dict[str, Any]) -> str | None:
        """Why this message is not delivered (None: deliver it)."""
        if self.store.seen(alert):
            return "duplicates"
        if not self.skip_resolved:
            return None
        alert_id = alert["alert_id"]
        if alert["status"] == "resolved":
            self.store.mark_resolved(alert_id)
            return None if self.store.delivered_any(alert_id) else "skipped_resolved"
        return "skipped_resolved" if self.store.is_resolved(alert_id) else None

    def handle(self, msg: Message) -> bool:
        """Deliver, skip, hold or hand off one record; True when its offset may be committed
        (False: it is held until due, or its hand-off was not acknowledged and it was
        rewound)."""
        raw = msg.value() or b""
        try:
            alert = orjson.loads(raw)
        except orjson.JSONDecodeError:
            alert = None
        if not isinstance(alert, dict) or "alert_id" not in alert or "status" not in alert:
            return self._hand_off(msg, self.dlq_topic, _Retry(), "not an alert", "undecodable")
        state = self._retry_state(msg)
        reason = "other_group" if state.group not in ("", self.group) else self._skip(alert)
        if reason is not None:
            self.counts[reason] += 1
            return True
        if state.due_ms > _now_ms():
            self._hold(msg, state.due_ms / 1000)
            return False
        error = self._try_sink(alert)
        if error is None:
            self.store.mark(alert)
            self.counts["delivered"] += 1
            return True
        return self._retry(msg, state, error)

    def _retry_state(self, msg: Message) -> _Retry:
        tier = self.tier_index.get(msg.topic() or "")
        if tier is None:
            return _Retry()
        h = _headers(msg)
        first = h.get(HEADERS["first_failure"])
        return _Retry(group=h.get(HEADERS["group"], ""),
                      attempts=int(h.get(HEADERS["attempts"], 0)),
                      first_failure_ms=int(first) if first else None, tier=tier,
                      tier_attempt=int(h.get(HEADERS["tier_attempt"], 1)),
                      due_ms=int(h.get(HEADERS["due"], 0)))

    def _retry(self, msg: Message, state: _Retry, error: str) -> bool:
        """Hand a failed record to its next tier (or the DLQ when the tiers are used up)."""
        state.attempts += self.attempts
        now = state.last_failure_ms = _now_ms()
        state.first_failure_ms = state.first_failure_ms or now
        if state.tier >= 0 and state.tier_attempt < self.tiers[state.tier].attempts:
            state.tier_attempt += 1
        else:
            state.tier, state.tier_attempt = state.tier + 1, 1
        if state.tier >= len(self.tiers):
            return self._hand_off(msg, self.dlq_topic, state, error, "retries_exhausted")
        tier = self.tiers[state.tier]
        state.due_ms = now + round(tier.delay_s * 1000)
        return self._hand_off(msg, tier.topic, state, error, None)

    def _hand_off(self, msg: Message, topic: str, state: _Retry, error: str,
                  reason: str | None) -> bool:
        """Produce the record to ``topic`` and wait for the broker's acknowledgement."""
        h = _headers(msg)
        now = state.last_failure_ms or _now_ms()
        origin = (h.get(HEADERS["topic"], msg.topic() or ""),
                  h.get(HEADERS["partition"], str(msg.partition())),
                  h.get(HEADERS["offset"], str(msg.offset())))
        ours = {"attempts": str(state.attempts),
                "first_failure": str(state.first_failure_ms or now),
                "last_failure": str(now), "last_error": error,
                "topic": origin[0], "partition": origin[1], "offset": origin[2],
                "group": self.group}
        if reason is None:
            ours |= {"tier_attempt": str(state.tier_attempt), "due": str(state.due_ms)}
        else:
            ours["reason"] = reason
        headers: list[tuple[str, str | bytes | None]] = [
            (k, v.encode()) for k, v in h.items() if k not in _OURS]
        headers += [(HEADERS[k], v.encode()) for k, v in ours.items()]
        acked: list[KafkaError | None] = []
        self.producer.produce(topic, key=msg.key(), value=msg.value(), headers=headers,
                              on_delivery=lambda err, _msg: acked.append(err))
        self.producer.flush(self.ack_timeout_s)
        if not acked or acked[0] is not None:
            # not acknowledged: do not commit; read the record again after a pause
            self.counts["handoff_failures"] += 1
            log.warning("notifier_handoff_failed", topic=topic, error=str(acked[:1]),
                        source=f"{msg.topic()}/{msg.partition()}/{msg.offset()}")
            self.consumer.seek(TP(msg.topic() or "", msg.partition() or 0, msg.offset() or 0))
            time.sleep(max(self.backoff_s, 1.0))
            return False
        if reason is None:
            self.counts["retried"] += 1
            self.counts[f"retried:{topic}"] += 1
        else:
            self.counts["dead_lettered"] += 1
            log.warning("notifier_dead_lettered", reason=reason, error=error,
                        attempts=state.attempts, origin="/".join(origin))
        return True

    # -- holding tier partitions until due -------------------------------------------------
    def _hold(self, msg: Message, due_s: float) -> None:
        tp = TP(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        self.consumer.pause([tp])
        self.consumer.seek(tp)  # also drops records of it already fetched
        self.held[(tp.topic, tp.partition)] = (due_s, tp.offset)

    def _release_due(self) -> None:
        now = time.time()
        due = [k for k, (at, _) in self.held.items() if at <= now]
        if due:
            self.consumer.resume([TP(t, p) for t, p in due])
            for k in due:
                del self.held[k]

    def _on_revoke(self, consumer: Consumer, partitions: list[TP]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        gone = [k for k in self.held if k in revoked]
        if gone:
            consumer.resume([TP(*k) for k in gone])
            for k in gone:
                del self.held[k]

    def _poll_timeout(self) -> float:
        if not self.held:
            return 0.5
        next_due = min(at for at, _ in self.held.values())
        return min(0.5, max(0.01, next_due - time.time()))

    # -- the loop --------------------------------------------------------------------------
    def ensure_topics(self) -> None:
        """Create the tier topics and the DLQ (as many partitions as the alert topics)."""
        ensure_topics(self.settings, [*self.tier_index, self.dlq_topic], self.consumer,
                      wait_for=list(self.tier_index))

    def run(self, max_idle_s: float | None = None, should_stop: Callable[[], bool] = bool
            ) -> dict[str, int]:
        """Deliver until ``should_stop()`` or, with ``max_idle_s``, until nothing arrived for
        that long and no tier record is waiting. Returns :attr:`counts`."""
        if self.create_topics:
            self.ensure_topics()
        server = self._serve_metrics() if self.metrics_port is not None else None
        self.consumer.subscribe(self.topics, on_revoke=self._on_revoke)
        last = time.monotonic()
        try:
            while not should_stop():
                self._release_due()
                msg = self.consumer.poll(self._poll_timeout())
                if msg is None or msg.error():
                    if (max_idle_s is not None and not self.held
                            and time.monotonic() - last > max_idle_s):
                        break
                    continue
                if (msg.topic(), msg.partition()) in self.held:
                    continue  # fetched before the pause: read again from the held offset
                last = time.monotonic()
                if self.handle(msg):
                    self._commit(msg)
        finally:
            self.consumer.close()
            self.producer.flush(self.ack_timeout_s)
            if server is not None:
                server.shutdown()
                server.server_close()
        log.info("notifier_stopped", **self.counts)
        return self.counts

    def _on_commit(self, err: KafkaError | None, partitions: list[TP]) -> None:
        # a background commit the broker refused (coordinator moving, loading): the next
        # one carries the same stored offsets
        failed = err is not None or any(tp.error is not None for tp in partitions)
        if failed and (err is None or err.code() != KafkaError._NO_OFFSET):
            self.counts["commit_failures"] += 1
            log.warning("notifier_commit_failed", error=str(err) if err else
                        str(next(tp.error for tp in partitions if tp.error is not None)))

    def _commit(self, msg: Any) -> None:
        """Store the offset past ``msg`` for the background commit. Refused when the
        partition was revoked meanwhile: not fatal, the record was handled, and whoever
        owns the partition now reads it again and dedupes it."""
        try:
            self.consumer.store_offsets(message=msg)
        except KafkaException as exc:
            self.counts["commit_failures"] += 1
            log.warning("notifier_commit_failed", topic=msg.topic(), partition=msg.partition(),
                        offset=msg.offset(), error=str(exc.args[0] if exc.args else exc))

    # -- metrics ---------------------------------------------------------------------------
    def _serve_metrics(self) -> Any:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        registry.register(_CountsCollector(self.counts))
        server, _thread = start_http_server(self.metrics_port or 0, addr="127.0.0.1",
                                            registry=registry)
        log.info("notifier_metrics_serving", port=server.server_port)  # port 0: a free one
        return server


class _CountsCollector:
    """:attr:`Notifier.counts` as Prometheus counters (read at scrape time)."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        counts = self.counts.copy()
        messages = CounterMetricFamily("delaywatch_notifier_messages",
                                       "Alert messages by outcome", labels=["outcome"])
        for outcome in ("delivered", "duplicates", "skipped_resolved", "dead_lettered",
                        "other_group"):
            messages.add_metric([outcome], counts[outcome])
        yield messages
        retried = CounterMetricFamily("delaywatch_notifier_retried",
                                      "Hand-offs to a retry tier", labels=["tier"])
        for name, n in counts.items():
            if name.startswith("retried:"):
                retried.add_metric([name.removeprefix("retried:")], n)
        yield retried
        for name in ("sink_failures", "handoff_failures"):
            yield CounterMetricFamily(f"delaywatch_notifier_{name}",
                                      name.replace("_", " ").capitalize(), value=counts[name])


def _headers(msg: Message) -> dict[str, str]:
    raw = msg.headers() or []  # consumed: a list of (name, bytes) pairs
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or "")
            for k, v in pairs}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
