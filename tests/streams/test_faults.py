"""Fault tests of #5 on Apache Kafka started by the test: what survives, with the figures.

Run by ``make test-faults`` (``.ci/run`` runs it after ``make test``)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from delaywatch.bench_kafka import RateProducer, proc_status_mb
from delaywatch.broker import Broker
from delaywatch.kafka_io import create_all_topics, produce_records
from delaywatch.notify import DeliveredStore, Notifier, file_sink
from delaywatch.replay import replay
from tests.streams.helpers import alert_signature, same_alerts, wait_for_outputs

pytestmark = [pytest.mark.broker, pytest.mark.faults]


class PacedProducer(threading.Thread):
    """Produces the records in ``chunks`` equal parts, one every ``every_s`` seconds:
    a day of shop traffic arriving while the worker is being killed."""

    def __init__(self, settings: Any, records: list[dict[str, Any]], chunks: int,
                 every_s: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.records, self.chunks, self.every_s = (
            settings, records, chunks, every_s)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            size = -(-len(self.records) // self.chunks)
            for i in range(0, len(self.records), size):
                produce_records(self.settings, self.records[i:i + size])
                time.sleep(self.every_s)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


def _processing(worker: Any) -> bool:
    return any('"engine_restored"' in line for line in worker.log_path.read_text(
        errors="replace").splitlines())


@pytest.mark.timeout(900)
def test_ten_kills_lose_nothing_and_the_notifier_delivers_each_alert_once(
        kafka, small_world, make_settings, thresholds, worker_env, start_worker,
        tmp_path: Path):
    """Fault test 1: kill -9 the worker 10 times at random moments while the stream comes in,
    restarting it each time. Every alert of the uninterrupted run arrives, nothing else does,
    duplicates are only identical alert ids, and the reference notifier (deduping by its
    store) hands each alert message to its sink once."""
    records, _ = small_world
    settings = make_settings(partitions=4)
    expected = replay(records, settings, thresholds, flush=False)
    env = worker_env(kafka, settings)
    create_all_topics(settings)
    producer = PacedProducer(settings, records, chunks=30, every_s=2.0)
    producer.start()

    rng = random.Random(5)
    kills: list[float] = []
    for _ in range(10):
        worker = start_worker(env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _processing(worker):
            time.sleep(0.2)
        assert worker.alive(), f"worker died:\n{worker.log_tail()}"
        wait = rng.uniform(0.0, 4.0)  # a random moment once it is processing
        time.sleep(wait)
        worker.kill9()
        kills.append(wait)
    producer.join(120)
    assert producer.error is None, producer.error
    assert not producer.is_alive(), "producing did not finish"

    final = start_worker(env)
    live = wait_for_outputs(settings, final, len(expected.alerts), len(expected.dead_letters),
                            timeout_s=240.0)
    got = same_alerts(live["alerts"], expected.alerts)
    by_key: dict[str, dict[str, Any]] = {}
    for a in live["alerts"]:
        prev = by_key.setdefault(DeliveredStore.key(a), a)  # a message's identity
        assert prev == a, f"same alert identity, different content: {prev} != {a}"
    duplicates = sum(got.values()) - len(got)
    scrape = _scrape(final.metrics_url())

    sink_path = tmp_path / "sink.jsonl"
    notifier = Notifier(settings, file_sink(sink_path), DeliveredStore(tmp_path / "n.db"))
    counts = notifier.run(max_idle_s=10.0)
    delivered = [line for line in sink_path.read_text().splitlines() if line]
    keys = [DeliveredStore.key(orjson.loads(x)) for x in delivered]
    assert len(keys) == len(set(keys)) == len(by_key), (
        f"sink got {len(keys)} messages, {len(set(keys))} distinct, {len(by_key)} expected")
    print(f"\n10 kill -9 (at {', '.join(f'{k:.1f}' for k in kills)} s into processing), "
          f"{len(records)} records: alerts delivered {len(got)} distinct == expected, "
          f"{duplicates} re-sent duplicates (same alert_id); notifier: "
          f"{counts['delivered']} delivered once each, {counts['duplicates']} deduped; "
          f"final worker's /metrics: {scrape}")


def _scrape(base: str) -> dict[str, float]:
    """A few totals from a worker's /metrics, and its /health verdict."""
    with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
        assert resp.status == 200 and orjson.loads(resp.read())["ok"]
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in ("delaywatch_events_total", "delaywatch_redelivered_total",
                    "delaywatch_alerts_total", "delaywatch_send_failures_total"):
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    # the final worker may find every record already applied: no event total asserted
    assert "delaywatch_events_total" in text, text[:2000]
    return totals


