"""Fault test 3 of #5 on Apache Kafka started by the test: the reference notifier's webhook
fails 30 % of calls at random and is down completely (connection refused) for 2 minutes.

Run by ``make test-faults`` with the other fault tests."""

from __future__ import annotations

import random
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from delaywatch.broker import free_port
from delaywatch.kafka_io import client_config, committed_lag, create_all_topics, read_all
from delaywatch.notify import DeliveredStore, Notifier, RetryTier, webhook_sink
from delaywatch.replay import replay

pytestmark = [pytest.mark.broker, pytest.mark.faults]

OUTAGE_AFTER_S, OUTAGE_S = 15.0, 120.0
TIERS = (RetryTier("alerts.retry.20s", 20.0, attempts=3),
         RetryTier("alerts.retry.1m", 60.0, attempts=4))  # rides out 60 s + 240 s


class FlakyWebhook:
    """A webhook on 127.0.0.1 answering 503 to ``fail_rate`` of calls (seeded) and, between
    :meth:`down` and :meth:`up`, not listening at all. Counts 2xx answers per message key."""

    def __init__(self, fail_rate: float, seed: int) -> None:
        self.port, self.fail_rate, self.rnd = free_port(), fail_rate, random.Random(seed)
        self.ok: Counter[str] = Counter()
        self.failed = 0
        self.lock = threading.Lock()  # the test reads ok while the server thread writes it
        self.server: HTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    if hook.rnd.random() < hook.fail_rate:
                        hook.failed += 1
                        self.send_response(503)
                    else:
                        hook.ok[DeliveredStore.key(orjson.loads(body))] += 1
                        self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        return Handler

    def delivered(self) -> set[str]:
        with self.lock:
            return set(self.ok)

    def up(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.server = HTTPServer(("127.0.0.1", self.port), self._handler())
                break
            except OSError:  # the port is still being released
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _alert_sends(alerts: list[Any], chunks: int, seed: int) -> list[list[Any]]:
    """The alerts in ``chunks`` parts, each followed by a re-send of a quarter of the previous
    part (at-least-once upstream)."""
    rnd = random.Random(seed)
    size = -(-len(alerts) // chunks)
    parts = [alerts[i:i + size] for i in range(0, len(alerts), size)]
    return [part + (rnd.sample(parts[i - 1], len(parts[i - 1]) // 4) if i else [])
            for i, part in enumerate(parts)]


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("delaywatch_notifier_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.mark.timeout(600)
def test_failing_webhook_every_alert_delivered_once_through_the_retry_tiers(
        kafka, small_world, make_settings, thresholds, tmp_path):
    settings = make_settings(partitions=2)
    settings.kafka.bootstrap_servers = kafka.bootstrap
    create_all_topics(settings)
    alerts = replay(small_world[0], settings, thresholds).alerts
    expected = {DeliveredStore.key(a.model_dump(mode="json")) for a in alerts}
    sends = _alert_sends(alerts, chunks=20, seed=7)
    sent = sum(len(part) for part in sends)

    hook = FlakyWebhook(fail_rate=0.3, seed=5)
    hook.up()
    metrics_port, group = free_port(), "fault-notifier"
    notifier = Notifier(settings, webhook_sink(hook.url, timeout_s=5.0),
                        DeliveredStore(tmp_path / "delivered.sqlite"), group=group,
                        attempts=3, backoff_s=0.005, tiers=TIERS, metrics_port=metrics_port)
    stop, errors = threading.Event(), []

    def run_notifier() -> None:
        try:
            notifier.run(should_stop=stop.is_set)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    def produce() -> None:  # one part every 3 s: alerts keep coming during the outage
        p = Producer(client_config(settings))
        for part in sends:
            for a in part:
                topic = settings.topics.alerts_delay if a.category == "delay" else \
                    settings.topics.alerts_stock
                p.produce(topic, key=a.key.encode(), value=a.model_dump_json().encode())
            p.flush(30)
            time.sleep(3.0)

    t0 = time.monotonic()
    runner = threading.Thread(target=run_notifier, daemon=True)
    producer = threading.Thread(target=produce, daemon=True)
    runner.start()
    producer.start()
    outage = threading.Timer(OUTAGE_AFTER_S, hook.down)
    recovery = threading.Timer(OUTAGE_AFTER_S + OUTAGE_S, hook.up)
    outage.start()
    recovery.start()
    topics = [*notifier.alert_topics, *(tier.topic for tier in TIERS)]
    try:
        # done: every alert delivered and every record, re-sends and retries included, handled
        deadline = t0 + 540
        done = False
        while time.monotonic() < deadline and not errors and not done:
            time.sleep(2.0)
            done = (not producer.is_alive() and hook.delivered() >= expected
                    and not notifier.held
                    and all((c or 0) == end for c, end in committed_lag(
                        settings, group, topics).values()))
        wall = time.monotonic() - t0
        figures = _metrics(metrics_port)
    finally:
        stop.set()
        outage.cancel()
        recovery.cancel()
        runner.join(60)
        hook.down()
    assert not errors, errors
    assert done, f"not every alert was delivered in time: {len(set(hook.ok))}/{len(expected)}"
    counts = notifier.counts
    dlq = read_all(settings, "alerts.dlq", parse=False)
    print(f"\nfailing webhook (30 % of calls 503, down {OUTAGE_S:.0f} s from "
          f"{OUTAGE_AFTER_S:.0f} s): alerts expected {len(expected)}, sent {sent} "
          f"(with re-sends), delivered {sum(hook.ok.values())} ({counts['delivered']} by the "
          f"notifier), deduped {counts['duplicates']}, failed calls {counts['sink_failures']} "
          f"({hook.failed} answered 503), retries "
          + ", ".join(f"{t.topic} {counts[f'retried:{t.topic}']}" for t in TIERS)
          + f", DLQ {len(dlq)}, wall {wall:.0f} s")

    assert set(hook.ok) == expected
    assert all(n == 1 for n in hook.ok.values()), hook.ok.most_common(3)
    assert not dlq, [r["headers"] for r in dlq[:3]]
    assert counts["delivered"] == len(expected)
    assert counts["delivered"] + counts["duplicates"] == sent  # each record handled once
    for tier in TIERS:
        assert counts[f"retried:{tier.topic}"] > 0
        assert figures[f'delaywatch_notifier_retried_total{{tier="{tier.topic}"}}'] > 0
    assert figures['delaywatch_notifier_messages_total{outcome="dead_lettered"}'] == 0
