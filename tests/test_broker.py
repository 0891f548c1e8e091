"""Tests for delaywatch.broker: real Apache Kafka (KRaft) and Tansu brokers, started here.

Kafka tests are skipped when ``java``/``mvn`` are missing, except under ``CI=true`` where that
is a failure.  Every broker started here must be gone when the session ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from delaywatch import broker as br

pytestmark = pytest.mark.broker

QUIET = {"log_level": 0}  # the brokers are stopped on purpose: keep librdkafka quiet


def _need_java() -> None:
    if br.java_available():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true but java/mvn are not on PATH: the Kafka broker tests must run")
    pytest.skip("java and mvn are not on PATH")


def _broker_pids() -> set[int]:
    """PIDs of running kafka.Kafka / tansu broker processes (from `ps`)."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True)
    pids = set()
    for line in out.stdout.splitlines():
        pid, stat, args = [*line.strip().split(None, 2), "", ""][:3]
        if stat.startswith("Z"):
            continue
        if "kafka.Kafka" in args or ("tansu" in args and " broker " in f" {args} "):
            pids.add(int(pid))
    return pids


def _pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state owned by ``pid`` (via /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:
                continue
            hexip, hexport = local.split(":")
            raw = bytes.fromhex(hexip)
            # /proc stores the address as 32-bit little-endian words
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            if len(words) == 16 and words[:12] == b"\0" * 10 + b"\xff\xff":
                words = words[12:]  # IPv4-mapped IPv6
            ip = socket.inet_ntop(socket.AF_INET if len(words) == 4 else socket.AF_INET6, words)
            found.add((ip, int(hexport, 16)))
    return found


def _produce(bootstrap: str, topic: str, n: int = 10) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", **QUIET})
    values = [f"msg-{i}".encode() for i in range(n)]
    errors: list[object] = []
    for i, value in enumerate(values):
        producer.produce(
            topic,
            value=value,
            key=f"key-{i}".encode(),
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
    assert producer.flush(30) == 0
    assert errors == []
    return values


def _consume(
    bootstrap: str, topic: str, partitions: int, n: int, group: str | None = None
) -> list[tuple[int, bytes]]:
    """Read ``n`` messages from the start of every partition (manual assignment: no rebalance,
    so Tansu's ~30 s JoinGroup does not apply); commit them when ``group`` is given."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"probe-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **QUIET,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            partition, value = msg.partition(), msg.value()
            assert partition is not None and value is not None
            got.append((partition, value))
        if group:
            consumer.commit(asynchronous=False)
        return got
    finally:
        consumer.close()


def _topics(bootstrap: str) -> dict[str, int]:
    md = AdminClient({"bootstrap.servers": bootstrap, **QUIET}).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items()}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", autouse=True)
def no_leftover_brokers() -> Iterator[None]:
    before = _broker_pids()
    yield
    deadline = time.monotonic() + 5
    while (_broker_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _broker_pids() - before
    assert not left, f"broker processes left behind: {left}"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[br.Broker]:
    _need_java()
    with br.Broker.start("kafka", data_dir=tmp_path_factory.mktemp("kafka")) as b:
        yield b
    assert _pid_gone(b.pid)


# ----------------------------------------------------------------------------- no broker


def test_free_port_and_engine_resolution() -> None:
    port = br.free_port()
    assert 0 < port < 65536 and not _port_open(port)
    assert br.resolve_engine("auto") == ("kafka" if br.java_available() else "tansu")
    assert br.resolve_engine("tansu") == "tansu"
    assert br.resolve_engine("Kafka") == "kafka"
    with pytest.raises(ValueError):
        br.resolve_engine("redpanda")


def test_ensure_kafka_jars_concurrent_and_idempotent(tmp_path: Path) -> None:
    """Two processes fetching into one empty cache at once: one downloads, both succeed."""
    _need_java()
    env = {**os.environ, "DELAYWATCH_CACHE_DIR": str(tmp_path)}
    code = "from delaywatch.broker import ensure_kafka_jars as e; print(e())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    lib = tmp_path / "kafka-3.9.1" / "lib"
    assert outs == [str(lib), str(lib)]
    jars = sorted(lib.glob("*.jar"))
    assert len(jars) == 57
    assert any(j.name.startswith("kafka_2.13-3.9.1") for j in jars)
    t0 = time.monotonic()
    assert br.ensure_kafka_jars(cache_dir=tmp_path) == lib
    assert time.monotonic() - t0 < 0.5
    assert not (tmp_path / "kafka-3.9.1" / "lib.partial").exists()


# ----------------------------------------------------------------------------- Kafka


def test_kafka_roundtrip(kafka: br.Broker) -> None:
    assert kafka.engine == "kafka"
    assert kafka.bootstrap == f"127.0.0.1:{kafka.port}"
    # Client and controller listeners, and nothing else, bound to loopback only.
    assert _listening_addresses(kafka.pid) == {
        ("127.0.0.1", kafka.port),
        ("127.0.0.1", kafka.controller_port),
    }
    br.create_topics(kafka.bootstrap, {"roundtrip": 3})
    br.create_topics(kafka.bootstrap, {"roundtrip": 3})  # already exists: no error
    assert _topics(kafka.bootstrap)["roundtrip"] == 3
    sent = _produce(kafka.bootstrap, "roundtrip")
    got = _consume(kafka.bootstrap, "roundtrip", 3, len(sent))
    assert sorted(v for _, v in got) == sorted(sent)
    assert len({p for p, _ in got}) > 1  # keys were spread over the partitions


def test_kafka_auto_creates_topics_with_one_partition(kafka: br.Broker) -> None:
    _produce(kafka.bootstrap, "auto-created", 1)
    assert _topics(kafka.bootstrap)["auto-created"] == 1


def test_kafka_stop_then_restart_keeps_topics_and_offsets(tmp_path: Path) -> None:
    _need_java()
    data_dir = tmp_path / "kafka-data"
    port = br.free_port()
    b = br.Broker.start("kafka", data_dir=data_dir, port=port)
    assert (data_dir / "server.properties").is_file()
    assert (data_dir / "log4j.properties").is_file()
    cport = b.controller_port
    br.create_topics(b.bootstrap, {"orders": 3}, config={"retention.ms": "3600000"})
    sent = _produce(b.bootstrap, "orders")
    got = _consume(b.bootstrap, "orders", 3, len(sent), group="restart-check")
    assert sorted(v for _, v in got) == sorted(sent)

    t0 = time.monotonic()
    b.stop()
    stop_s = time.monotonic() - t0
    assert _pid_gone(b.pid)
    assert cport is not None
    assert not _port_open(port) and not _port_open(cport)
    assert stop_s < 30
    b.stop()  # idempotent

    with br.Broker.start("kafka", data_dir=data_dir, port=port) as again:
        assert again.bootstrap == f"127.0.0.1:{port}"
        assert again.controller_port == cport  # stored in data_dir and reused
        assert again.pid != b.pid
        assert _topics(again.bootstrap)["orders"] == 3
        consumer = Consumer({"bootstrap.servers": again.bootstrap, "group.id": "restart-check"})
        try:
            committed = consumer.committed(
                [TopicPartition("orders", p) for p in range(3)], timeout=15
            )
        finally:
            consumer.close()
        assert sum(tp.offset for tp in committed) == len(sent)
    assert _pid_gone(again.pid)
    assert data_dir.is_dir()  # an explicit data_dir is never deleted


def test_kafka_port_in_use_is_refused(tmp_path: Path) -> None:
    _need_java()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        with pytest.raises(br.BrokerError, match="already in use"):
            br.Broker.start("kafka", data_dir=tmp_path, port=port)
    finally:
        blocker.close()


def test_kafka_fatal_startup_raises_with_log_tail(tmp_path: Path) -> None:
    """A broker that dies while starting is reported at once, with its log, and reaped."""
    _need_java()
    meta = tmp_path / "kafka-logs" / "meta.properties"
    meta.parent.mkdir()
    meta.write_text("version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\n")
    before = _broker_pids()
    t0 = time.monotonic()
    with pytest.raises(br.BrokerError, match="exited with code") as info:
        br.Broker.start("kafka", data_dir=tmp_path)
    assert time.monotonic() - t0 < 60
    assert "node" in str(info.value).lower()  # the log tail names the cause
    assert _broker_pids() <= before


def test_temporary_data_dir_is_removed_on_stop() -> None:
    _need_java()
    b = br.Broker.start("kafka")
    assert b.data_dir.is_dir()
    b.stop()
    assert not b.data_dir.exists()


# ----------------------------------------------------------------------------- Tansu


def test_tansu_roundtrip(tmp_path: Path) -> None:
    with br.Broker.start("tansu", data_dir=tmp_path) as b:
        assert b.engine == "tansu"
        assert _listening_addresses(b.pid) == {("127.0.0.1", b.port)}
        br.create_topics(b.bootstrap, {"tansu-topic": 3})
        br.create_topics(b.bootstrap, {"tansu-topic": 3})
        sent = _produce(b.bootstrap, "tansu-topic")
        got = _consume(b.bootstrap, "tansu-topic", 3, len(sent))
        assert sorted(v for _, v in got) == sorted(sent)
    assert _pid_gone(b.pid)
    assert not _port_open(b.port)
    assert (tmp_path / "broker.log").is_file()


def test_detached_start_status_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELAYWATCH_STATE_DIR", str(tmp_path / "state"))
    assert br.status_detached() is None
    assert br.stop_detached() is False

    state = br.start_detached("tansu", tmp_path / "data", None)
    try:
        assert state["running"] and state["engine"] == "tansu"
        assert br.state_file() == tmp_path / "state" / "broker.json"
        assert br.state_file().is_file()
        status = br.status_detached()
        assert status is not None and status["running"]
        assert status["pid"] == state["pid"] and status["bootstrap"] == state["bootstrap"]
        assert br.start_detached("tansu", tmp_path / "data", None)["already_running"]
        assert "tansu-topic" not in _topics(state["bootstrap"])
    finally:
        assert br.stop_detached() is True
    assert _pid_gone(state["pid"])
    assert not _port_open(state["port"])
    assert br.status_detached() is None
    assert br.stop_detached() is False


def test_stop_detached_never_kills_a_foreign_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELAYWATCH_STATE_DIR", str(tmp_path))
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        br.state_file().write_text(
            f'{{"pid": {sleeper.pid}, "bootstrap": "127.0.0.1:1", "engine": "kafka",'
            f' "data_dir": "{tmp_path}", "cmdline": ["java", "kafka.Kafka"]}}'
        )
        status = br.status_detached()
        assert status is not None and status["running"] is False
        assert br.stop_detached() is False
        assert sleeper.poll() is None  # still alive
        assert not br.state_file().exists()
    finally:
        sleeper.kill()
        sleeper.wait()
