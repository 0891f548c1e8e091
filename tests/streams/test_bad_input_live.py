"""Bad input through a live worker on Apache Kafka: >= 1,000 records of every bad kind all
land in the DLQ with a reason, the worker stays up, the good records' alerts do not change,
and no PII reaches the alerts or the worker's log."""

from __future__ import annotations

import urllib.request
from collections import Counter

import pytest

from delaywatch.corrupt import corrupt
from delaywatch.kafka_io import create_all_topics, produce_records
from delaywatch.replay import replay
from tests.streams.helpers import alert_signature, wait_for_outputs
from tests.test_pii import pii_strings

pytestmark = [pytest.mark.broker, pytest.mark.faults]


def test_bad_records_go_to_dlq_and_change_nothing(kafka, make_settings, thresholds,
                                                   worker_env, start_worker):
    from delaywatch.simulate import simulate

    good, _ = simulate(orders=300, seed=21, profile="stress")
    records = corrupt(good, per_kind=1000, seed=4)
    expected_bad = Counter(r["expect"] for r in records if r.get("expect"))
    assert all(expected_bad[k] >= 1000 for k in ("undecodable", "invalid_json", "unknown_enum",
                                                  "missing_field", "schema_violation",
                                                  "key_mismatch"))
    assert expected_bad["impossible_timestamp"] >= 2000  # future + before the order
    settings = make_settings(partitions=2)
    baseline = replay(good, settings, thresholds, flush=False)
    with_bad = replay(records, settings, thresholds, flush=False)
    n_bad = sum(v for k, v in expected_bad.items() if k != "duplicate")
    # Every bad record is dead-lettered once the event clock passes it (a scan dated before
    # its order is refused when it is ordered, so the last half hour waits for more input).
    flushed = replay(records, settings, thresholds, flush=True)
    clean = replay(good, settings, thresholds, flush=True)
    assert len(flushed.dead_letters) == len(clean.dead_letters) + n_bad

    env = worker_env(kafka, settings)
    create_all_topics(settings)
    produce_records(settings, records)
    worker = start_worker(env)
    live = wait_for_outputs(settings, worker, len(baseline.alerts), len(with_bad.dead_letters))

    assert worker.alive(), worker.log_tail()
    assert len(live["dlq"]) == len(with_bad.dead_letters)
    reasons = Counter(d["reason"] for d in live["dlq"])
    assert reasons == Counter(d.reason for d in with_bad.dead_letters)
    for d in live["dlq"]:
        assert d["error"] and d["source"]["topic"] and d["source"]["offset"] is not None
        assert d["payload"] or d["reason"] == "invalid_json"
    assert set(alert_signature(live["alerts"])) == set(alert_signature(
        [a.model_dump(mode="json") for a in baseline.alerts]))

    secrets = pii_strings(records)
    log_text = worker.log_path.read_text(errors="replace")
    alerts_text = str(live["alerts"])
    with urllib.request.urlopen(f"{worker.metrics_url()}/metrics", timeout=5) as resp:
        metrics_text = resp.read().decode()
    assert "delaywatch_dead_letters_total" in metrics_text
    leaked = [s for s in secrets if s in log_text or s in alerts_text or s in metrics_text]
    assert not leaked, f"PII in worker log, alerts or metrics: {leaked[:3]}"
    # ... nor in any topic on the broker but the inputs and the restricted ones that keep
    # original bytes for re-processing (DLQ, retry tiers): changelogs, alerts, internal
    from confluent_kafka.admin import AdminClient

    from delaywatch.bench_kafka import read_topic
    from delaywatch.kafka_io import client_config

    t = settings.topics
    restricted = {t.orders, t.inventory, t.scans, t.dlq, *(tier for tier, _ in t.retry_tiers)}
    topics = sorted(n for n in AdminClient(client_config(settings)).list_topics(
        timeout=10).topics if n not in restricted and not n.startswith("__"))
    assert any(n.endswith("-changelog") for n in topics) and t.alerts_delay in topics
    leaks_in = {}
    for name in topics:
        blob = b"\n".join((m.key() or b"") + b" " + (m.value() or b"")
                          for m in read_topic(settings, name))
        found = [s for s in secrets if s.encode() in blob]
        if found:
            leaks_in[name] = len(found)
    assert not leaks_in, f"PII in topics {leaks_in}"
    # ops tools: inspect agrees with the topic; replay re-injects each original once, and
    # the copies that fail again are not fed back
    from delaywatch.dlq import inspect, replay_reason

    summary = inspect(settings, samples=50)
    assert summary["by_reason"] == dict(reasons)
    shown = str(summary["samples"])
    assert not [s for s in pii_strings(records) if s in shown], "PII in DLQ samples for ops"
    assert replay_reason(settings, "key_mismatch") == 1000
    assert replay_reason(settings, "key_mismatch") == 0  # idempotent
    again = wait_for_outputs(settings, worker, len(baseline.alerts),
                             len(with_bad.dead_letters) + 1000)
    assert Counter(d["reason"] for d in again["dlq"])["key_mismatch"] == 2000  # still bad keys

    print(f"\nbad input live: {n_bad} bad records ({dict(expected_bad)}), "
          f"{len(live['dlq'])} dead letters by reason {dict(reasons)}, worker alive, "
          f"{len(set(alert_signature(live['alerts'])))} alerts identical to the clean run; "
          f"no PII ({len(secrets)} customer strings) in alerts, worker log, /metrics, the "
          f"DLQ samples for ops or {len(topics)} topics ({', '.join(topics)})")
