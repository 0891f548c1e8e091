"""``make demo``: a broker, the worker, a simulated day played fast, alerts live, a summary.

Everything started here is stopped here, by PID, whatever happens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from delaywatch.broker import Broker, free_port, resolve_engine
from delaywatch.config.settings import Settings
from delaywatch.kafka_io import client_config, create_all_topics, produce_records
from delaywatch.replay import quality
from delaywatch.schemas.alerts import Alert
from delaywatch.ui import console, render_record

__all__ = ["run_demo"]


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELAYWATCH_")}
    env.update({
        "DELAYWATCH_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "DELAYWATCH_KAFKA__IDEMPOTENT_PRODUCER": str(settings.kafka.idempotent_producer).lower(),
        "DELAYWATCH_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "DELAYWATCH_WORKER__APP_ID": f"delaywatch-demo-{os.getpid()}",
        "DELAYWATCH_WORKER__WEB_PORT": str(free_port()),
        "DELAYWATCH_WORKER__BROKER_SESSION_TIMEOUT_S": "10",
        "DELAYWATCH_WORKER__DATA_DIR": str(log_path.parent / "faust-data"),
        "DELAYWATCH_LOG_FORMAT": "json",
        # the played day ends; let the idle worker run its clock on to the last event time
        "DELAYWATCH_TIME__IDLE_ADVANCE_AFTER_S": "3",
    })
    log = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "delaywatch.cli", "worker"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _reader(settings: Settings, topics: list[str]) -> Consumer:
    # Assign partitions directly: no consumer-group join (30 s on Tansu).
    consumer = Consumer({**client_config(settings), "group.id": f"demo-view-{os.getpid()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(t, p, 0) for t in topics
                     for p in range(settings.topics.partitions)])
    return consumer


def run_demo(duration: float = 90.0, orders: int = 1000, seed: int = 7,
             engine: str = "auto") -> int:
    from delaywatch.simulate import simulate

    engine = resolve_engine(engine)
    workdir = Path(".demo")
    workdir.mkdir(exist_ok=True)
    console.rule(f"delaywatch demo — broker: {engine}, {orders} orders, {duration:.0f} s")
    records, truth = simulate(orders=orders, seed=seed)
    span_s = (records[-1]["ts"] - records[0]["ts"]) / 1000
    play_s = max(10.0, duration * 0.55)
    speedup = span_s / play_s
    console.print(f"simulated {len(records):,} records over {span_s / 3600:.0f} h of event time; "
                  f"playing them at {speedup:,.0f}x (≈{play_s:.0f} s)")

    settings = Settings()
    t0 = time.monotonic()
    with Broker.start(engine, log_path=workdir / "broker.log") as broker:
        settings.kafka.bootstrap_servers = broker.bootstrap
        # Tansu refuses aiokafka's InitProducerId: no idempotent worker producer there
        settings.kafka.idempotent_producer = broker.engine != "tansu"
        console.print(f"broker {engine} on {broker.bootstrap} (pid {broker.pid}) "
                      f"ready in {time.monotonic() - t0:.1f} s")
        create_all_topics(settings)
        worker = _start_worker(settings, workdir / "worker.log")
        console.print(f"worker pid {worker.pid}, log {workdir / 'worker.log'}")
        stop_event = threading.Event()
        produced = [0]

        def play() -> None:
            produced[0] = produce_records(settings, records, speedup=speedup,
                                          should_stop=stop_event.is_set)

        player = threading.Thread(target=play, daemon=True)
        player.start()
        t = settings.topics
        reader = _reader(settings, [t.alerts_delay, t.alerts_stock, t.dlq])
        alerts: list[dict[str, Any]] = []
        dlq = 0
        deadline = t0 + duration
        try:
            while time.monotonic() < deadline:
                msg = reader.poll(0.2)
                if msg is None or msg.error():
                    if worker.poll() is not None:
                        console.print("[red]worker exited early[/]")
                        break
                    continue
                raw, topic = msg.value() or b"null", msg.topic() or ""
                value = orjson.loads(raw)
                if topic == t.dlq:
                    dlq += 1
                    if dlq <= 10:
                        render_record(topic, raw)
                    continue
                alerts.append(value)
                if value["status"] == "open" and value["severity"] in ("high", "critical"):
                    render_record(topic, raw)
        finally:
            stop_event.set()
            reader.close()
            player.join(30)
            _stop(worker)
        ok = worker.returncode in (0, -signal.SIGTERM, None)

    parsed = [Alert.model_validate_json(orjson.dumps(a)) for a in alerts]
    q = quality(parsed, truth)
    console.rule("summary")
    console.print(f"records produced: {produced[0]:,} of {len(records):,}")
    console.print(f"alerts: {len(alerts):,} "
                  f"({dict(Counter(a['kind'] for a in alerts if a['status'] == 'open'))})")
    console.print(f"dead letters: {dlq}")
    console.print(f"delay precision {q['delay']['precision']} recall {q['delay']['recall']}; "
                  f"stock precision {q['stock']['precision']} recall {q['stock']['recall']}; "
                  f"unannounced-late rate {q['unannounced_late_rate']} "
                  "(against the simulator's truth, on what the worker reached in time)")
    console.print(f"everything stopped; {time.monotonic() - t0:.0f} s")
    return 0 if ok and alerts else 1
