"""The Kafka side of ``make bench``: child processes, a consumer group's progress, topic reads
and the bare confluent-kafka baseline.

Every process started here runs in its own session and is stopped by its PID (SIGTERM, then
SIGKILL). Offsets are read with confluent-kafka without joining the group being measured.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from delaywatch.broker import free_port
from delaywatch.config.settings import Settings
from delaywatch.kafka_io import client_config, produce_records

__all__ = [
    "BenchError",
    "ChildProcess",
    "Finish",
    "GroupProgress",
    "RateProducer",
    "all_committed",
    "backlog",
    "bare_consumer_run",
    "first_logged_at",
    "last_logged_at",
    "logged_at",
    "metrics_url",
    "read_topic",
    "scrape_total",
    "topic_env",
    "wait_for_logged",
    "wait_group_stable",
    "wait_until_committed",
    "worker_env",
]

log = structlog.get_logger("delaywatch.bench")

TP = tuple[str, int]


class BenchError(RuntimeError):
    """A measured process died, or a run did not finish in time."""


# -- child processes ---------------------------------------------------------------------------
def proc_status_mb(pid: int, field: str) -> float | None:
    """A memory field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...) in MiB; None when
    the process is gone or the field is not there."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


class ChildProcess:
    """A Python child in its own session, its output appended to ``log_path``."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, *argv], env=dict(env), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_rss_mb(self) -> float | None:
        """VmHWM (peak resident set) of the process, in MiB; None once it has exited."""
        return proc_status_mb(self.pid, "VmHWM")

    def rss_mb(self) -> float | None:
        """VmRSS (resident set now) of the process, in MiB; None once it has exited."""
        return proc_status_mb(self.pid, "VmRSS")

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_lines()[-n:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``timeout`` s. Idempotent."""
        if self.proc.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(10)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


def topic_env(settings: Settings) -> dict[str, str]:
    """Every topic name of ``settings`` as the worker's environment variables."""
    t = settings.topics
    names = ("orders", "inventory", "scans", "alerts_delay", "alerts_stock", "dlq", "model",
             "order_lines", "stock_notices")
    return {f"DELAYWATCH_TOPICS__{n.upper()}": str(getattr(t, n)) for n in names}


def worker_env(settings: Settings, app_id: str, data_dir: Path, *, models: bool,
               checkpoint: Path | None = None) -> dict[str, str]:
    """The worker's environment, as ``tests/conftest.py`` builds it, plus this run's topics
    (inputs shared by every run; internal and output topics of its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELAYWATCH_")}
    env.update(topic_env(settings))
    env.update({
        "DELAYWATCH_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "DELAYWATCH_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "DELAYWATCH_WORKER__APP_ID": app_id,
        "DELAYWATCH_WORKER__WEB_PORT": str(free_port()),
        "DELAYWATCH_WORKER__DATA_DIR": str(data_dir),
        "DELAYWATCH_WORKER__BROKER_SESSION_TIMEOUT_S": "10",
        "DELAYWATCH_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    })
    if models:
        env["DELAYWATCH_MODELS__ENABLED"] = "true"
        if checkpoint is not None:
            env["DELAYWATCH_MODELS__CHECKPOINT_PATH"] = str(checkpoint)
    return env


def logged_at(lines: Iterable[str], event: str) -> list[float]:
    """Timestamps (epoch s) of the JSON log lines whose ``event`` is ``event``."""
    needle = f'"{event}"'
    out: list[float] = []
    for line in lines:
        if needle not in line:
            continue
        try:  # Faust may print a terminal escape (cursor on) before the JSON
            rec = orjson.loads(line[line.find("{"):])
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("event") == event and "timestamp" in rec:
            out.append(datetime.fromisoformat(str(rec["timestamp"])).timestamp())
    return out


def first_logged_at(lines: Iterable[str], event: str) -> float | None:
    return min(logged_at(lines, event), default=None)


def last_logged_at(lines: Iterable[str], event: str) -> float | None:
    return max(logged_at(lines, event), default=None)


def wait_for_logged(procs: Sequence[ChildProcess], event: str, timeout_s: float) -> float:
    """Wait until one of ``procs`` has logged ``event``; its time. Raises
    :class:`BenchError` if a process dies or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise BenchError(f"pid {p.pid} exited ({p.proc.returncode}):\n{p.log_tail()}")
            at = first_logged_at(p.log_lines(), event)
            if at is not None:
                return at
        time.sleep(0.2)
    raise BenchError(f"no {event} logged within {timeout_s:.0f} s")


