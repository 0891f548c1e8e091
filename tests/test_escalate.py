"""Escalation and acknowledgement on Apache Kafka (issue #8's acceptance): an unacknowledged
open alert escalates once, an acknowledged one never; the service's state survives restarts
(nothing forgotten, nothing escalated twice); the notifier delivers the copy. Admin alarms:
dead letters past their thresholds open alerts on alerts.system, which resolve when the
window has passed."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from delaywatch.config.thresholds import EscalationThresholds, SystemThresholds
from delaywatch.escalate import EscalationService, EscalationStore
from delaywatch.kafka_io import client_config, create_all_topics, read_all
from delaywatch.notify import DeliveredStore, Notifier, file_sink
from delaywatch.schemas.acks import Ack
from delaywatch.schemas.alerts import Alert, alert_id_for
from delaywatch.schemas.dlq import DeadLetter, SourceRef

TH = EscalationThresholds(after_s={"high": 3.0})  # high -> critical after 3 s; then never


def _alert(order_id: str) -> Alert:
    return Alert(alert_id=alert_id_for(order_id, "promise_broken", 1), status="open",
                 category="delay", kind="promise_broken", key=order_id, episode=1,
                 severity="high", reason_codes=["promise_passed"], evidence={"late_h": 1.0},
                 detected_at=datetime.now(UTC), order_id=order_id)


def _service(settings, store: Path, clock=time.time) -> EscalationService:
    return EscalationService(settings, EscalationStore(store), TH, clock=clock, tick_s=0.2)


def test_store_round_trips_the_escalator(tmp_path: Path) -> None:
    store = EscalationStore(tmp_path / "s.sqlite")
    esc = store.load(TH)
    esc.on_alert(_alert("O-1"), 100.0)
    esc.on_ack(Ack(alert_id="al-x", by="ops", at=datetime.now(UTC)), 100.0)
    store.save(esc)
    store.close()
    again = EscalationStore(tmp_path / "s.sqlite").load(TH)
    assert again.alerts == esc.alerts and again.pending_acks == esc.pending_acks
    assert again.next_due() == 103.0


class _Msg:
    """The parts of a confluent-kafka message the service reads."""

    def __init__(self, topic: str, value: bytes, ts_ms: int) -> None:
        self._topic, self._value, self._ts = topic, value, ts_ms

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


def test_invalid_records_are_skipped_and_an_unacknowledged_send_is_retried(
        make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    settings.kafka.bootstrap_servers = "127.0.0.1:1"  # nobody there: sends are not acked
    now = [1_000.0]
    service = EscalationService(settings, EscalationStore(tmp_path / "e.sqlite"), TH,
                                clock=lambda: now[0], ack_timeout_s=0.5)
    try:
        t = settings.topics
        service.handle(_Msg(t.alerts_ack, b"{oops", 1_000_000))
        service.handle(_Msg(t.alerts_delay, b'{"alert_id": "x"}', 1_000_000))
        service.handle(_Msg(t.alerts_delay, _alert("O-1").model_dump_json().encode(),
                            999_000))
        assert (service.counts["invalid"], service.counts["alerts"]) == (2, 1)
        assert service.escalator.next_due() == 1_002.0  # published at 999 s
        now[0] = 1_010.0
        assert service.tick() == 0 and service.counts["produce_failures"] == 1
        # the escalation was not recorded as sent: it is due again on the next tick
        assert service.escalator.next_due() == 1_002.0
        assert EscalationStore(tmp_path / "e.sqlite").load(TH).next_due() == 1_002.0
    finally:
        service.consumer.close()


@pytest.mark.broker
def test_unacked_alert_escalates_once_acked_never_across_restarts(kafka, make_settings,
                                                                   tmp_path):
    settings = make_settings(partitions=2)
    settings.kafka.bootstrap_servers = kafka.bootstrap
    create_all_topics(settings)
    unacked, acked = _alert("O-1"), _alert("O-2")
    t0 = time.time()
    p = Producer(client_config(settings))
    for a in (unacked, acked):
        p.produce(settings.topics.alerts_delay, key=a.key.encode(),
                  value=a.model_dump_json().encode())
    ack = Ack(alert_id=acked.alert_id, by="ops-kim", at=datetime.now(UTC), note="on it")
    p.produce(settings.topics.alerts_ack, key=ack.alert_id.encode(),
              value=ack.model_dump_json().encode())
    assert p.flush(30) == 0
    store = tmp_path / "escalator.sqlite"

    # 1. the service reads the three records while its clock stands at t0, then stops:
    #    as if it went down before anything was due
    first = _service(settings, store, clock=lambda: t0)
    deadline = time.monotonic() + 60
    c1 = dict(first.run(should_stop=lambda: time.monotonic() > deadline or (
        first.counts["alerts"] >= 2 and first.counts["acks"] >= 1)))
    # 2. restarted on the same store with the wall clock: the unacked alert is due 3 s after
    #    it was published, from the stored state (its record is not read again)
    s2 = time.monotonic()
    c2 = dict(_service(settings, store).run(max_idle_s=4))
    w2 = time.monotonic() - s2
    # 3. restarted again: nothing new, nothing due
    c3 = dict(_service(settings, store).run(max_idle_s=4))
    escalations = read_all(settings, settings.topics.alerts_escalation)
    # the reference notifier delivers the alerts and the escalation copy
    sink = tmp_path / "delivered.jsonl"
    n = Notifier(settings, file_sink(sink), DeliveredStore(tmp_path / "n.sqlite"),
                 tiers=()).run(max_idle_s=4)
    delivered = [orjson.loads(line) for line in sink.read_bytes().splitlines()]

    print(f"\nrun 1 (clock held at t0): alerts {c1['alerts']}, acks {c1['acks']}, "
          f"escalated {c1['escalated']}")
    print(f"run 2 (restart, wall clock): alerts read {c2['alerts']}, escalated "
          f"{c2['escalated']} (critical {c2['escalated:critical']}), run {w2:.1f} s")
    print(f"run 3 (restart): alerts read {c3['alerts']}, escalated {c3['escalated']}")
    for r in escalations:
        v = r["value"]
        print(f"alerts.escalation: key {r['key']} alert_id {v['alert_id']} "
              f"{v['status']} {v['severity']} audience {v['audience']} "
              f"escalation {v['evidence']['escalation']}")
    print(f"notifier: delivered {n['delivered']} "
          f"({sorted((d['key'], d['status'], d['severity']) for d in delivered)})")

    assert (c1["alerts"], c1["acks"], c1["escalated"], c1["invalid"]) == (2, 1, 0, 0)
    assert (c2["alerts"], c2["acks"], c2["escalated"], c2["escalated:critical"]) == (0, 0, 1, 1)
    assert (c3["alerts"], c3["acks"], c3["escalated"]) == (0, 0, 0)
    assert len(escalations) == 1
    copy = Alert.model_validate(escalations[0]["value"])
    assert copy.alert_id == unacked.alert_id and escalations[0]["key"] == "O-1"
    assert (copy.status, copy.severity, copy.audience) == ("updated", "critical", "cs")
    esc = copy.evidence["escalation"]
    assert (esc["level"], esc["after_s"], esc["from_severity"]) == (1, 3.0, "high")
    assert copy.detected_at.timestamp() == pytest.approx(t0 + 3.0, abs=0.001)
    assert copy.evidence["late_h"] == 1.0
    assert n["delivered"] == 3 and n["duplicates"] == 0
    assert sorted((d["key"], d["severity"]) for d in delivered) == [
        ("O-1", "critical"), ("O-1", "high"), ("O-2", "high")]


@pytest.mark.broker
def test_dead_letters_past_their_thresholds_raise_admin_alerts(kafka, make_settings,
                                                               tmp_path):
    settings = make_settings(partitions=2)
    settings.kafka.bootstrap_servers = kafka.bootstrap
    create_all_topics(settings)
    p = Producer(client_config(settings))
    for reason in ("retries_exhausted", "invalid_json"):
        dead = DeadLetter(reason=reason, error="e", stage="process",
                          source=SourceRef(topic="orders"), payload="{}")
        p.produce(settings.topics.dlq, value=dead.model_dump_json().encode())
    p.produce(settings.notifier.dlq_topic, value=b"{oops")  # an alert the notifier gave up on
    assert p.flush(30) == 0
    system = SystemThresholds(window_s=4, dlq_records=2, retries_exhausted=1,
                              notifier_dead_letters=1)
    service = EscalationService(settings, EscalationStore(tmp_path / "e.sqlite"), TH,
                                tick_s=0.2, system=system)
    counts = service.run(max_idle_s=6)
    got = [Alert.model_validate(r["value"])
           for r in read_all(settings, settings.topics.alerts_system)]
    print(f"\nadmin alarms: dead letters read {counts['dead_letters']}, alerts.system "
          + ", ".join(f"{a.kind} {a.status.value} (count {a.evidence['count']})" for a in got))
    assert counts["dead_letters"] == 3 and counts["system_alerts"] == 6
    assert sorted((a.kind, a.status.value) for a in got) == sorted(
        (k, s) for k in ("dlq_rate", "retries_exhausted", "notifier_failures")
        for s in ("open", "resolved"))
    assert all(a.category == "system" and a.audience == "admin" for a in got)
    assert {a.alert_id for a in got} == {alert_id_for("delaywatch", k, 1) for k in (
        "dlq_rate", "retries_exhausted", "notifier_failures")}
