"""Admin alarms with explicit times: open at the threshold within the window, resolve at
half of it, one episode (and alert_id) per opening, bounded state."""

from __future__ import annotations

import doctest
import json

from delaywatch.config.thresholds import SystemThresholds, load_thresholds
from delaywatch.core import system
from delaywatch.core.system import SYSTEM_KINDS, Alarm, SystemAlarms
from delaywatch.models.audience import audience_for
from delaywatch.schemas.alerts import alert_id_for

TH = SystemThresholds(window_s=300, dlq_records=4, retries_exhausted=1, notifier_dead_letters=2)


def test_docstring_example() -> None:
    assert doctest.testmod(system).failed == 0


def test_defaults_come_from_thresholds_yaml() -> None:
    assert load_thresholds().system == SystemThresholds()


def test_opens_at_the_threshold_and_resolves_at_half_with_a_new_episode_next_time() -> None:
    alarms = SystemAlarms(TH)
    for t in (0, 10, 20):
        alarms.on_record("dlq_rate", float(t))
    assert alarms.check(30.0) == []
    alarms.on_record("dlq_rate", 40.0)
    [opened] = alarms.check(41.0)
    assert (opened.kind, opened.status, opened.category, opened.audience) == (
        "dlq_rate", "open", "system", "admin")
    assert opened.alert_id == alert_id_for("delaywatch", "dlq_rate", 1)
    assert opened.evidence == {"count": 4, "window_s": 300.0, "threshold": 4}
    assert alarms.check(200.0) == []  # still 4 in the window
    assert alarms.check(306.0) == []  # the record at 0 left: 3, above half
    [resolved] = alarms.check(315.0)  # the one at 10 too: 2 = half
    assert (resolved.status, resolved.alert_id) == ("resolved", opened.alert_id)
    for t in range(400, 404):
        alarms.on_record("dlq_rate", float(t))
    [again] = alarms.check(404.0)
    assert again.episode == 2 and again.alert_id == alert_id_for("delaywatch", "dlq_rate", 2)


def test_a_burst_read_late_is_reported_at_its_time_then_resolved() -> None:
    alarms = SystemAlarms(TH)
    for t in (0.0, 1.0, 2.0, 3.0):  # read after a downtime
        alarms.on_record("dlq_rate", t)
    opened, resolved = alarms.check(10_000.0)
    assert (opened.status, opened.detected_at.timestamp(), opened.evidence["count"]) == (
        "open", 3.0, 4)
    assert (resolved.status, resolved.detected_at.timestamp(), resolved.evidence["count"]) == (
        "resolved", 10_000.0, 0)
    # a backlog read while checks run: the window of record times still fills up
    alarms = SystemAlarms(TH)
    for t in (0.0, 100.0, 200.0, 250.0):
        alarms.check(5_000.0 + t)
        alarms.on_record("dlq_rate", t)
    assert [a.status for a in alarms.check(6_000.0)] == ["open", "resolved"]


def test_kinds_are_independent_and_mapped_to_admin() -> None:
    alarms = SystemAlarms(TH)
    alarms.on_record("retries_exhausted", 5.0)
    alarms.on_record("notifier_failures", 5.0)
    assert [a.kind for a in alarms.check(6.0)] == ["retries_exhausted"]
    assert all(audience_for(k, "system") == "admin" for k in SYSTEM_KINDS)


def test_state_is_bounded_and_round_trips() -> None:
    alarms = SystemAlarms(TH)
    for t in range(0, 100_000, 7):
        alarms.on_record("dlq_rate", float(t))
        if t % 35 == 0:  # the service checks every tick (1 s)
            alarms.check(float(t))
    # 60 buckets of 5 s in the window, plus what arrived since the last check
    assert len(alarms.alarms["dlq_rate"].buckets) <= 60 + 35 // 5 + 1
    rows = {k: Alarm.from_row(json.loads(json.dumps(a.to_row())))
            for k, a in alarms.take_changes().items()}
    again = SystemAlarms(TH).restore(rows)
    assert again.alarms == alarms.alarms and again.check(100_000.0) == alarms.check(100_000.0)