# -- group progress ----------------------------------------------------------------------------
def all_committed(committed: Mapping[TP, int], ends: Mapping[TP, int]) -> bool:
    """Has the group committed every record up to the end offset of every partition?
    (No committed offset, or a negative one, counts as 0: fine for an empty partition.)"""
    return all(max(committed.get(tp, 0), 0) >= end for tp, end in ends.items())


class GroupProgress:
    """Committed offsets of consumer group ``group`` next to end offsets of ``topics``."""

    def __init__(self, settings: Settings, group: str, topics: Sequence[str]) -> None:
        self.consumer = Consumer({**client_config(settings), "group.id": group,
                                  "enable.auto.commit": False})
        n = settings.topics.partitions
        self.tps = [TopicPartition(t, p) for t in topics for p in range(n)]

    def snapshot(self) -> tuple[dict[TP, int], dict[TP, int]]:
        # Committed first, ends second: a record an input commit depends on was flushed
        # before that commit (Faust flushes its producer first), so it is within these ends.
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in self.consumer.committed(self.tps, timeout=10)}
        ends = {(tp.topic, tp.partition): self.consumer.get_watermark_offsets(
            tp, timeout=10, cached=False)[1] for tp in self.tps}
        return committed, ends

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Finish:
    """How far a group got: ``done_at`` is when it had committed every input record (None
    if the time limit came first); ``trace`` holds (epoch s, committed offsets of the
    ``counted`` topics summed) per snapshot."""

    done_at: float | None
    trace: list[tuple[float, int]]
    committed: dict[TP, int]
    ends: dict[TP, int]


def wait_until_committed(progress: GroupProgress, procs: Sequence[ChildProcess],
                         limit_s: float, counted: Sequence[str] = (), *,
                         must_finish: bool = False, poll_s: float = 0.2) -> Finish:
    """Poll until the group has committed every input record, or ``limit_s`` has passed.

    ``done_at`` is the time of the first complete snapshot (taken just before reading the
    committed offsets, so at most ``poll_s`` plus one snapshot late). Raises
    :class:`BenchError` if a process dies, or at the limit when ``must_finish``."""
    deadline = time.monotonic() + limit_s
    trace: list[tuple[float, int]] = []
    committed: dict[TP, int] = {}
    ends: dict[TP, int] = {}
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise BenchError(f"pid {p.pid} exited ({p.proc.returncode}):\n{p.log_tail()}")
        at = time.time()
        try:
            committed, ends = progress.snapshot()
        except KafkaException as exc:  # new topics: no leader known yet
            log.debug("bench_snapshot_retry", error=str(exc))
            time.sleep(poll_s)
            continue
        trace.append((at, sum(max(off, 0) for (topic, _), off in committed.items()
                              if topic in counted)))
        if all_committed(committed, ends):
            return Finish(at, trace, committed, ends)
        time.sleep(poll_s)
    if must_finish:
        raise BenchError(f"not every record committed within {limit_s:.0f} s")
    return Finish(None, trace, committed, ends)


def backlog(committed: Mapping[TP, int], ends: Mapping[TP, int], topics: Sequence[str]) -> int:
    """Records of ``topics`` not yet committed by the group."""
    return sum(max(0, end - max(committed.get(tp, 0), 0)) for tp, end in ends.items()
               if tp[0] in topics)


