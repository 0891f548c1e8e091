"""Producing events files into Kafka and reading topics back (CLI, demo, tests, notifier).

confluent-kafka with ``partitioner=murmur2_random``: the same partition for a key as the Java
client and aiokafka (Faust), which replay's partition routing relies on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from delaywatch.broker import create_topics
from delaywatch.config.settings import Settings
from delaywatch.replay import iter_records, record_bytes

__all__ = [
    "client_config",
    "committed_lag",
    "consume",
    "create_all_topics",
    "ensure_topics",
    "input_topics",
    "produce_records",
    "read_all",
    "read_range",
]


def client_config(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    conf: dict[str, Any] = {"bootstrap.servers": k.bootstrap_servers,
                            "security.protocol": k.security_protocol}
    if k.sasl_mechanism:
        conf["sasl.mechanism"] = k.sasl_mechanism
    if k.sasl_username:
        conf["sasl.username"] = k.sasl_username
    if k.sasl_password:
        conf["sasl.password"] = k.sasl_password.get_secret_value()
    if k.ssl_cafile:
        conf["ssl.ca.location"] = str(k.ssl_cafile)
    return conf


def create_all_topics(settings: Settings) -> None:
    t = settings.topics
    names = [t.orders, t.inventory, t.scans, t.alerts_delay, t.alerts_stock, t.dlq,
             t.order_lines, t.stock_notices, *(name for name, _ in t.retry_tiers),
             t.alerts_ack, t.alerts_escalation, t.alerts_system]
    create_topics(settings.kafka.bootstrap_servers,
                  {**dict.fromkeys(names, t.partitions), t.model: 1},
                  replication_factor=t.replication_factor)


def ensure_topics(settings: Settings, names: list[str], consumer: Consumer | None = None,
                  wait_for: list[str] | None = None) -> None:
    """Create ``names`` if missing (``settings.topics.partitions`` partitions each), with the
    service's own client config (SASL/SSL), and wait until ``consumer``'s metadata shows
    each of ``wait_for`` with leaders: a topic the group's metadata does not show yet is
    left out of the assignment until the next metadata refresh, minutes later."""
    admin = AdminClient(client_config(settings))
    t = settings.topics
    new = [NewTopic(name, num_partitions=t.partitions, replication_factor=t.replication_factor)
           for name in names]
    for name, fut in admin.create_topics(new, operation_timeout=30).items():
        exc = fut.exception(timeout=30)
        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        if exc is not None and not (isinstance(err, KafkaError)
                                    and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise RuntimeError(f"cannot create {name}: {exc}")
    if consumer is None:
        return
    deadline = time.monotonic() + 30
    for name in wait_for or []:
        while time.monotonic() < deadline:
            topic = consumer.list_topics(name, timeout=10).topics.get(name)
            if (topic is not None and topic.error is None and topic.partitions
                    and all(p.leader >= 0 for p in topic.partitions.values())):
                break
            time.sleep(0.2)


def produce_records(
    settings: Settings, records: Iterable[dict[str, Any]], *, speedup: float | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Send events-file records in order. ``speedup`` paces them by their ``ts`` (event time
    divided by speedup); None sends as fast as possible. Record timestamps are the send time:
    simulated history carries old ``ts`` values that time-based retention would delete."""
    producer = Producer({**client_config(settings), "partitioner": "murmur2_random",
                         "enable.idempotence": True, "acks": "all", "linger.ms": 20})
    sent = 0
    t_wall0: float | None = None
    t_ev0: float | None = None
    for rec in records:
        if should_stop is not None and should_stop():
            break
        ts = rec.get("ts")
        if speedup and ts is not None:
            if t_wall0 is None or t_ev0 is None:
                t_wall0, t_ev0 = time.monotonic(), ts / 1000
            delay = (ts / 1000 - t_ev0) / speedup - (time.monotonic() - t_wall0)
            if delay > 0:
                producer.poll(0)
                time.sleep(delay)
        key = rec.get("key")
        value, kbytes = record_bytes(rec), key.encode() if key is not None else None
        while True:
            try:
                producer.produce(rec["topic"], value=value, key=kbytes)
                break
            except BufferError:  # librdkafka's local queue is full: let it deliver
                producer.poll(0.1)
        sent += 1
        if sent % 1_000 == 0:
            producer.poll(0)
        if on_record is not None:
            on_record(rec)
    if producer.flush(60) != 0:
        raise RuntimeError("producer could not deliver every record within 60 s")
    return sent


