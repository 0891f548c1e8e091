"""kill -9 of the worker mid-stream on Apache Kafka: the restarted worker restores its tables
from the changelog and the alerts are exactly those of an uninterrupted run (duplicates
only as identical alert ids: Faust is at-least-once)."""

from __future__ import annotations

import time

import pytest

from delaywatch.kafka_io import create_all_topics, produce_records, read_all
from delaywatch.replay import replay
from tests.streams.helpers import alert_signature, wait_for_outputs

pytestmark = pytest.mark.broker


def test_kill_9_mid_stream_loses_and_invents_nothing(kafka, small_world, make_settings,
                                                     thresholds, worker_env, start_worker):
    records, _ = small_world
    settings = make_settings(partitions=4)
    expected = replay(records, settings, thresholds, flush=False)
    env = worker_env(kafka, settings)
    create_all_topics(settings)
    half = len(records) // 2
    produce_records(settings, records[:half])  # the second half arrives after the crash

    worker = start_worker(env)
    deadline = time.monotonic() + 120
    seen = 0
    while time.monotonic() < deadline and seen < 20:
        seen = len(read_all(settings, settings.topics.alerts_delay, idle_s=0.5))
        time.sleep(0.5)
    assert 0 < seen < len(expected.alerts), "kill must land mid-stream"
    worker.kill9()

    produce_records(settings, records[half:])
    restarted = start_worker(env)
    live = wait_for_outputs(settings, restarted, len(expected.alerts),
                            len(expected.dead_letters))
    got = alert_signature(live["alerts"])
    want = alert_signature([a.model_dump(mode="json") for a in expected.alerts])
    assert set(got) == set(want), (
        f"missing {sorted(set(want) - set(got))[:5]} extra {sorted(set(got) - set(want))[:5]}")
    duplicates = sum(got.values()) - len(got)
    print(f"\nkill -9 after {seen} alerts: {len(got)} distinct alerts == uninterrupted run, "
          f"{duplicates} re-sent duplicates (same alert_id)")
