"""The measurements of ``make bench``, each on the broker and events :func:`measure_all` set up.

Every consumer-group run (worker, Faust baselines) gets a fresh app_id, hence a fresh group
and changelog topics; worker runs also get their own internal and output topics, so runs
never see each other's records. Inputs are produced once, before any clock starts.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from delaywatch.bench import (
    BenchOptions,
    commit_curve,
    committed_eps,
    events_per_second,
    latency_summary,
    paced,
    ratio,
    size_summary,
    steady_eps,
)
from delaywatch.bench_kafka import (
    BenchError,
    ChildProcess,
    Finish,
    GroupProgress,
    RateProducer,
    backlog,
    bare_consumer_run,
    first_logged_at,
    last_logged_at,
    metrics_url,
    read_topic,
    scrape_total,
    wait_for_logged,
    wait_group_stable,
    wait_until_committed,
    worker_env,
)
from delaywatch.config.settings import Settings

__all__ = ["Bench", "measure_all", "run_settings"]

log = structlog.get_logger("delaywatch.bench")

# the simulator makes ~15.4 records per order: simulate a few spare orders, then cut
_RECORDS_PER_ORDER = 14
# produce_records flushes only at its end: chunks stay below librdkafka's queue limit
# (queue.buffering.max.messages, 100,000)
_PRODUCE_CHUNK = 50_000
_START_TIMEOUT_S = 120.0  # process start to first event (imports, group join, recovery)
_INPUT_ROLES = ("orders", "inventory", "scans")
_INTERNAL_ROLES = ("order_lines", "stock_notices")
_RUN_TOPICS = ("alerts_delay", "alerts_stock", "dlq", "model", *_INTERNAL_ROLES)
_WORKER = ["-m", "delaywatch.cli", "worker"]


@dataclass
class Bench:
    """One invocation: base settings (bootstrap, shared input topics), the events, a temp
    work dir, the log dir, and the results being filled in."""

    options: BenchOptions
    settings: Settings
    records: list[dict[str, Any]]
    events_file: Path
    workdir: Path
    logdir: Path
    results: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    steps_s: dict[str, float] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return len(self.records)

    @property
    def input_topics(self) -> list[str]:
        return [getattr(self.settings.topics, r) for r in _INPUT_ROLES]

    @property
    def runs(self) -> dict[str, Any]:
        runs: dict[str, Any] = self.results.setdefault("runs", {})
        return runs

    def step(self, name: str, fn: Callable[[], None]) -> None:
        """Run one measurement; a failure is logged and recorded, the others still run."""
        log.info("bench_step", step=name, load_avg_1m=round(os.getloadavg()[0], 2))
        t0 = time.monotonic()
        try:
            fn()
        except Exception as exc:
            log.exception("bench_step_failed", step=name)
            self.errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:500]}")
        self.steps_s[name] = round(time.monotonic() - t0, 1)
        log.info("bench_step_done", step=name, seconds=self.steps_s[name])


def run_settings(base: Settings, run: str, *, own_inputs: bool = False) -> Settings:
    """``base`` with this run's internal and output topics (and inputs if ``own_inputs``)."""
    s = base.model_copy(deep=True)
    for role in _RUN_TOPICS + (_INPUT_ROLES if own_inputs else ()):
        setattr(s.topics, role, f"bench.{run}.{getattr(base.topics, role)}")
    return s


# -- consumer-group runs -------------------------------------------------------------------
def _group_run(b: Bench, settings: Settings, app_id: str, procs: Sequence[ChildProcess],
               consumed: Sequence[str], first_event: str) -> tuple[dict[str, Any], Finish]:
    """Wait for the first event, then for every input record committed or the run budget;
    then stop the processes. Events/s = input records committed / (last commit - first
    event)."""
    progress = GroupProgress(settings, app_id, consumed)
    try:
        wait_for_logged(procs, first_event, _START_TIMEOUT_S)
        finish = wait_until_committed(progress, procs, b.options.run_budget_s,
                                      counted=b.input_topics)
        rss = [p.peak_rss_mb() for p in procs]
    finally:
        progress.close()
        for p in procs:
            p.stop()
    first_at = min((f for f in (first_logged_at(p.log_lines(), first_event) for p in procs)
                    if f is not None), default=None)
    eps, events, seconds = committed_eps(finish.trace, first_at)
    return {"app_id": app_id, "complete": finish.done_at is not None, "eps": eps,
            "events_committed": events, "seconds": seconds,
            "backlog_at_stop": backlog(finish.committed, finish.ends, b.input_topics),
            # where a stopped run was behind: "topic/partition" -> records not committed
            "behind_at_stop": {f"{t}/{p}": end - max(finish.committed.get((t, p), 0), 0)
                               for (t, p), end in sorted(finish.ends.items())
                               if end > max(finish.committed.get((t, p), 0), 0)},
            "peak_rss_mb": [None if r is None else round(r, 1) for r in rss],
            "first_event_at": first_at, "commits": commit_curve(finish.trace, first_at)}, finish


