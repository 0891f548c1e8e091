"""Dead-letter tools for ops: inspect what failed and why, and re-inject after a fix.

``delaywatch dlq inspect`` counts by reason and source, shows samples with PII masked and
exports a pandas-friendly table. ``delaywatch dlq replay --reason R`` sends the original
bytes back to their source topics with their original keys, once per original: the
fingerprint of every original it re-injected is kept in a compacted ledger topic.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from delaywatch.broker import create_topics
from delaywatch.config.settings import Settings
from delaywatch.kafka_io import client_config, read_all

__all__ = ["dlq_frame", "inspect", "mask_payload", "original_bytes", "replay_reason"]

_PHONE = re.compile(r"\b0\d{1,2}-?\d{3,4}-?\d{4}\b")
# for payloads that are not valid JSON: "name": "..." (possibly cut off) as text
_PII_TEXT = re.compile(r'"(customer|name|phone|address|email)"\s*:\s*(\{[^}]*\}?|"[^"]*"?)')
_PII_FIELDS = ("customer", "name", "phone", "address", "email")


def original_bytes(record: dict[str, Any]) -> bytes:
    if record.get("payload_encoding") == "base64":
        return base64.b64decode(record["payload"])
    return str(record.get("payload", "")).encode("utf-8")


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if k in _PII_FIELDS else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return _PHONE.sub("***", value)
    return value


def mask_payload(record: dict[str, Any]) -> str:
    """The payload as ops may see it: PII fields and phone numbers replaced by ***."""
    raw = original_bytes(record)
    try:
        return orjson.dumps(_mask(orjson.loads(raw))).decode()
    except orjson.JSONDecodeError:
        text = _PII_TEXT.sub(r'"\1":"***"', raw.decode("utf-8", "replace"))
        return _PHONE.sub("***", text)[:500]


def summarize(records: list[dict[str, Any]], samples: int = 2) -> dict[str, Any]:
    by_reason = Counter(r["reason"] for r in records)
    out: dict[str, Any] = {
        "records": len(records),
        "by_reason": dict(by_reason.most_common()),
        "by_source_topic": dict(Counter(r["source"]["topic"] for r in records).most_common()),
        "by_stage": dict(Counter(r["stage"] for r in records).most_common()),
        "samples": {},
    }
    for reason in by_reason:
        picked = [r for r in records if r["reason"] == reason][:samples]
        out["samples"][reason] = [{"error": r["error"][:200], "source": r["source"],
                                   "payload": mask_payload(r)[:300]} for r in picked]
    return out


def inspect(settings: Settings, topic: str | None = None, samples: int = 2) -> dict[str, Any]:
    records = [r["value"] for r in read_all(settings, topic or settings.topics.dlq)]
    return summarize(records, samples)


def dlq_frame(records: list[dict[str, Any]]) -> Any:
    """One row per dead letter, payload masked: for pandas, CSV or parquet."""
    import pandas as pd

    return pd.DataFrame([{
        "reason": r["reason"], "stage": r["stage"], "error": r["error"],
        "topic": r["source"]["topic"], "partition": r["source"].get("partition"),
        "offset": r["source"].get("offset"), "key": r["source"].get("key"),
        "event_id": r.get("event_id"), "first_failure_at": r.get("first_failure_at"),
        "payload_masked": mask_payload(r)} for r in records])


def _fingerprint(record: dict[str, Any]) -> str:
    src = record.get("source", {})
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{src.get('topic')}|{src.get('key')}|".encode())
    digest.update(original_bytes(record))
    return digest.hexdigest()


def replay_reason(settings: Settings, reason: str, timeout_s: float = 120.0) -> int:
    """Re-inject the dead letters of ``reason`` present now; returns how many were sent.

    Idempotent: each original (source topic, key, bytes) is re-injected once, ever; the
    fingerprints of what was sent live in the compacted topic ``<dlq>.replayed``. Only the
    records present when the call starts are read, so records that fail again after
    re-injection are not fed back in a loop. (Needs true end offsets: Apache Kafka.)
    """
    ledger_topic = f"{settings.topics.dlq}.replayed"
    create_topics(settings.kafka.bootstrap_servers, {ledger_topic: 1},
                  config={"cleanup.policy": "compact"})
    done = {r["key"] for r in read_all(settings, ledger_topic, idle_s=1.0)}
    topic = settings.topics.dlq
    consumer = Consumer({**client_config(settings), "group.id": f"dlq-replay-{time.time_ns()}",
                         "enable.auto.commit": False})
    producer = Producer({**client_config(settings), "partitioner": "murmur2_random",
                         "enable.idempotence": True, "acks": "all"})
    md = consumer.list_topics(topic, timeout=10)
    ends: dict[int, int] = {}
    for p in (md.topics[topic].partitions if topic in md.topics else []):
        lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if hi > lo:
            ends[p] = hi
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    finished: set[int] = set()
    sent = 0
    deadline = time.monotonic() + timeout_s
    try:
        while len(finished) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            part, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends[part]:
                finished.add(part)
            if offset >= ends[part]:
                continue
            record = orjson.loads(msg.value() or b"{}")
            src = record.get("source", {})
            if record.get("reason") != reason or str(src.get("topic", "<")).startswith("<"):
                continue
            fp = _fingerprint(record)
            if fp in done:
                continue
            key = src.get("key")
            producer.produce(src["topic"], value=original_bytes(record),
                             key=key.encode() if key is not None else None)
            producer.produce(ledger_topic, key=fp.encode(), value=orjson.dumps(
                {"reason": reason, "source": src, "at": time.time()}))
            done.add(fp)
            sent += 1
            if sent % 1000 == 0:
                producer.flush(30)
    finally:
        unsent = producer.flush(30)
        consumer.close()
    if unsent:
        raise RuntimeError(f"{unsent} re-injected records were not acknowledged")
    return sent