def wait_group_stable(settings: Settings, group: str, members: int, timeout_s: float,
                      procs: Sequence[ChildProcess]) -> None:
    """Wait until consumer group ``group`` is stable with ``members`` members that all hold
    partitions (the worker is consuming before anything is produced)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise BenchError(f"pid {p.pid} exited ({p.proc.returncode}):\n{p.log_tail()}")
        try:
            desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
        except Exception:  # KafkaException: the group does not exist yet
            desc = None
        if (desc is not None and desc.state == ConsumerGroupState.STABLE
                and len(desc.members) == members
                and all(m.assignment.topic_partitions for m in desc.members)):
            return
        time.sleep(0.5)
    raise BenchError(f"group {group} not stable with {members} members in {timeout_s:.0f} s")


# -- reading topics ----------------------------------------------------------------------------
def read_topic(settings: Settings, topic: str, timeout_s: float = 120.0) -> Iterator[Message]:
    """Every record now in ``topic`` (all partitions, from the beginning to today's end
    offsets), in partition order."""
    consumer = Consumer({**client_config(settings), "group.id": f"bench-read-{time.time_ns()}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        md = consumer.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions) if topic in md.topics else []
        pending: dict[int, int] = {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                pending[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise BenchError(f"reading {topic} did not reach its end in {timeout_s:.0f} s")
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.pop(msg.partition() or 0, None)
                    continue
                raise BenchError(f"reading {topic}: {err}")
            part, offset = msg.partition() or 0, msg.offset() or 0
            if part in pending and offset + 1 >= pending[part]:
                del pending[part]
            yield msg
    finally:
        consumer.close()


# -- bare consumer baseline --------------------------------------------------------------------
@dataclass
class BareRun:
    events: int
    first_at: float
    done_at: float


def bare_consumer_run(settings: Settings, topics: Sequence[str], expected: int,
                      timeout_s: float) -> BareRun:
    """confluent-kafka + orjson, one dict entry per key: the ceiling of any Python consumer
    on this machine. From the first record to the synchronous commit of the last."""
    consumer = Consumer({**client_config(settings), "group.id": f"bench-bare-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(list(topics))
    counts: dict[bytes | None, int] = {}
    seen, first_at = 0, None
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"bare consumer read {seen} of {expected} in {timeout_s:.0f} s")
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error() is not None:
                    continue
                if first_at is None:
                    first_at = time.time()
                _decode_quietly(msg.value())
                key = msg.key()
                counts[key] = counts.get(key, 0) + 1
                seen += 1
        consumer.commit(asynchronous=False)
        done_at = time.time()
    finally:
        consumer.close()
    assert first_at is not None
    return BareRun(seen, first_at, done_at)


def _decode_quietly(raw: bytes | None) -> Any:
    try:
        return orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:  # the simulator's malformed records
        return None


class RateProducer(threading.Thread):
    """Produces ``records`` (events-file records; their ``ts`` is ignored) at ``schedule``:
    [(events per second, seconds)], in ~0.1 s slices; ``phase_ends`` are the monotonic
    times each phase ended. An exception is kept in ``error``, not lost in the thread."""

    def __init__(self, settings: Settings, records: Sequence[dict[str, Any]],
                 schedule: Sequence[tuple[float, float]]) -> None:
        super().__init__(daemon=True)
        self.settings, self.records, self.schedule = settings, records, schedule
        self.phase_ends: list[float] = []
        self.sent = 0
        self.error: BaseException | None = None

    def paced(self) -> Iterator[dict[str, Any]]:
        for rate, seconds in self.schedule:
            end = time.monotonic() + seconds
            while time.monotonic() < end and self.sent < len(self.records):
                t = time.monotonic()
                chunk = self.records[self.sent:self.sent + max(1, int(rate * 0.1))]
                yield from chunk
                self.sent += len(chunk)
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
            self.phase_ends.append(time.monotonic())

    def run(self) -> None:
        try:
            produce_records(self.settings, self.paced())
        except BaseException as exc:
            self.error = exc


def metrics_url(lines: Iterable[str]) -> str | None:
    """Base URL of a worker's /metrics, from its ``metrics_serving`` log line."""
    for line in lines:
        found = re.search(r'"port": ?(\d+)', line)
        if found and '"metrics_serving"' in line:
            return f"http://127.0.0.1:{found.group(1)}"
    return None


def scrape_total(base: str, name: str) -> float:
    """The sum of every sample of metric ``name`` on a worker's /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))
