"""Reference notifier on Apache Kafka: each alert message reaches the sink once, across
restarts and re-sent alerts; a sink that keeps failing ends in alerts.dlq."""

from __future__ import annotations

import random

import orjson
import pytest
from confluent_kafka import Producer

from delaywatch.kafka_io import client_config, create_all_topics, read_all
from delaywatch.notify import DeliveredStore, Notifier, file_sink
from delaywatch.replay import replay

pytestmark = pytest.mark.broker


def _send(settings, alerts, times: int = 1) -> None:
    p = Producer(client_config(settings))
    for _ in range(times):  # at-least-once upstream: the same alert may arrive twice
        for a in alerts:
            topic = settings.topics.alerts_delay if a.category == "delay" else \
                settings.topics.alerts_stock
            p.produce(topic, key=a.key.encode(), value=a.model_dump_json().encode())
    p.flush(30)


def test_each_alert_delivered_once_across_restarts(kafka, small_world, make_settings,
                                                   thresholds, tmp_path):
    settings = make_settings(partitions=2)
    settings.kafka.bootstrap_servers = kafka.bootstrap
    create_all_topics(settings)
    alerts = replay(small_world[0], settings, thresholds).alerts
    assert len(alerts) > 20
    _send(settings, alerts, times=2)
    out, store_path = tmp_path / "sink.jsonl", tmp_path / "store.sqlite"

    first = Notifier(settings, file_sink(out), DeliveredStore(store_path)).run(max_idle_s=5)
    assert first["delivered"] == len(alerts) and first["duplicates"] == len(alerts)
    # a restart in the same group sees nothing new; a new group sees everything again
    again = Notifier(settings, file_sink(out), DeliveredStore(store_path)).run(max_idle_s=4)
    assert again["delivered"] == 0
    other = Notifier(settings, file_sink(out), DeliveredStore(store_path),
                     group="another-notifier").run(max_idle_s=5)
    assert other["delivered"] == 0 and other["duplicates"] == 2 * len(alerts)
    keys = [DeliveredStore.key(orjson.loads(line)) for line in out.read_bytes().splitlines()]
    assert len(keys) == len(set(keys)) == len(alerts)


def test_flaky_sink_is_retried_and_a_dead_sink_is_dead_lettered(kafka, small_world,
                                                                make_settings, thresholds,
                                                                tmp_path):
    settings = make_settings(partitions=1)
    settings.kafka.bootstrap_servers = kafka.bootstrap
    create_all_topics(settings)
    alerts = replay(small_world[0], settings, thresholds).alerts[:30]
    _send(settings, alerts)
    rnd = random.Random(3)
    got: list[dict] = []

    def flaky(alert: dict) -> None:
        if rnd.random() < 0.3:
            raise ConnectionError("503 from the SMS gateway")
        got.append(alert)

    counts = Notifier(settings, flaky, DeliveredStore(tmp_path / "a.sqlite"),
                      backoff_s=0.01).run(max_idle_s=4)
    assert counts["delivered"] == len(alerts) == len(got) and counts["retries"] > 0

    def down(alert: dict) -> None:
        raise ConnectionError("gateway down")

    counts = Notifier(settings, down, DeliveredStore(tmp_path / "b.sqlite"), group="g2",
                      attempts=2, backoff_s=0.01).run(max_idle_s=4)
    assert counts["dead_lettered"] == len(alerts)
    assert len(read_all(settings, "alerts.dlq")) == len(alerts)
