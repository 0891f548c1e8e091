"""Reference notifier on Apache Kafka: each alert message reaches the sink once, across
restarts and re-sent alerts; a failing sink is ridden out through the retry tiers (held until
due, without blocking the alert topics); a sink that stays down ends in alerts.dlq."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from delaywatch.kafka_io import client_config, create_all_topics, read_all
from delaywatch.notify import HEADERS, DeliveredStore, Notifier, RetryTier, file_sink
from delaywatch.replay import replay


def _send(settings, alerts, times: int = 1) -> None:
    p = Producer(client_config(settings))
    for _ in range(times):  # at-least-once upstream: the same alert may arrive twice
        for a in alerts:
            topic = settings.topics.alerts_delay if a.category == "delay" else \
                settings.topics.alerts_stock
            p.produce(topic, key=a.key.encode(), value=a.model_dump_json().encode())
    p.flush(30)


@pytest.fixture
def alerts_on_kafka(kafka, small_world, make_settings, thresholds):
    """(settings on the test's broker with its topics, the small world's alerts)."""
    settings = make_settings(partitions=2)
    settings.kafka.bootstrap_servers = kafka.bootstrap
    create_all_topics(settings)
    return settings, replay(small_world[0], settings, thresholds).alerts


def test_store_remembers_deliveries_and_resolutions_and_prunes_old_ones(tmp_path: Path):
    store = DeliveredStore(tmp_path / "s.sqlite")
    opened = {"alert_id": "al-1", "status": "open", "severity": "high"}
    store.mark(opened)
    assert store.seen(opened) and not store.seen({**opened, "severity": "critical"})
    assert store.delivered_any("al-1") and not store.delivered_any("al-")
    assert not store.delivered_any("al-10")  # a prefix of another id is not that id
    store.mark_resolved("al-2")
    assert store.is_resolved("al-2") and not store.is_resolved("al-1")
    store.db.execute("UPDATE delivered SET at = 0")
    store.db.commit()
    store.close()
    again = DeliveredStore(tmp_path / "s.sqlite", keep_days=1)
    assert not again.seen(opened) and again.is_resolved("al-2")


@pytest.mark.broker
def test_each_alert_delivered_once_across_restarts(alerts_on_kafka, tmp_path):
    settings, alerts = alerts_on_kafka
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


@pytest.mark.broker
def test_flaky_sink_rides_the_tiers_and_a_dead_sink_is_dead_lettered(alerts_on_kafka,
                                                                      tmp_path):
    settings, alerts = alerts_on_kafka
    alerts = alerts[:30]
    _send(settings, alerts)
    garbage = Producer(client_config(settings))
    garbage.produce(settings.topics.alerts_delay, value=b"{oops")
    garbage.flush(30)
    rnd = random.Random(3)
    got: list[dict] = []

    def flaky(alert: dict) -> None:
        if rnd.random() < 0.5:
            raise ConnectionError("503 from the SMS gateway")
        got.append(alert)

    tiers = (RetryTier("alerts.retry.a", 0.5, attempts=2), RetryTier("alerts.retry.b", 1.0, 6))
    counts = Notifier(settings, flaky, DeliveredStore(tmp_path / "a.sqlite"), tiers=tiers,
                      backoff_s=0.01).run(max_idle_s=4)
    assert counts["delivered"] == len(alerts) == len(got)
    assert counts["retried:alerts.retry.a"] > 0 and counts["sink_failures"] > 0
    assert counts["dead_lettered"] == 1  # the undecodable record, at once

    def down(alert: dict) -> None:
        raise ConnectionError("gateway down")

    first_retries = counts["retried"]
    counts = Notifier(settings, down, DeliveredStore(tmp_path / "b.sqlite"), group="g2",
                      tiers=tiers, attempts=1, backoff_s=0.01).run(max_idle_s=4)
    assert counts["other_group"] == first_retries  # the first group's retries are its own
    assert counts["retried:alerts.retry.a"] == 2 * len(alerts)
    assert counts["retried:alerts.retry.b"] == 6 * len(alerts)
    assert counts["dead_lettered"] == len(alerts) + 1
    dlq = read_all(settings, "alerts.dlq", parse=False)
    assert len(dlq) == 2 * 1 + len(alerts)  # the undecodable record once per group
    exhausted = [r for r in dlq if r["headers"].get(HEADERS["reason"]) == "retries_exhausted"]
    assert len(exhausted) == len(alerts)
    h = exhausted[0]["headers"]
    assert h[HEADERS["attempts"]] == "9" and h[HEADERS["last_error"]].endswith("gateway down")
    assert h[HEADERS["topic"]] in (settings.topics.alerts_delay, settings.topics.alerts_stock)
    assert int(h[HEADERS["first_failure"]]) <= int(h[HEADERS["last_failure"]])
    assert "dw-source" not in h or h["dw-source"]  # the alert's own headers are kept
    origins = {(r["headers"][HEADERS["topic"]], r["headers"][HEADERS["partition"]],
                r["headers"][HEADERS["offset"]]) for r in exhausted}
    assert len(origins) == len(alerts)
    tier_a = read_all(settings, "alerts.retry.a")
    assert all(int(r["headers"][HEADERS["due"]]) >= int(r["headers"][HEADERS["last_failure"]])
               + 500 for r in tier_a)


@pytest.mark.broker
def test_a_held_tier_record_waits_for_its_due_time_without_blocking_the_alert_topics(
        alerts_on_kafka, tmp_path):
    settings, alerts = alerts_on_kafka
    first, second = alerts[:20], alerts[20:40]
    def key(a) -> str:
        return DeliveredStore.key(a.model_dump(mode="json"))

    failing = {key(first[0]), key(first[5])}
    failed_at: dict[str, float] = {}
    delivered_at: dict[str, float] = {}

    def sink(alert: dict) -> None:
        k = DeliveredStore.key(alert)
        if k in failing and k not in failed_at:
            failed_at[k] = time.time()
            raise ConnectionError("timeout")
        delivered_at[k] = time.time()

    delay = 8.0
    notifier = Notifier(settings, sink, DeliveredStore(tmp_path / "s.sqlite"), attempts=1,
                        tiers=(RetryTier("alerts.retry.8s", delay),))
    stop = threading.Event()
    runner = threading.Thread(target=notifier.run, kwargs={"should_stop": stop.is_set})
    runner.start()
    try:
        _send(settings, first)
        deadline = time.monotonic() + 30
        while not notifier.held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert notifier.held, "no tier record was held"
        _send(settings, second)  # arrives while the tier partition is paused
        while len(delivered_at) < 40 and time.monotonic() < deadline + delay:
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(30)
    assert len(delivered_at) == 40
    retried = {k: delivered_at[k] for k in failing}
    for k, t in retried.items():
        assert t >= failed_at[k] + delay - 0.01
    later = [delivered_at[key(a)] for a in second]
    assert max(later) < min(retried.values()), "the held tier record blocked the alerts"
    assert notifier.counts["retried:alerts.retry.8s"] == 2


@pytest.mark.broker
def test_no_message_for_an_alert_resolved_before_delivery_when_configured(alerts_on_kafka,
                                                                          tmp_path):
    settings, alerts = alerts_on_kafka
    status: dict[str, set[str]] = {}
    for a in alerts:
        status.setdefault(a.alert_id, set()).add(a.status)
    both = [i for i, s in status.items() if s == {"open", "resolved"}][:3]
    assert both
    chosen = [a for a in alerts if a.alert_id in both] + [
        a for a in alerts if a.alert_id not in both][:10]
    _send(settings, chosen)

    def run(skip: bool, name: str) -> tuple[dict[str, int], list[dict]]:
        got: list[dict] = []
        failed: set[str] = set()

        def sink(alert: dict) -> None:  # the first open of each chosen alert fails
            if alert["alert_id"] in both and alert["alert_id"] not in failed:
                failed.add(alert["alert_id"])
                raise ConnectionError("gateway timeout")
            got.append(alert)

        counts = Notifier(settings, sink, DeliveredStore(tmp_path / f"{name}.sqlite"),
                          group=name, attempts=1, tiers=(RetryTier(f"retry.{name}", 1.0),),
                          skip_resolved_before_delivery=skip).run(max_idle_s=4)
        return counts, got

    counts, got = run(True, "skipping")
    assert not {a["alert_id"] for a in got} & set(both)
    assert counts["skipped_resolved"] == 2 * len(both)  # each resolved and its open
    assert len(got) == len(chosen) - 2 * len(both)
    counts, got = run(False, "delivering")
    assert counts["skipped_resolved"] == 0 and len(got) == len(chosen)


def test_escalation_copies_are_not_deduped_against_the_alerts_own_messages(tmp_path: Path):
    store = DeliveredStore(tmp_path / "s.sqlite")
    updated = {"alert_id": "al-1", "status": "updated", "severity": "critical", "evidence": {}}
    store.mark(updated)
    copy = {**updated, "evidence": {"escalation": {"level": 2, "after_s": 900.0}}}
    assert not store.seen(copy)  # a re-page at critical is news
    store.mark(copy)
    assert store.seen(copy) and not store.seen(
        {**copy, "evidence": {"escalation": {"level": 3}}})
    assert DeliveredStore.key(copy) == "al-1|updated|critical|esc2"