def produce_file(settings: Settings, path: Path, **kwargs: Any) -> int:
    return produce_records(settings, iter_records(path), **kwargs)


def consume(
    settings: Settings, topics: list[str], *, group: str | None = None,
    from_beginning: bool = True, poll_s: float = 0.5,
) -> Iterator[Any]:
    """Yield confluent-kafka messages forever (the caller stops iterating)."""
    conf = {**client_config(settings), "group.id": group or f"delaywatch-reader-{time.time_ns()}",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": group is not None}
    consumer = Consumer(conf)
    consumer.subscribe(topics)
    try:
        while True:
            msg = consumer.poll(poll_s)
            if msg is None:
                yield None
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(str(err))
            yield msg
    finally:
        consumer.close()


def read_all(settings: Settings, topic: str, timeout_s: float = 30.0,
             idle_s: float = 2.0, parse: bool = True) -> list[dict[str, Any]]:
    """Every record now in ``topic`` (values parsed as JSON unless ``parse`` is false; with
    partition, offset, key, timestamp_ms and headers), read by assigned partitions
    until nothing new arrives for ``idle_s``. End offsets are not trusted: Tansu reports them
    wrong (first offset of the last batch + 1)."""
    conf = {**client_config(settings), "group.id": f"delaywatch-read-{time.time_ns()}",
            "enable.auto.commit": False}
    consumer = Consumer(conf)
    try:
        md = consumer.list_topics(topic, timeout=10)
        parts = list(md.topics[topic].partitions) if topic in md.topics else []
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_new < idle_s:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            last_new = time.monotonic()
            key, value = msg.key(), msg.value()
            out.append({"partition": msg.partition(), "offset": msg.offset(),
                        "key": key.decode() if key else None,
                        "value": (orjson.loads(value) if parse else value) if value else None,
                        "timestamp_ms": msg.timestamp()[1],
                        "headers": _headers(msg.headers())})
        return out
    finally:
        consumer.close()


def read_range(settings: Settings, topic: str, partition: int, start: int, end: int,
               timeout_s: float = 30.0) -> list[Any]:
    """The records of one partition with ``start <= offset < end``, in offset order, as
    confluent-kafka messages; fewer where offsets hold no record (transaction markers,
    compaction). ``end`` must be the offset of a record that exists: reading stops at it."""
    conf = {**client_config(settings), "group.id": f"delaywatch-range-{time.time_ns()}",
            "enable.auto.commit": False, "enable.partition.eof": True}
    consumer = Consumer(conf)
    try:
        out: list[Any] = []
        if start >= end:
            return out
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err, offset = msg.error(), msg.offset() or 0
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if offset >= end:
                        return out
                    continue
                raise RuntimeError(str(err))
            if offset >= end:
                return out
            out.append(msg)
        raise TimeoutError(f"{topic}[{partition}] {start}..{end}: not read in {timeout_s} s")
    finally:
        consumer.close()


def _headers(raw: Any) -> dict[str, str]:
    return {str(k): (v or b"").decode("utf-8", "replace") for k, v in (raw or [])}


_COORDINATOR_NOT_READY = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                          KafkaError.COORDINATOR_NOT_AVAILABLE)


def committed_lag(settings: Settings, group: str, topics: list[str]
                  ) -> dict[tuple[str, int], tuple[int | None, int]]:
    """(committed offset or None, end offset) per partition of ``topics`` for the consumer
    group ``group``, read without joining it."""
    conf = {**client_config(settings), "group.id": group, "enable.auto.commit": False}
    consumer = Consumer(conf)
    try:
        tps = []
        md = consumer.list_topics(timeout=10)
        for topic in topics:
            if topic in md.topics:
                tps += [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        out: dict[tuple[str, int], tuple[int | None, int]] = {}
        deadline = time.monotonic() + 30
        while True:
            try:
                committed = consumer.committed(tps, timeout=10)
                break
            except KafkaException as exc:  # the group's coordinator is still loading
                if exc.args[0].code() not in _COORDINATOR_NOT_READY or (
                        time.monotonic() > deadline):
                    raise
                time.sleep(0.5)
        for tp in committed:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            out[(tp.topic, tp.partition)] = (tp.offset if tp.offset >= 0 else None, high)
        return out
    finally:
        consumer.close()


def input_topics(settings: Settings) -> list[str]:
    """The topics the worker consumes (sources and its own internal re-keyed topics)."""
    t = settings.topics
    return [t.orders, t.inventory, t.scans, t.order_lines, t.stock_notices]
