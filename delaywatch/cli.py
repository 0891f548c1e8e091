"""The ``delaywatch`` command."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import typer

from delaywatch.config.settings import Settings

app = typer.Typer(help="delaywatch: event-time delay and stock-mismatch detection.",
                  no_args_is_help=True, add_completion=False)
import_app = typer.Typer(help="Turn public datasets into the wire contract.", no_args_is_help=True)
broker_app = typer.Typer(help="Start/stop a local broker (Apache Kafka from Maven jars, or Tansu).",
                         no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(import_app, name="import")
dlq_app = typer.Typer(help="Inspect and re-inject dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
eval_app = typer.Typer(help="Compare the online models with batch baselines.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@dlq_app.command("inspect")
def dlq_inspect(
    topic: str | None = typer.Option(None, help="default: the configured DLQ topic"),
    samples: int = typer.Option(2),
    out: Path | None = typer.Option(None, help="export all records (.csv or .parquet), "
                                    "payloads masked"),
) -> None:
    """Counts by reason/source/stage and masked samples of the dead-letter topic."""
    from delaywatch.dlq import dlq_frame, summarize
    from delaywatch.kafka_io import read_all

    settings = _settings()
    records = [r["value"] for r in read_all(settings, topic or settings.topics.dlq)]
    typer.echo(json.dumps(summarize(records, samples), indent=2, ensure_ascii=False))
    if out is not None:
        df = dlq_frame(records)
        if out.suffix == ".parquet":
            df.to_parquet(out, index=False)
        else:
            df.to_csv(out, index=False)
        typer.echo(f"wrote {len(df)} rows to {out}")


@dlq_app.command("replay")
def dlq_replay(reason: str = typer.Option(..., help="e.g. key_mismatch")) -> None:
    """Re-inject the originals of one reason into their source topics (once per record)."""
    from delaywatch.dlq import replay_reason

    typer.echo(f"re-injected {replay_reason(_settings(), reason)} records")


@import_app.command("olist")
def import_olist(
    csv_path: Path = typer.Argument(..., exists=True),
    out: Path = typer.Option(Path("olist-events.jsonl")),
    truth: Path = typer.Option(Path("olist-truth.jsonl")),
) -> None:
    """Olist orders (purchase, approval, promise, delivery) as orders and carrier-scans."""
    from delaywatch.olist import import_olist as run
    from delaywatch.simulate import write_jsonl

    records, facts = run(csv_path)
    for path in (out, truth):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, records)
    write_jsonl(truth, facts)
    late = sum(1 for f in facts if f.get("late"))
    typer.echo(f"wrote {len(records)} records to {out}, {len(facts)} orders ({late} late) "
               f"to {truth}")


@eval_app.command("olist")
def eval_olist(
    csv_path: Path = typer.Argument(..., exists=True),
    out: Path | None = typer.Option(None, help="also write the JSON result to this file"),
    test_share: float = typer.Option(0.3, help="last share of orders by purchase time"),
    partitions: int = typer.Option(1, help="online learners (one per partition)"),
    seed: int = typer.Option(0, help="random_state of the batch models"),
) -> None:
    """Olist at placement: online river model vs batch HGB / logistic regression."""
    from delaywatch.olist_compare import compare_olist

    result = compare_olist(csv_path, test_share=test_share, partitions=partitions, seed=seed)
    split = result["split"]
    typer.echo(f"test: last {split['test_orders']} orders by purchase time "
               f"({split['test_purchase'][0][:10]} .. {split['test_purchase'][1][:10]}), "
               f"base rate {split['test_base_rate']:.4f}; train {split['train_orders']}")
    typer.echo(f"{'model':<14}{'ROC-AUC':>9}{'PR-AUC':>9}{'Brier':>9}")
    for name, m in result["metrics"].items():
        typer.echo(f"{name:<14}{m['roc_auc']:>9.4f}{m['pr_auc']:>9.4f}{m['brier']:>9.4f}")
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if out is not None:  # before printing: a closed pipe (| head) must not lose the file
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    typer.echo(text)


def _settings() -> Settings:
    return Settings()


@app.command()
def simulate(
    orders: int = typer.Option(2000, help="number of orders"),
    seed: int = typer.Option(7),
    out: Path = typer.Option(Path("events.jsonl"), help="events file (one record per line)"),
    truth: Path = typer.Option(Path("truth.jsonl"), help="what really happened, per order/SKU"),
    noise: bool = typer.Option(True, help="duplicates, out-of-order, late and malformed records"),
    start: str | None = typer.Option(None, help="first day, e.g. 2026-05-13 (KST); default "
                                     "2026-05-20 (history for `train` starts earlier)"),
    scenario: str | None = typer.Option(
        None, help="an operational failure on the promotion day: carrier_outage, "
        "hub_congestion or integration_failure (the truth's meta record says what it did)"),
    scenario_hours: float | None = typer.Option(
        None, help="make the scenario last this many hours from its usual start"),
    profile: str = typer.Option(
        "field", help="how often orders go wrong: field (4-6 % late, tracking not updated for "
        "1-2 % of orders, ~5 % on the promotion day) or stress (16 % late; the world of the "
        "README's earlier figures and the tests)"),
) -> None:
    """Simulate OMS/WMS/TMS streams with injected incidents and noise."""
    from datetime import datetime

    from delaywatch.simulate import KST, write_jsonl
    from delaywatch.simulate import simulate as run

    first = datetime.fromisoformat(start).replace(tzinfo=KST) if start else None
    try:
        records, facts = run(orders=orders, seed=seed, noise=noise, start=first,
                             scenario=scenario, scenario_hours=scenario_hours, profile=profile)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    for path in (out, truth):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, records)
    write_jsonl(truth, facts)
    typer.echo(f"wrote {len(records)} records to {out} and {len(facts)} truth rows to {truth}")


@app.command()
def replay(
    input: Path = typer.Option(..., "--input", "-i", exists=True),
    out: Path = typer.Option(Path("out"), help="directory for alerts/dlq/summary"),
    truth: Path | None = typer.Option(None, exists=True),
    partitions: int | None = typer.Option(None, help="emulate this many partitions"),
    flush: bool = typer.Option(True, help="at end of input, advance watermarks to the last "
                               "event time (--no-flush = exactly what a live worker emits)"),
    models: bool | None = typer.Option(None, help="learned models next to the rules"),
    models_from: Path | None = typer.Option(
        None, exists=True, help="warm-start the models from this checkpoint (implies --models)"),
) -> None:
    """Run an events file through the detectors without Kafka."""
    from delaywatch.replay import replay_file

    settings = _settings()
    if partitions:
        settings.topics.partitions = partitions
    if models is not None:
        settings.models.enabled = models
    if models_from is not None:
        settings.models.enabled = True
        settings.models.checkpoint_path = models_from
    _, summary = replay_file(input, out, settings, truth, flush=flush)
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


@app.command()
def report(
    input: Path | None = typer.Option(None, "--input", "-i", exists=True, file_okay=False,
                                      help="a replay's output directory"),
    events: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                       help="the events file replayed [the replay's "
                                       "source.json]"),
    from_topics: bool = typer.Option(False, help="read the input and alert topics of the "
                                     "configured broker instead"),
    since: str | None = typer.Option(None, help="with --from-topics: orders placed from this "
                                     "ISO time (event time; no offset = the shop's timezone)"),
    until: str | None = typer.Option(None, help="with --from-topics: ... until this one "
                                     "(exclusive); later events and alerts are not seen"),
    out: Path = typer.Option(Path("report.html"), help="the self-contained HTML file"),
) -> None:
    """KPI report (on-time, delay, proactive notice, stock mismatch, causes, lead time,
    calibration) by day, week, carrier and warehouse, as one HTML file."""
    from delaywatch.config.thresholds import load_thresholds
    from delaywatch.report import kpi_table, load_replay, load_topics
    from delaywatch.report_html import render_html

    settings = _settings()
    tz = load_thresholds(settings.thresholds_file).timezone
    if from_topics == (input is not None):
        raise typer.BadParameter("give either --input DIR or --from-topics")
    if input is not None:
        data = load_replay(input, events, tz, settings)
        source = f"replay {input}"
    else:
        if since is None or until is None:
            raise typer.BadParameter("--from-topics needs --since and --until")
        lo, hi = _aware(since, tz), _aware(until, tz)
        data = load_topics(settings, tz, lo, hi)
        source = (f"topics on {settings.kafka.bootstrap_servers}, orders placed "
                  f"{lo.isoformat()} .. {hi.isoformat()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, settings.report.targets, source=source), encoding="utf-8")
    row = kpi_table(data).iloc[0]
    typer.echo(f"wrote {out} ({out.stat().st_size:,} bytes): {int(row['orders']):,} orders, "
               f"on-time {row['on_time_rate']:.4f}, delay {row['delay_rate']:.4f}, "
               f"proactive notice {row['proactive_notice_rate']:.4f}, "
               f"unannounced late {row['unannounced_late_rate']:.4f}, "
               f"stock mismatch {row['stock_mismatch_rate']:.4f}, "
               f"{row['alerts_per_1000_orders']} alerts / 1000 orders")


def _aware(value: str, tz: str) -> Any:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    try:
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r}: not an ISO date-time") from exc
    return t if t.tzinfo is not None else t.replace(tzinfo=ZoneInfo(tz))


@app.command()
def train(
    input: Path = typer.Option(..., "--input", "-i", exists=True),
    checkpoint: Path = typer.Option(Path("models.ckpt"), help="where to write the models"),
    partitions: int | None = typer.Option(None, help="emulate this many partitions"),
) -> None:
    """Warm the learned models on history, through the replay path; a worker (or replay) with
    DELAYWATCH_MODELS__CHECKPOINT_PATH (--models-from) set to the file starts from them."""
    from delaywatch.models.checkpoint import ModelSet
    from delaywatch.replay import replay_file

    settings = _settings()
    settings.models.enabled = True
    settings.models.checkpoint_path = None  # from zero
    if partitions:
        settings.topics.partitions = partitions
    result, _ = replay_file(input, None, settings, None, checkpoint_out=checkpoint)
    learned = ModelSet.loads(checkpoint.read_bytes(), *_fresh_models(settings)).learned()
    typer.echo(f"trained on {result.events} events in {result.seconds:.1f} s: {learned}; "
               f"wrote {checkpoint} ({checkpoint.stat().st_size} bytes)")


def _fresh_models(settings: Any) -> tuple[Any, Any]:
    from delaywatch.config.thresholds import load_thresholds
    from delaywatch.core.pipeline import make_models

    m = make_models(settings, load_thresholds(settings.thresholds_file))
    return m.risk, m.stock


@app.command()
def worker() -> None:
    """Run a Faust worker (DELAYWATCH_KAFKA__BOOTSTRAP_SERVERS selects the cluster)."""
    from delaywatch.log import configure_logging
    from delaywatch.streams import run_worker

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    run_worker(settings)


@app.command()
def topics() -> None:
    """Create every topic with the configured partition count (idempotent)."""
    from delaywatch.kafka_io import create_all_topics

    settings = _settings()
    create_all_topics(settings)
    typer.echo(f"topics ready on {settings.kafka.bootstrap_servers} "
               f"({settings.topics.partitions} partitions)")


@app.command()
def produce(
    input: Path = typer.Option(..., "--input", "-i", exists=True),
    speedup: float | None = typer.Option(None, help="pace by event time / speedup"),
) -> None:
    """Send an events file to the input topics (keys partitioned like Kafka's Java client)."""
    from delaywatch.kafka_io import produce_file

    n = produce_file(_settings(), input, speedup=speedup)
    typer.echo(f"produced {n} records")


@app.command()
def monitor(
    state: Path = typer.Option(Path("delaywatch-monitor.state"),
                               help="checkpoint of the monitor and its offsets"),
    max_idle: float | None = typer.Option(None, help="exit after this many idle seconds"),
) -> None:
    """Ops monitor: feed outages and incidents from every input and alert partition to
    alerts.system (one process; a restart resumes from --state)."""
    from delaywatch.log import configure_logging
    from delaywatch.monitor_service import MonitorService

    configure_logging()
    sent = MonitorService(_settings(), state).run(max_idle_s=max_idle)
    typer.echo(f"sent {sent} system alerts")


@app.command()
def notify(
    sink: str = typer.Option("stdout", help="stdout | file | webhook"),
    path: Path = typer.Option(Path("alerts-delivered.jsonl"), help="file sink path"),
    url: str | None = typer.Option(None, help="webhook URL"),
    store: Path | None = typer.Option(None, help="dedupe store [notifier.store_path]"),
    group: str | None = typer.Option(None, help="consumer group [notifier.group]"),
    max_idle: float | None = typer.Option(None, help="exit after this many idle seconds"),
    tier: list[str] = typer.Option(
        [], help="retry tier TOPIC:DELAY_S[:ATTEMPTS], in order, repeatable "
                 "[notifier.tiers: alerts.retry.1m:60 alerts.retry.10m:600]"),
    dlq_topic: str | None = typer.Option(None, help="where exhausted retries end "
                                                    "[notifier.dlq_topic]"),
    skip_resolved_before_delivery: bool | None = typer.Option(
        None, help="no message for an alert resolved before any of its messages went out"),
    metrics_port: int | None = typer.Option(None, help="Prometheus metrics on 127.0.0.1"),
) -> None:
    """Reference notifier: deliver each alert once to a sink, retry through tiers, DLQ.
    Defaults come from the settings (DELAYWATCH_NOTIFIER__*); options override them."""
    from delaywatch.log import configure_logging
    from delaywatch.notify import (
        DeliveredStore,
        Notifier,
        RetryTier,
        file_sink,
        stdout_sink,
        webhook_sink,
    )

    if sink == "webhook" and not url:
        raise typer.BadParameter("--url is required for the webhook sink")
    tiers = []
    for spec in tier:
        parts = spec.split(":")
        try:
            tiers.append(RetryTier(parts[0], float(parts[1]),
                                   int(parts[2]) if len(parts) > 2 else 1))
        except (IndexError, ValueError):
            raise typer.BadParameter(f"--tier {spec!r}: expected TOPIC:DELAY_S[:ATTEMPTS]"
                                     ) from None
    settings = _settings()
    n = settings.notifier
    configure_logging(settings.log_level, settings.log_format)
    chosen = {"stdout": stdout_sink, "file": file_sink(path),
              "webhook": webhook_sink(url or "")}[sink]
    skip = (n.skip_resolved_before_delivery if skip_resolved_before_delivery is None
            else skip_resolved_before_delivery)
    counts = Notifier(settings, chosen, DeliveredStore(store or n.store_path, n.keep_days),
                      group=group or n.group, attempts=n.attempts, backoff_s=n.backoff_s,
                      tiers=tiers or [RetryTier(*t) for t in n.tiers],
                      dlq_topic=dlq_topic or n.dlq_topic,
                      skip_resolved_before_delivery=skip,
                      metrics_port=metrics_port if metrics_port is not None
                      else n.metrics_port).run(max_idle)
    typer.echo(json.dumps(counts), err=True)


@app.command()
def escalate(
    store: Path | None = typer.Option(None, help="state store [escalator.store_path]"),
    group: str | None = typer.Option(None, help="consumer group [escalator.group]"),
    max_idle: float | None = typer.Option(None, help="exit after this many idle seconds"),
    tick: float | None = typer.Option(None, help="seconds between looks for due "
                                                 "escalations [escalator.tick_s]"),
    metrics_port: int | None = typer.Option(None, help="Prometheus metrics on 127.0.0.1"),
    system_alarms: bool | None = typer.Option(
        None, help="admin alerts on alerts.system from the DLQ rates [escalator.system_alarms]"),
) -> None:
    """Escalate open alerts nobody acknowledged (alerts.ack) in time to alerts.escalation,
    and raise admin alerts on alerts.system. Times and thresholds: `escalation` and `system`
    in the thresholds file. Run one instance."""
    from delaywatch.config.thresholds import load_thresholds
    from delaywatch.escalate import EscalationService, EscalationStore
    from delaywatch.log import configure_logging

    settings = _settings()
    e = settings.escalator
    configure_logging(settings.log_level, settings.log_format)
    thresholds = load_thresholds(settings.thresholds_file)
    system = e.system_alarms if system_alarms is None else system_alarms
    counts = EscalationService(
        settings, EscalationStore(store or e.store_path), thresholds.escalation,
        group=group or e.group, tick_s=tick or e.tick_s,
        metrics_port=metrics_port if metrics_port is not None else e.metrics_port,
        system=thresholds.system if system else None,
    ).run(max_idle)
    typer.echo(json.dumps(counts), err=True)


@app.command()
def schemas(
    out: Path = typer.Option(Path("schemas/json")),
    check: bool = typer.Option(False, help="fail if the files on disk differ"),
) -> None:
    """Export the JSON Schema of every topic's messages."""
    from delaywatch.schemas.export import json_schemas

    stale = []
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        text = json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        path = out / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        typer.echo(f"out of date: {', '.join(stale)}", err=True)
        raise typer.Exit(1)
    typer.echo(f"schemas {'match' if check else 'written to'} {out}")


@app.command()
def tail(
    topic: str = typer.Argument(..., help="e.g. alerts.delay"),
    max_records: int = typer.Option(0, "--max", help="stop after N records (0 = never)"),
    from_beginning: bool = typer.Option(True),
) -> None:
    """Live, readable view of a topic."""
    from delaywatch.kafka_io import consume
    from delaywatch.ui import render_record

    n = 0
    for msg in consume(_settings(), [topic], from_beginning=from_beginning):
        if msg is None:
            continue
        render_record(topic, msg.value())
        n += 1
        if max_records and n >= max_records:
            break


@broker_app.command("start")
def broker_start(
    engine: str = typer.Option("auto", help="auto | kafka | tansu"),
    data_dir: Path | None = typer.Option(None),
    port: int | None = typer.Option(None),
) -> None:
    """Start a broker in the background on 127.0.0.1 (state in ~/.cache/delaywatch)."""
    from delaywatch.broker import start_detached

    state = start_detached(engine, data_dir, port)
    typer.echo(json.dumps(state, indent=2, default=str))
    typer.echo(f"export DELAYWATCH_KAFKA__BOOTSTRAP_SERVERS={state['bootstrap']}")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the broker started by `delaywatch broker start` (by its PID)."""
    from delaywatch.broker import stop_detached

    typer.echo("stopped" if stop_detached() else "no broker was running")


@broker_app.command("status")
def broker_status() -> None:
    from delaywatch.broker import status_detached

    typer.echo(json.dumps(status_detached(), indent=2, default=str))


@app.command()
def demo(
    duration: float = typer.Option(float(os.environ.get("DURATION", "90")),
                                   help="seconds before the summary"),
    orders: int = typer.Option(1000),
    seed: int = typer.Option(7),
    engine: str = typer.Option("auto", help="auto | kafka | tansu"),
) -> None:
    """Broker + topics + worker + a simulated day played fast, alerts live, then a summary."""
    from delaywatch.demo import run_demo

    raise typer.Exit(run_demo(duration=duration, orders=orders, seed=seed, engine=engine))


@app.command()
def bench(
    events: int = typer.Option(200_000, envvar="BENCH_EVENTS",
                               help="input records to simulate and produce"),
    out: Path = typer.Option(Path(".bench/results.json"), envvar="BENCH_OUT",
                             help="results JSON"),
    latency_seconds: float = typer.Option(65.0, help="produce time of the latency run"),
    latency_rate: float = typer.Option(2000.0, help="events/s of the latency run"),
    run_budget: float = typer.Option(75.0, help="longest a throughput run is measured (s); "
                                     "a slower one is measured on the prefix it reached"),
    peak_rate: float = typer.Option(60.0, help="normal events/s of the peak run"),
    peak_burst: float = typer.Option(60.0, help="seconds of the peak run's 10x burst"),
    seed: int = typer.Option(7),
) -> None:
    """Own Apache Kafka; worker, baselines, replay, latency, scale-out, memory: table + JSON."""
    from delaywatch.bench import BenchOptions, render_table, run_bench
    from delaywatch.log import configure_logging
    from delaywatch.ui import console

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    results = run_bench(BenchOptions(events=events, out=out, seed=seed,
                                     latency_seconds=latency_seconds,
                                     latency_rate=latency_rate, run_budget_s=run_budget,
                                     peak_rate=peak_rate, peak_burst_s=peak_burst))
    console.print(render_table(results))
    console.print(f"wrote {out}; wall {results['wall_seconds']:.0f} s; "
                  f"load average {results['machine']['load_avg_start'][0]:.2f} at start, "
                  f"{results['machine']['load_avg_end'][0]:.2f} at end")
    for err in results["errors"]:
        console.print(f"[red]failed[/] {err}")
    if results["errors"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