class NotifierThread(threading.Thread):
    """The reference notifier, delivering to a JSON-lines file, until told to stop."""

    def __init__(self, settings: Any, workdir: Path) -> None:
        super().__init__(daemon=True)
        self.sink_path = workdir / "sink.jsonl"
        self.notifier = Notifier(settings, file_sink(self.sink_path),
                                 DeliveredStore(workdir / "notifier.db"))
        self.stopping = threading.Event()
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.counts = self.notifier.run(should_stop=self.stopping.is_set)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def delivered(self) -> list[str]:
        if not self.sink_path.exists():
            return []
        return [DeliveredStore.key(orjson.loads(x))
                for x in self.sink_path.read_text().splitlines() if x]

    def wait_for(self, n: int, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(set(self.delivered())) < n:
            assert self.error is None and self.is_alive(), self.error
            time.sleep(1.0)
        self.stopping.set()
        self.join(60)
        assert self.error is None, self.error
        return self.delivered()


@pytest.fixture
def persistent_kafka(tmp_path: Path):
    """Apache Kafka on a data directory that survives its restart (same port)."""
    from tests.conftest import _engine_or_skip

    if _engine_or_skip() != "kafka":
        pytest.skip("needs Apache Kafka")
    brokers = [Broker.start("kafka", data_dir=tmp_path / "kafka")]
    yield brokers  # a test that restarts the broker appends the new one
    for b in brokers:
        if b.is_running():
            os.kill(b.pid, signal.SIGCONT)
            b.stop()


def _outage_run(persistent_kafka, small_world, make_settings, thresholds, worker_env,
                start_worker, tmp_path: Path, outage: Any) -> str:
    """Worker and notifier running; half the stream in; ``outage`` (broker stall or
    restart) while they work; the other half in. Every alert of the uninterrupted run is
    on the alert topics and reaches the notifier's sink exactly once -- no manual action."""
    records, _ = small_world
    settings = make_settings(partitions=4)
    expected = replay(records, settings, thresholds, flush=False)
    env = worker_env(persistent_kafka[0], settings)
    create_all_topics(settings)
    half = len(records) // 2
    produce_records(settings, records[:half])
    worker = start_worker(env)
    notifier = NotifierThread(settings, tmp_path)
    notifier.start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not notifier.delivered():
        time.sleep(0.5)
    assert notifier.delivered(), "nothing delivered before the outage"

    t0 = time.monotonic()
    what = outage(persistent_kafka)
    produce_records(settings, records[half:])
    live = wait_for_outputs(settings, worker, len(expected.alerts),
                            len(expected.dead_letters), timeout_s=300.0)
    recovered_s = time.monotonic() - t0
    got = same_alerts(live["alerts"], expected.alerts)
    distinct = {DeliveredStore.key(a) for a in live["alerts"]}
    delivered = notifier.wait_for(len(distinct), timeout_s=180.0)
    assert len(delivered) == len(set(delivered)) and set(delivered) == distinct, (
        f"sink: {len(delivered)} messages, {len(set(delivered))} distinct, "
        f"{len(distinct)} expected")
    assert worker.alive(), worker.log_tail()
    return (f"{what}: alerts on the topics {len(got)} distinct == expected "
            f"({sum(got.values()) - len(got)} re-sent duplicates), sink {len(delivered)} once "
            f"each; outputs complete {recovered_s:.0f} s after the outage began")


@pytest.mark.timeout(600)
def test_broker_stalled_for_60_s_worker_and_notifier_recover(
        persistent_kafka, small_world, make_settings, thresholds, worker_env, start_worker,
        tmp_path: Path):
    """Fault test 2a: SIGSTOP the broker for 60 s, then SIGCONT."""
    def stall(brokers: list[Broker]) -> str:
        os.kill(brokers[0].pid, signal.SIGSTOP)
        time.sleep(60)
        os.kill(brokers[0].pid, signal.SIGCONT)
        return "broker SIGSTOP 60 s"

    print("\n" + _outage_run(persistent_kafka, small_world, make_settings, thresholds,
                              worker_env, start_worker, tmp_path, stall))


@pytest.mark.timeout(600)
def test_broker_restarted_worker_and_notifier_recover(
        persistent_kafka, small_world, make_settings, thresholds, worker_env, start_worker,
        tmp_path: Path):
    """Fault test 2b: stop the broker and start it again on its log directory."""
    def restart(brokers: list[Broker]) -> str:
        old = brokers[0]
        old.stop()
        time.sleep(5)
        brokers.append(Broker.start("kafka", data_dir=old.data_dir, port=old.port))
        return "broker stopped and restarted (persistent log dir)"

    print("\n" + _outage_run(persistent_kafka, small_world, make_settings, thresholds,
                              worker_env, start_worker, tmp_path, restart))


def _state_keys(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        return sum(float(line.rsplit(" ", 1)[1]) for line in resp.read().decode().splitlines()
                   if line.startswith("delaywatch_state_keys{"))


@pytest.mark.timeout(900)
def test_promotion_burst_keeps_state_and_rss_bounded_and_lag_recovers(
        kafka, make_settings, thresholds, worker_env, start_worker):
    """Fault test 5: a promotion-like burst, 10x the normal rate for 150 s. The worker's
    peak RSS and state stay bounded, and its committed lag returns to zero after the burst."""
    from delaywatch.kafka_io import committed_lag, input_topics
    from delaywatch.simulate import simulate

    # ~97k records: 45 s + 150 s burst + tail
    records, _ = simulate(orders=5000, seed=13, profile="stress")
    orders = len({r["key"] for r in records if r["topic"] == "orders"})
    settings = make_settings(partitions=4)
    env = worker_env(kafka, settings)
    create_all_topics(settings)
    worker = start_worker(env)
    base = worker.metrics_url()
    normal = 60.0
    producer = RateProducer(settings, records,
                            [(normal, 45.0), (10 * normal, 150.0), (normal, 600.0)])
    assert len(records) > 45 * normal + 150 * 10 * normal, "too few records for the burst"
    producer.start()
    group = env["DELAYWATCH_WORKER__APP_ID"]
    samples: list[tuple[float, int, float]] = []  # (t, lag, state keys)
    t0 = time.monotonic()
    recovered_at = None
    while time.monotonic() - t0 < 700:
        assert worker.alive(), worker.log_tail()
        lag = sum(end - (c or 0) for c, end in
                  committed_lag(settings, group, input_topics(settings)).values())
        samples.append((time.monotonic() - t0, lag, _state_keys(base)))
        if len(producer.phase_ends) >= 2 and recovered_at is None and lag == 0:
            recovered_at = time.monotonic()
        if recovered_at and time.monotonic() - recovered_at > 20:
            break
        time.sleep(2.0)
    assert producer.error is None, producer.error
    assert len(producer.phase_ends) >= 2, "the burst did not finish"
    burst_end = producer.phase_ends[1]
    peak_rss_mb = proc_status_mb(worker.proc.pid, "VmHWM") or 0.0
    peak_lag = max(s[1] for s in samples)
    peak_keys = max(s[2] for s in samples)
    final_keys = samples[-1][2]
    print(f"\npeak load: {normal:.0f}/s, burst {10 * normal:.0f}/s for 150 s, "
          f"{producer.sent} of {len(records)} records ({orders} orders); peak lag {peak_lag}, "
          f"lag back to 0 {((recovered_at or time.monotonic()) - burst_end):.0f} s after the "
          f"burst; worker peak RSS {peak_rss_mb:.0f} MB; state keys peak {peak_keys:.0f}, "
          f"final {final_keys:.0f}")
    assert recovered_at is not None, f"lag did not return to zero: {samples[-5:]}"
    assert peak_rss_mb < 1024, f"worker peak RSS {peak_rss_mb:.0f} MB"


def test_processing_failures_retry_through_tiers_then_dlq_with_attempts(
        kafka, small_world, make_settings, thresholds, worker_env, start_worker):
    """Transient errors in the core go through the retry tiers (processed again once due,
    by the engine of their partition); an error that outlives the tiers, and a permanent
    one at once, land in the DLQ with attempts and first/last failure times. Nothing is
    lost and other orders' alerts do not change."""
    records, _ = small_world
    settings = make_settings(partitions=4)
    settings.topics.retry_tiers = [("dw-test.retry.a", 2.0), ("dw-test.retry.b", 4.0)]
    orders = [r for r in records if r["topic"] == "orders" and isinstance(r.get("value"), dict)
              and r["value"].get("event_type") == "payment_confirmed"]
    rng = random.Random(3)
    picked = rng.sample(orders, 9)
    once, always, permanent = picked[:5], picked[5:7], picked[7:]
    touched = {r["key"] for r in picked}
    dropped = {r["value"]["event_id"] for r in always + permanent}
    expected = replay([r for r in records if not (
        isinstance(r.get("value"), dict) and r["value"].get("event_id") in dropped)],
        settings, thresholds, flush=False)
    env = worker_env(kafka, settings)
    env.update({
        "DELAYWATCH_TOPICS__RETRY_TIERS": orjson.dumps(settings.topics.retry_tiers).decode(),
        "DW_FAIL_ONCE": ",".join(r["value"]["event_id"] for r in once),
        "DW_FAIL_ALWAYS": ",".join(r["value"]["event_id"] for r in always),
        "DW_FAIL_PERMANENT": ",".join(r["value"]["event_id"] for r in permanent),
    })
    create_all_topics(settings)
    produce_records(settings, records)
    worker = start_worker(env, module="tests.streams.fault_worker")
    live = wait_for_outputs(settings, worker, len(expected.alerts),
                            len(expected.dead_letters) + 4, settle_s=10.0)

    injected = [d for d in live["dlq"] if d["reason"] in ("retries_exhausted",
                                                          "processing_error")]
    by_event = {orjson.loads(d["payload"])["event_id"]: d for d in injected}
    assert set(by_event) == dropped, f"DLQ'd {sorted(by_event)} != {sorted(dropped)}"
    for r in always:
        d = by_event[r["value"]["event_id"]]
        assert (d["reason"], d["attempts"], d["source"]["topic"]) == (
            "retries_exhausted", 3, "orders"), d
        assert d["first_failure_at"] < d["last_failure_at"]
        assert d["error"].startswith("TimeoutError")
    for r in permanent:
        d = by_event[r["value"]["event_id"]]
        assert (d["reason"], d["attempts"]) == ("processing_error", 1), d
    text = urllib.request.urlopen(f"{worker.metrics_url()}/metrics", timeout=5).read().decode()
    retries = {tier: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               for tier in ("dw-test.retry.a", "dw-test.retry.b")
               if line.startswith(f'delaywatch_retries_total{{tier="{tier}"}}')}
    assert retries == {"dw-test.retry.a": 7.0, "dw-test.retry.b": 2.0}, retries

    def untouched(alerts: list[dict[str, Any]]) -> set[Any]:
        return {k for k in alert_signature(alerts) if not any(
            a["alert_id"] == k[0] and a.get("order_id") in touched for a in alerts)}

    want = [a.model_dump(mode="json") for a in expected.alerts]
    assert untouched(live["alerts"]) == untouched(want)
    print(f"\nprocessing failures: {len(once)} transient once (retried, processed), "
          f"{len(always)} transient always (DLQ after 3 attempts: first + 2 tiers), "
          f"{len(permanent)} permanent (DLQ at once); retries by tier {retries}; "
          f"alerts of the other orders identical to the replay")