def _worker_run(b: Bench, run: str, *, models: bool, workers: int = 1) -> dict[str, Any]:
    """Worker process(es) on the shared inputs, one app_id."""
    from delaywatch.kafka_io import create_all_topics

    settings = run_settings(b.settings, run)
    create_all_topics(settings)
    app_id = f"bench-{run}-{time.time_ns()}"
    t = settings.topics
    procs = []
    try:
        for i in range(workers):
            env = worker_env(settings, app_id, b.workdir / f"{run}-{i}-data", models=models,
                             checkpoint=b.workdir / f"{run}-{i}-models.ckpt")
            procs.append(ChildProcess(_WORKER, env, b.logdir / f"{run}-{i}.log"))
        out, finish = _group_run(b, settings, app_id, procs,
                                 [*b.input_topics, t.order_lines, t.stock_notices],
                                 "engine_restored")
    finally:
        for p in procs:
            p.stop()
    # engines are restored at the first record after each assignment: the last restore is
    # when every worker is at work after the group's last rebalance
    last_restore = max((f for f in (last_logged_at(p.log_lines(), "engine_restored")
                                    for p in procs) if f is not None), default=None)
    counts = _record_counts(settings, [t.alerts_delay, t.alerts_stock, t.dlq, t.order_lines,
                                       t.stock_notices])
    out.update(
        workers=workers, models=models,
        steady_eps=None if last_restore is None else steady_eps(finish.trace, last_restore),
        all_at_work_after_s=None if last_restore is None or out["first_event_at"] is None
        else round(last_restore - out["first_event_at"], 2),
        engine_restores_logged=[sum('"engine_restored"' in ln for ln in p.log_lines())
                                for p in procs],
        alerts=counts[t.alerts_delay] + counts[t.alerts_stock], dlq=counts[t.dlq],
        internal_records=counts[t.order_lines] + counts[t.stock_notices],
        state_bytes_per_order=_state_sizes(settings, app_id))
    return out


