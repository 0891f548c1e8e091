"""``make bench``: throughput, latency, scale-out and memory of the worker on Apache Kafka.

One invocation starts its own Apache Kafka (:mod:`delaywatch.broker`), simulates a stream
(orders, inventory, scans with incidents and noise), produces it to the input topics *before*
any clock starts, then measures on those same topics (:mod:`delaywatch.bench_runs`):

* the worker (``python -m delaywatch.cli worker``) with models off and on;
* baselines: a bare Faust agent with and without a Table, a bare confluent-kafka consumer;
* ``replay`` of the same events file (no Kafka), models on and off;
* latency at a steady produce rate: alert record timestamp - its ``dw-source-ts`` header;
* two workers in one group against one;
* the worker's peak RSS and the size of its pickled shipment state per in-flight order.

Events/s of a consumer group = input records committed / (last commit - first event
consumed). A run stops when every input record is committed, or at ``run_budget_s`` (then
its figure covers the prefix it reached, and the run says ``complete: false``), so the whole
bench stays inside 15 minutes however slow the worker is.

This module holds the pure parts (arithmetic, the JSON layout, the table) and
:func:`run_bench`. Results: a rich table and JSON with :data:`REQUIRED_KEYS` (README,
"Benchmark").
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import structlog

__all__ = [
    "DEFAULT_EVENTS",
    "DEFAULT_OUT",
    "REQUIRED_KEYS",
    "BenchOptions",
    "add_ratios",
    "commit_curve",
    "committed_eps",
    "empty_results",
    "events_per_second",
    "flatten",
    "latency_summary",
    "missing_keys",
    "paced",
    "percentile",
    "ratio",
    "render_table",
    "run_bench",
    "size_summary",
    "steady_eps",
    "target_status",
    "write_results",
]

log = structlog.get_logger("delaywatch.bench")

DEFAULT_EVENTS = 200_000
DEFAULT_OUT = Path(".bench/results.json")

# The JSON's stable keys, dotted = nested objects ({"baseline": {"faust_table_eps": ..}}).
REQUIRED_KEYS = (
    "worker_eps",
    "worker_eps_models_off",
    "baseline.faust_table_eps",
    "baseline.faust_no_table_eps",
    "baseline.bare_consumer_eps",
    "replay_eps",
    "replay_eps_models_off",
    "latency_ms.p50",
    "latency_ms.p99",
    "latency_ms.max",
    "latency_ms.alerts",
    "latency_ms.excluded_no_source_ts",
    "scaleout_ratio_2_workers",
    "worker_rss_mb",
    "worker_rss_mb_models_off",
    "state_bytes_per_order.mean",
    "state_bytes_per_order.p99",
    "state_bytes_per_order.orders",
    "versions.python",
    "versions.faust",
    "versions.aiokafka",
    "versions.confluent_kafka",
    "versions.river",
    "versions.kafka",
    "machine.cores",
    "machine.ram_gb",
    "machine.cpu_model",
)

# issue #7's targets, for the table's last column: key -> (comparison, bound)
TARGETS: dict[str, tuple[str, float]] = {
    "worker_eps": (">=", 10_000),
    "ratios.worker_vs_faust_table": (">=", 3.0),
    "replay_eps": (">=", 50_000),
    "latency_ms.p99": ("<=", 250),
    "scaleout_ratio_2_workers": (">=", 1.6),
    "state_bytes_per_order.p99": ("<=", 4096),
}

Trace = Sequence[tuple[float, int]]  # (epoch s, committed input offsets summed) per snapshot


@dataclass(frozen=True)
class BenchOptions:
    events: int = DEFAULT_EVENTS
    out: Path = DEFAULT_OUT
    partitions: int = 4
    seed: int = 7
    latency_rate: float = 2000.0  # events/s, steady
    latency_seconds: float = 65.0  # at least 60 s of produce at that rate
    # The longest any consumer group is measured (worker, Faust baselines), and the longest
    # a replay runs: a slower run is measured on the prefix it reached in that time.
    run_budget_s: float = 75.0
    # latency run: the longest wait for the worker to catch up once producing has ended
    drain_budget_s: float = 45.0
    # promotion peak (#5): the normal rate, then 10x for peak_burst_s, then normal again
    # until the group's lag is back to zero (at most peak_after_s)
    peak_rate: float = 60.0
    peak_factor: float = 10.0
    peak_before_s: float = 15.0
    peak_burst_s: float = 60.0
    peak_after_s: float = 60.0
    engine: str = "kafka"


# -- pure parts ----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def events_per_second(events: int, first_at: float | None, done_at: float | None
                      ) -> float | None:
    """``events`` over the seconds from ``first_at`` to ``done_at``; None when unmeasured."""
    if first_at is None or done_at is None or done_at <= first_at or events <= 0:
        return None
    return round(events / (done_at - first_at), 1)


def _commit_points(trace: Trace) -> list[int]:
    """Indexes of the snapshots at which the committed sum had grown since the one before."""
    return [i for i in range(len(trace))
            if trace[i][1] > (trace[i - 1][1] if i else 0)]


def commit_curve(trace: Trace, first_at: float | None) -> list[tuple[float, int]]:
    """(seconds since the first event, input records committed) at each commit seen: how
    the rate held up over the run."""
    if first_at is None:
        return []
    return [(round(trace[i][0] - first_at, 2), trace[i][1]) for i in _commit_points(trace)]


def committed_eps(trace: Trace, first_at: float | None) -> tuple[float | None, int, float | None]:
    """(events/s, events, seconds) from ``first_at`` to the last commit seen: the input
    records committed by then over that time. For a finished run the last commit is the
    one that reached the end offsets."""
    points = _commit_points(trace)
    if first_at is None or not points:
        return None, 0, None
    at, events = trace[points[-1]]
    return events_per_second(events, first_at, at), events, round(at - first_at, 2)


def steady_eps(trace: Trace, after: float) -> float | None:
    """Events/s between the first commit seen at or after ``after`` and the last commit.

    Both ends are commit moments, where committed offsets equal the work done; starting at
    ``after`` (the end of the group's last rebalance) leaves out the start-up and the
    rebalance. None if there is no such window."""
    points = [i for i in _commit_points(trace) if trace[i][0] >= after]
    if len(points) < 2:
        return None
    (t0, n0), (t1, n1) = trace[points[0]], trace[points[-1]]
    return round((n1 - n0) / (t1 - t0), 1) if t1 > t0 else None


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, 3)


def latency_summary(latencies_ms: Sequence[float], excluded: int) -> dict[str, Any]:
    """p50/p99/max/mean over every alert with a source timestamp; ``excluded`` counts those
    without one (raised by the idle advance, not by an input record)."""
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    return {"p50": r(percentile(latencies_ms, 50)), "p99": r(percentile(latencies_ms, 99)),
            "max": r(max(latencies_ms)) if latencies_ms else None,
            "mean": r(sum(latencies_ms) / len(latencies_ms)) if latencies_ms else None,
            "alerts": len(latencies_ms), "excluded_no_source_ts": excluded}


def size_summary(sizes: Sequence[int]) -> dict[str, Any]:
    p99 = percentile(sizes, 99)
    return {"mean": round(sum(sizes) / len(sizes), 1) if sizes else None,
            "p99": None if p99 is None else round(p99, 1),
            "max": max(sizes) if sizes else None, "orders": len(sizes)}


def paced(records: Sequence[dict[str, Any]], rate: float, tick_s: float = 0.01,
          topics: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The records with ``ts`` rewritten so that ``produce_records(..., speedup=1)`` sends
    them at a steady ``rate`` per second, in ticks of ``tick_s`` (``ts`` only paces the
    producer: the values keep their own event times); ``topics`` renames their topics."""
    per_tick = max(1, round(rate * tick_s))
    tick_ms = per_tick / rate * 1000
    rename = topics or {}
    return [{**rec, "ts": (i // per_tick) * tick_ms,
             "topic": rename.get(rec["topic"], rec["topic"])} for i, rec in enumerate(records)]


def empty_results() -> dict[str, Any]:
    """Every stable key, unmeasured (None)."""
    out: dict[str, Any] = {}
    for dotted in REQUIRED_KEYS:
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = None
    return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def missing_keys(results: Mapping[str, Any]) -> list[str]:
    """Stable keys absent from ``results`` (present with a None value counts as present)."""
    flat = flatten(results)
    return [k for k in REQUIRED_KEYS if k not in flat]


def add_ratios(results: dict[str, Any]) -> None:
    """Each worker figure as a multiple of each baseline (``ratios.*``)."""
    base = results["baseline"]
    ratios = results.setdefault("ratios", {})
    for name, value in (("worker", results["worker_eps"]),
                        ("worker_models_off", results["worker_eps_models_off"])):
        ratios[f"{name}_vs_faust_table"] = ratio(value, base["faust_table_eps"])
        ratios[f"{name}_vs_faust_no_table"] = ratio(value, base["faust_no_table_eps"])
        ratios[f"{name}_vs_bare_consumer"] = ratio(value, base["bare_consumer_eps"])


def target_status(results: Mapping[str, Any], key: str) -> str:
    if key not in TARGETS:
        return ""
    op, bound = TARGETS[key]
    value = flatten(results).get(key)
    text = f"{op}{bound:,g}"
    if value is None:
        return f"{text} (unmeasured)"
    met = value >= bound if op == ">=" else value <= bound
    return f"{text} {'met' if met else 'SHORT'}"


# -- machine and versions ------------------------------------------------------------------
def machine_facts() -> dict[str, Any]:
    def first_value(path: str, prefix: str) -> str | None:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        return None

    mem_kb = first_value("/proc/meminfo", "MemTotal")
    return {"cores": os.cpu_count(),
            "ram_gb": round(int(mem_kb.split()[0]) / 1024 ** 2, 1) if mem_kb else None,
            "cpu_model": first_value("/proc/cpuinfo", "model name"),
            "platform": platform.platform(), "load_avg_start": os.getloadavg()}


def versions(kafka_version: str) -> dict[str, Any]:
    import confluent_kafka

    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "faust": dist("faust-streaming"),
            "aiokafka": dist("aiokafka"), "confluent_kafka": dist("confluent-kafka"),
            "librdkafka": confluent_kafka.libversion()[0], "river": dist("river"),
            "orjson": dist("orjson"), "kafka": kafka_version}


# -- the run -------------------------------------------------------------------------------
def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Every measurement in one go; returns the results (also written to ``options.out``)."""
    from delaywatch.bench_runs import measure_all
    from delaywatch.broker import DEFAULT_KAFKA_VERSION

    wall0 = time.monotonic()
    results = empty_results()
    results.update(started_at=datetime.now(UTC).isoformat(timespec="seconds"),
                   events=options.events, partitions=options.partitions,
                   versions=versions(DEFAULT_KAFKA_VERSION), machine=machine_facts(),
                   budgets_s={"run": options.run_budget_s, "drain": options.drain_budget_s})
    measure_all(options, results)
    add_ratios(results)
    results["machine"]["load_avg_end"] = os.getloadavg()
    results["wall_seconds"] = round(time.monotonic() - wall0, 1)
    write_results(results, options.out)
    return results


def write_results(results: Mapping[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                    + b"\n")


# -- the table -----------------------------------------------------------------------------
def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.2f}{unit}"
    return f"{value:,.0f}{unit}"


def render_table(results: Mapping[str, Any]) -> Any:
    """A rich Table of the headline figures, each worker figure as a multiple of each
    baseline, and issue #7's targets."""
    from rich import box
    from rich.table import Table

    flat = flatten(results)
    ratios = results.get("ratios", {})
    runs = results.get("runs", {})
    table = Table(title=f"delaywatch bench: {results.get('events') or 0:,} events, "
                        f"{results.get('partitions')} partitions", box=box.SIMPLE_HEAD,
                  caption="* stopped at its time budget: measured on the prefix it reached")
    for col in ("figure", "value", "x F+Table", "x Faust", "x bare", "target (#7)"):
        table.add_column(col, justify="left" if col in ("figure", "target (#7)") else "right",
                         no_wrap=col == "figure")

    def row(label: str, key: str, unit: str, ratio_of: str | None = None,
            run: str | None = None) -> None:
        rs = ["", "", ""]
        if ratio_of:
            rs = [_fmt(ratios.get(f"{ratio_of}_vs_{b}"), "x")
                  for b in ("faust_table", "faust_no_table", "bare_consumer")]
        status = target_status(results, key)
        if key == "worker_eps":
            status += "; x F+Table " + target_status(results, "ratios.worker_vs_faust_table")
        if run and runs.get(run, {}).get("complete") is False:
            label += " *"
        table.add_row(label, _fmt(flat.get(key), unit), *rs, status.replace(" (", "\n("))

    row("worker, models on", "worker_eps", " ev/s", "worker", "worker_models_on")
    row("worker, models off", "worker_eps_models_off", " ev/s", "worker_models_off",
        "worker_models_off")
    row("Faust + Table", "baseline.faust_table_eps", " ev/s", run="faust_table")
    row("Faust, no Table", "baseline.faust_no_table_eps", " ev/s", run="faust_no_table")
    row("confluent-kafka + orjson", "baseline.bare_consumer_eps", " ev/s")
    row("replay, models on", "replay_eps", " ev/s", run="replay_models_on")
    row("replay, models off", "replay_eps_models_off", " ev/s", run="replay_models_off")
    for q in ("p50", "p99", "max"):
        row(f"latency {q} at {_fmt(flat.get('latency_ms.rate_target_eps'))} ev/s",
            f"latency_ms.{q}", " ms", run="latency")
    row("2 workers / 1, steady", "scaleout_ratio_2_workers", "x",
        run="two_workers_models_on")
    row("2 workers / 1, end to end", "scaleout.ratio_end_to_end", "x",
        run="two_workers_models_on")
    row("peak RSS, models on", "worker_rss_mb", " MB")
    row("peak RSS, models off", "worker_rss_mb_models_off", " MB")
    row("state per in-flight order, mean", "state_bytes_per_order.mean", " B")
    row("state per in-flight order, p99", "state_bytes_per_order.p99", " B")
    burst = (f"{_fmt(flat.get('peak.rate_eps'))}->{_fmt(flat.get('peak.burst_rate_eps'))} "
             f"ev/s for {_fmt(flat.get('peak.burst_s'))} s")
    row(f"peak {burst}: max lag", "peak.max_lag", " rec", run="peak")
    row("peak: lag back to 0 after the burst", "peak.lag_zero_after_burst_s", " s",
        run="peak")
    row("peak: worker peak RSS", "peak.worker_peak_rss_mb", " MB", run="peak")
    row("peak: state keys max / at end", "peak.state_keys_max", "", run="peak")
    return table
