"""`delaywatch monitor` on Apache Kafka: the same system alerts as replay, across a restart."""

from __future__ import annotations

import threading
import time

import pytest

from delaywatch.config import load_thresholds
from delaywatch.kafka_io import create_all_topics, produce_records, read_all
from delaywatch.monitor_service import MonitorService
from delaywatch.replay import replay
from delaywatch.simulate import simulate

pytestmark = pytest.mark.broker


def test_the_monitor_service_equals_replay_across_a_restart(kafka, make_settings, tmp_path):
    settings = make_settings(partitions=4)
    settings.kafka.bootstrap_servers = kafka.bootstrap
    create_all_topics(settings)
    th = load_thresholds()
    # a small world: judge smaller feeds and the first day's history (replay decides alike)
    th = th.model_copy(update={"monitor": th.monitor.model_copy(
        update={"min_expected": 12, "min_slot_samples": 1})})
    # without noise: records produced today carry today's timestamps, so the simulator's
    # "from the future" events (weeks after their history) would pass the live decoder and
    # fail replay's (which reads their simulated send time)
    records, _ = simulate(orders=6000, seed=7, scenario="carrier_outage", noise=False,
                          profile="stress")
    # no end-of-file flush: a live service never learns that its input ended
    expected = replay(records, settings, th, flush=False)
    want = {(a.alert_id, a.status.value, a.key, a.detected_at.isoformat())
            for a in expected.system}
    assert any(k == "feed_outage:scans:CJ" for _, _, k, _ in want)

    produce_records(settings, records)
    produce_records(settings, ({"topic": settings.topics.alerts_delay
                                if a.category == "delay" else settings.topics.alerts_stock,
                                "key": a.key, "value": a.model_dump(mode="json")}
                               for a in expected.alerts))
    state = tmp_path / "monitor.state"
    # a partition read to its end and then silent for idle_advance_s stops holding the
    # watermark live; replay (no flush) keeps waiting for it: not within this comparison
    first = MonitorService(settings, state, th, checkpoint_s=1.0, idle_advance_s=3600.0)
    first.run(max_idle_s=10, should_stop=lambda: first.sent >= 1)  # stops after one alert
    second = MonitorService(settings, state, th, checkpoint_s=1.0,  # resumes from its file
                            idle_advance_s=3600.0)
    second.run(max_idle_s=8)

    got = [r["value"] for r in read_all(settings, settings.topics.alerts_system)]
    distinct = {(v["alert_id"], v["status"], v["key"], v["detected_at"]) for v in got}
    print(f"\nmonitor on Kafka: {first.consumed} + {second.consumed} records consumed, "
          f"{first.sent} + {second.sent} system alerts sent across a "
          f"restart, {len(distinct)} distinct, replay {len(want)}: "
          f"{sorted((k, s) for _, s, k, _ in distinct)}")
    assert {(i, s, k) for i, s, k, _ in distinct} == {(i, s, k) for i, s, k, _ in want}
    assert len(got) == len(distinct)  # a graceful stop re-sends nothing


def test_a_whole_scan_topic_gone_silent_is_judged_on_the_wall_clock(kafka, make_settings,
                                                                     tmp_path):
    """Every carrier's scans stop at 10:00 on the third day (the TMS integration is down)
    while orders and inventory flow on. Replay would wait for the scans topic's clock
    forever; the live service finds its partitions read to their end and silent on the wall
    clock while the other topics deliver, judges without them, and opens one feed_outage per
    carrier: the busiest (CJ) within the hour, thinner ones once their normal count over the
    window is large enough to call its absence silence (min_expected)."""
    from datetime import datetime, timedelta

    settings = make_settings(partitions=2)
    settings.kafka.bootstrap_servers = kafka.bootstrap
    create_all_topics(settings)
    th = load_thresholds()
    th = th.model_copy(update={"monitor": th.monitor.model_copy(
        update={"min_expected": 12, "min_slot_samples": 1})})
    records, truth = simulate(orders=6000, seed=7, noise=False, profile="stress")
    cut = datetime.fromisoformat(truth[0]["start"]) + timedelta(days=2, hours=10)

    def after_cut(r: dict) -> bool:
        return r["topic"] == "carrier-scans" and datetime.fromisoformat(
            r["value"]["occurred_at"]) >= cut

    assert settings.topics.scans == "carrier-scans"
    before = [r for r in records if r["ts"] < cut.timestamp() * 1000]
    later = [r for r in records[len(before):] if not after_cut(r)]
    assert len(before) + len(later) < len(records)
    produce_records(settings, before)  # the backlog up to the cut...

    def live() -> None:  # ...then the other feeds flow on while the service runs
        for i in range(0, len(later), 4000):
            time.sleep(0.3)
            produce_records(settings, later[i:i + 4000])

    feeder = threading.Thread(target=live)
    service = MonitorService(settings, tmp_path / "monitor.state", th, checkpoint_s=0.2,
                             idle_advance_s=1.0)
    feeder.start()
    service.run(max_idle_s=5)
    feeder.join()
    got = [r["value"] for r in read_all(settings, settings.topics.alerts_system)]
    opened = {v["key"]: datetime.fromisoformat(v["detected_at"]) for v in got
              if v["kind"] == "feed_outage" and v["status"] == "open"}
    print(f"\nscans silent from {cut.isoformat()}: " + ", ".join(
        f"{k} +{(t - cut).total_seconds() / 60:.0f} min" for k, t in sorted(opened.items())
        if k.startswith("feed_outage:scans:")))
    carriers = {r["value"]["carrier"] for r in records if r["topic"] == "carrier-scans"}
    assert {f"feed_outage:scans:{c}" for c in carriers} <= set(opened)
    assert all(opened[f"feed_outage:scans:{c}"] > cut for c in carriers)
    assert opened["feed_outage:scans:CJ"] - cut <= timedelta(minutes=60)