def _record_counts(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    from confluent_kafka import Consumer, TopicPartition

    from delaywatch.kafka_io import client_config

    c = Consumer({**client_config(settings), "group.id": f"bench-count-{time.time_ns()}"})
    try:
        def size(topic: str, p: int) -> int:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            return max(0, hi - lo)

        n = settings.topics.partitions
        return {topic: sum(size(topic, p) for p in range(n)) for topic in topics}
    finally:
        c.close()


def _state_sizes(settings: Settings, app_id: str) -> dict[str, Any]:
    """Serialized (pickled KeyState) bytes of each order's last shipment state in the
    worker's changelog, when the run stopped; keys whose last record is a tombstone
    (settled and dropped) are not in flight and left out."""
    last: dict[bytes | None, int | None] = {}
    for msg in read_topic(settings, f"{app_id}-shipment-state-changelog"):
        value = msg.value()
        last[msg.key()] = None if value is None else len(value)
    sizes = [v for v in last.values() if v is not None]
    return {**size_summary(sizes), "tombstoned_keys": len(last) - len(sizes),
            "source": "shipment-state changelog, last value per key (pickled KeyState)"}


def measure_workers(b: Bench) -> None:
    r = b.results
    off = _worker_run(b, "models-off", models=False)
    b.runs["worker_models_off"] = off
    r["worker_eps_models_off"] = off["eps"]
    r["worker_rss_mb_models_off"] = off["peak_rss_mb"][0]
    on = _worker_run(b, "models-on", models=True)
    b.runs["worker_models_on"] = on
    r["worker_eps"] = on["eps"]
    r["worker_rss_mb"] = on["peak_rss_mb"][0]
    r["state_bytes_per_order"] = on["state_bytes_per_order"]


def measure_scaleout(b: Bench) -> None:
    two = _worker_run(b, "scaleout", models=True, workers=2)
    b.runs["two_workers_models_on"] = two
    one = b.runs.get("worker_models_on", {})
    b.results["scaleout"] = {
        "models": True,
        "method": "steady: commit to commit, after the group's last rebalance",
        "steady_eps_2_workers": two["steady_eps"], "steady_eps_1_worker": one.get("steady_eps"),
        "eps_2_workers": two["eps"], "eps_1_worker": one.get("eps"),
        "ratio_end_to_end": ratio(two["eps"], one.get("eps")),
        "all_at_work_after_s": two["all_at_work_after_s"]}
    b.results["scaleout_ratio_2_workers"] = ratio(two["steady_eps"], one.get("steady_eps"))


def measure_faust(b: Bench, *, table: bool) -> None:
    name = "faust_table" if table else "faust_no_table"
    app_id = f"bench-{name.replace('_', '-')}-{time.time_ns()}"
    argv = ["-m", "delaywatch.bench_faust", "--bootstrap", b.settings.kafka.bootstrap_servers,
            "--app-id", app_id, "--topics", ",".join(b.input_topics),
            "--partitions", str(b.settings.topics.partitions),
            "--data-dir", str(b.workdir / f"{name}-data"), *(["--table"] if table else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELAYWATCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = ChildProcess(argv, env, b.logdir / f"{name}.log")
    try:
        out, _ = _group_run(b, b.settings, app_id, [proc], b.input_topics, "bench_first_event")
    finally:
        proc.stop()
    b.runs[name] = out
    b.results["baseline"][f"{name}_eps"] = out["eps"]


def measure_bare(b: Bench) -> None:
    run = bare_consumer_run(b.settings, b.input_topics, b.events, _START_TIMEOUT_S)
    eps = events_per_second(run.events, run.first_at, run.done_at)
    b.results["baseline"]["bare_consumer_eps"] = eps
    b.runs["bare_consumer"] = {"eps": eps, "events": run.events, "complete": True,
                               "seconds": round(run.done_at - run.first_at, 3)}


def _budgeted(records: Iterable[dict[str, Any]], budget_s: float, seen: list[int]
              ) -> Iterator[dict[str, Any]]:
    deadline = time.monotonic() + budget_s
    for rec in records:
        if seen[0] % 1024 == 0 and time.monotonic() > deadline:
            return
        seen[0] += 1
        yield rec


def measure_replay(b: Bench, *, models: bool) -> None:
    """``replay`` of the events file (read and parsed as part of the timing)."""
    from delaywatch.config.thresholds import load_thresholds
    from delaywatch.replay import iter_records, replay

    settings = b.settings.model_copy(deep=True)
    settings.models.enabled = models
    settings.models.checkpoint_path = None
    seen = [0]
    # flush=False: exactly what a live worker emits, so alert counts compare with its runs
    res = replay(_budgeted(iter_records(b.events_file), b.options.run_budget_s, seen),
                 settings, load_thresholds(settings.thresholds_file), flush=False)
    eps = round(seen[0] / res.seconds, 1) if res.seconds else None
    b.results["replay_eps" if models else "replay_eps_models_off"] = eps
    b.runs["replay_models_" + ("on" if models else "off")] = {
        "eps": eps, "events": seen[0], "complete": seen[0] == b.events,
        "seconds": round(res.seconds, 2), "alerts": len(res.alerts),
        "dlq": len(res.dead_letters)}


def measure_latency(b: Bench) -> None:
    """The worker (models on) on inputs of its own, produced at a steady rate while it runs;
    latency = alert record timestamp - its ``dw-source-ts`` header."""
    from delaywatch.kafka_io import create_all_topics, produce_records

    o = b.options
    settings = run_settings(b.settings, "latency", own_inputs=True)
    create_all_topics(settings)
    t = settings.topics
    inputs = [t.orders, t.inventory, t.scans]
    n = min(b.events, int(o.latency_rate * o.latency_seconds))
    rename = {getattr(b.settings.topics, r): getattr(t, r) for r in _INPUT_ROLES}
    records = paced(b.records[:n], o.latency_rate, topics=rename)
    app_id = f"bench-latency-{time.time_ns()}"
    env = worker_env(settings, app_id, b.workdir / "latency-data", models=True,
                     checkpoint=b.workdir / "latency-models.ckpt")
    proc = ChildProcess(_WORKER, env, b.logdir / "latency.log")
    progress = GroupProgress(settings, app_id, [*inputs, t.order_lines, t.stock_notices])
    try:
        wait_group_stable(settings, app_id, 1, _START_TIMEOUT_S, [proc])
        time.sleep(2.0)  # the group is stable; let Faust start its streams
        t0 = time.monotonic()
        produced = produce_records(settings, records, speedup=1.0)
        produce_s = time.monotonic() - t0
        produced_at = time.time()
        behind = backlog(*progress.snapshot(), inputs)
        finish = wait_until_committed(progress, [proc], o.drain_budget_s, counted=inputs)
    finally:
        progress.close()
        proc.stop()
    latencies: list[float] = []
    excluded = 0
    for topic in (t.alerts_delay, t.alerts_stock):
        for msg in read_topic(settings, topic):
            source_ts = dict(msg.headers() or []).get("dw-source-ts")
            if source_ts is None:
                excluded += 1
            else:
                latencies.append(msg.timestamp()[1] - int(source_ts))
    complete = finish.done_at is not None
    b.runs["latency"] = {"complete": complete, "app_id": app_id}
    b.results["latency_ms"] = {
        **latency_summary(latencies, excluded), "events": produced,
        "rate_target_eps": o.latency_rate, "rate_actual_eps": round(produced / produce_s, 1),
        "produce_seconds": round(produce_s, 1),
        # inputs produced but not yet committed when producing ended / when the run stopped
        "backlog_at_produce_end": behind,
        "backlog_at_stop": backlog(finish.committed, finish.ends, inputs),
        "drain_after_produce_s": None if finish.done_at is None
        else round(finish.done_at - produced_at, 2),
        "complete": complete,
        # alerts still to come when the run stopped would all be later than these
        "lower_bound": not complete}


def measure_peak(b: Bench) -> None:
    """Issue #5's promotion peak: the worker (models on) on inputs of its own, produced at
    the normal rate, then ``peak_factor`` times it for ``peak_burst_s``, then at the normal
    rate again until the group's committed lag is back to zero. Sampled every second: lag
    (input records produced but not committed), the worker's RSS and its state keys."""
    from delaywatch.kafka_io import create_all_topics

    o = b.options
    settings = run_settings(b.settings, "peak", own_inputs=True)
    create_all_topics(settings)
    t = settings.topics
    inputs = [t.orders, t.inventory, t.scans]
    burst_rate = o.peak_rate * o.peak_factor
    schedule = [(o.peak_rate, o.peak_before_s), (burst_rate, o.peak_burst_s),
                (o.peak_rate, o.peak_after_s)]
    n = min(b.events, int(sum(rate * secs for rate, secs in schedule)))
    rename = {getattr(b.settings.topics, r): getattr(t, r) for r in _INPUT_ROLES}
    records = [{**rec, "topic": rename.get(rec["topic"], rec["topic"])}
               for rec in b.records[:n]]
    app_id = f"bench-peak-{time.time_ns()}"
    env = worker_env(settings, app_id, b.workdir / "peak-data", models=True,
                     checkpoint=b.workdir / "peak-models.ckpt")
    env["DELAYWATCH_WORKER__METRICS_PORT"] = "0"  # a free port, logged as metrics_serving
    proc = ChildProcess(_WORKER, env, b.logdir / "peak.log")
    progress = GroupProgress(settings, app_id, [*inputs, t.order_lines, t.stock_notices])
    producer = RateProducer(settings, records, schedule)
    samples: list[dict[str, Any]] = []
    recovered_at: float | None = None
    try:
        wait_group_stable(settings, app_id, 1, _START_TIMEOUT_S, [proc])
        time.sleep(2.0)  # the group is stable; let Faust start its streams
        base = metrics_url(proc.log_lines())
        producer.start()
        t0 = time.monotonic()
        while producer.is_alive() or recovered_at is None:
            if not proc.alive():
                raise BenchError(f"the worker died:\n{proc.log_tail()}")
            lag = backlog(*progress.snapshot(), inputs)
            samples.append({"t": round(time.monotonic() - t0, 1), "lag": lag,
                            "rss_mb": proc.rss_mb(),
                            "state_keys": scrape_total(base, "delaywatch_state_keys")
                            if base else None})
            if len(producer.phase_ends) >= 2 and lag == 0 and recovered_at is None:
                recovered_at = time.monotonic()
            if recovered_at is not None:
                break
            time.sleep(1.0)
        producer.join(o.peak_after_s + 5)
    finally:
        progress.close()
        peak_rss = proc.peak_rss_mb()
        proc.stop()
    if producer.error is not None:
        raise BenchError(f"producing the peak failed: {producer.error!r}")
    burst_end = producer.phase_ends[1] if len(producer.phase_ends) >= 2 else None
    keys = [x["state_keys"] for x in samples if x["state_keys"] is not None]
    rss = [x["rss_mb"] for x in samples if x["rss_mb"] is not None]
    b.runs["peak"] = {"complete": recovered_at is not None, "app_id": app_id}
    b.results["peak"] = {
        "rate_eps": o.peak_rate, "burst_rate_eps": burst_rate, "burst_s": o.peak_burst_s,
        "records": producer.sent, "orders": len({r["key"] for r in records[:producer.sent]
                                                 if r["topic"] == t.orders}),
        "max_lag": max((x["lag"] for x in samples), default=None),
        # seconds from the end of the burst to the first sample with nothing uncommitted
        "lag_zero_after_burst_s": None if recovered_at is None or burst_end is None
        else round(max(0.0, recovered_at - burst_end), 1),
        "worker_peak_rss_mb": None if peak_rss is None else round(peak_rss, 1),
        "rss_mb_before_burst": round(rss[min(len(rss) - 1, int(o.peak_before_s))], 1)
        if rss else None,
        "rss_mb_at_end": round(rss[-1], 1) if rss else None,
        "state_keys_max": max(keys) if keys else None,
        "state_keys_at_end": keys[-1] if keys else None,
        "complete": recovered_at is not None,
        "samples": samples[::5]}


# -- set-up --------------------------------------------------------------------------------
def _produce_inputs(b: Bench) -> None:
    """Produce the events to the shared input topics, before any clock starts."""
    from delaywatch.kafka_io import create_all_topics, produce_records

    create_all_topics(b.settings)
    t0 = time.monotonic()
    for i in range(0, b.events, _PRODUCE_CHUNK):
        produce_records(b.settings, b.records[i:i + _PRODUCE_CHUNK])
    b.results["produce_eps"] = round(b.events / (time.monotonic() - t0), 1)
    stored = sum(_record_counts(b.settings, b.input_topics).values())
    if stored != b.events:
        raise BenchError(f"the input topics hold {stored} records, not {b.events}")


def _simulate(options: BenchOptions, events_file: Path) -> list[dict[str, Any]]:
    from delaywatch.simulate import simulate, write_jsonl

    # the stress world: the bench's figures stay comparable with its runs before profiles
    records, _ = simulate(orders=math.ceil(options.events / _RECORDS_PER_ORDER),
                          seed=options.seed, profile="stress")
    records = records[:options.events]
    write_jsonl(events_file, records)
    return records


@contextlib.contextmanager
def _workspace(out: Path) -> Iterator[tuple[Path, Path]]:
    """A temp dir (events file, Faust data dirs; removed) and ``<out dir>/logs`` (kept)."""
    logdir = out.parent / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    for old in logdir.glob("*.log"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="delaywatch-bench-") as tmp:
        yield Path(tmp), logdir


def measure_all(options: BenchOptions, results: dict[str, Any]) -> None:
    """Broker, events, then every measurement; fills ``results`` in place."""
    from delaywatch.broker import Broker

    errors: list[str] = []
    steps_s: dict[str, float] = {}
    results.update(errors=errors, steps_s=steps_s)
    with _workspace(options.out) as (workdir, logdir):
        events_file = workdir / "events.jsonl"
        records = _simulate(options, events_file)
        settings = Settings()
        settings.topics.partitions = options.partitions
        results["events"] = len(records)
        results["worker_commit_interval_s"] = settings.worker.commit_interval_s
        with Broker.start(options.engine, log_path=logdir / "broker.log") as broker:
            settings.kafka.bootstrap_servers = broker.bootstrap
            b = Bench(options, settings, records, events_file, workdir, logdir, results,
                      errors, steps_s)
            _produce_inputs(b)  # nothing can be measured without the inputs
            b.step("bare_consumer", lambda: measure_bare(b))
            b.step("faust_no_table", lambda: measure_faust(b, table=False))
            b.step("faust_table", lambda: measure_faust(b, table=True))
            b.step("workers", lambda: measure_workers(b))
            b.step("scaleout", lambda: measure_scaleout(b))
            b.step("latency", lambda: measure_latency(b))
            b.step("peak", lambda: measure_peak(b))
            b.step("replay_models_off", lambda: measure_replay(b, models=False))
            b.step("replay_models_on", lambda: measure_replay(b, models=True))
