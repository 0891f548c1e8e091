"""Shared fixtures: settings factories, small simulated worlds, a real broker, a worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from delaywatch.broker import Broker, free_port, java_available
from delaywatch.config import Settings, Thresholds, load_thresholds

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def thresholds() -> Thresholds:
    return load_thresholds()


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    def make(partitions: int = 4, **time_overrides: Any) -> Settings:
        s = Settings()
        s.topics.partitions = partitions
        for name, value in time_overrides.items():
            setattr(s.time, name, value)
        return s

    return make


@pytest.fixture(scope="session")
def small_world() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A simulated world small enough for a live run (records, truth)."""
    from delaywatch.simulate import simulate

    return simulate(orders=600, seed=11, profile="stress")


def _engine_or_skip() -> str:
    if java_available():
        return "kafka"
    if IN_CI:
        pytest.fail("CI=true: Apache Kafka must run here, but java/mvn were not found")
    pytest.skip("java and mvn not found: Apache Kafka tests need them")


@pytest.fixture
def kafka() -> Iterator[Broker]:
    """A fresh Apache Kafka per test: its own ports, data and PID, stopped afterwards."""
    engine = _engine_or_skip()
    with Broker.start(engine) as broker:
        yield broker


class WorkerProcess:
    """``delaywatch worker`` as a child process, configured by environment."""

    def __init__(self, env: dict[str, str], log_path: Path,
                 module: str = "delaywatch.cli") -> None:
        self.env, self.log_path, self.module = env, log_path, module
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "worker"], env=self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics_url(self, timeout_s: float = 60.0) -> str:
        """Base URL of the worker's /metrics and /health (its ``metrics_serving`` log line)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                found = re.search(r'"port": ?(\d+)', line)
                if found and '"metrics_serving"' in line:
                    return f"http://127.0.0.1:{found.group(1)}"
            time.sleep(0.2)
        raise AssertionError(f"no metrics_serving line:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


@pytest.fixture
def worker_env(tmp_path: Path) -> Callable[[Broker, Settings], dict[str, str]]:
    def make(broker: Broker, settings: Settings) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELAYWATCH_")}
        env.update({
            "DELAYWATCH_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "DELAYWATCH_TOPICS__PARTITIONS": str(settings.topics.partitions),
            "DELAYWATCH_WORKER__APP_ID": f"dw-test-{time.time_ns()}",
            "DELAYWATCH_WORKER__WEB_PORT": str(free_port()),
            "DELAYWATCH_WORKER__DATA_DIR": str(tmp_path / "faust-data"),
            "DELAYWATCH_WORKER__BROKER_SESSION_TIMEOUT_S": "10",
            "DELAYWATCH_WORKER__COMMIT_INTERVAL_S": "1",
            "DELAYWATCH_WORKER__METRICS_PORT": "0",  # a free port, logged as metrics_serving
            "DELAYWATCH_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        })
        if broker.engine == "tansu":  # refuses aiokafka's InitProducerId
            env["DELAYWATCH_KAFKA__IDEMPOTENT_PRODUCER"] = "false"
        settings.kafka.bootstrap_servers = broker.bootstrap
        return env

    return make


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], module: str = "delaywatch.cli") -> WorkerProcess:
        w = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log", module).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
