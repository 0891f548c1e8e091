"""Replay: run an events file through the same core as the worker, without Kafka.

Records are fed in file order, each routed to the partition Kafka would give its key, so
the result equals a live run over the same records (``tests/streams/test_live_equals_replay``).
"""

from __future__ import annotations

import base64
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from delaywatch.config.settings import Settings
from delaywatch.config.thresholds import Thresholds, load_thresholds
from delaywatch.core.monitor import OpsMonitor, event_time
from delaywatch.core.pipeline import INPUT_ROLES, Topology, partition_for
from delaywatch.models.risk import ModelEvent, Outcome, Prediction
from delaywatch.models.rules import INTEGRITY_KINDS
from delaywatch.schemas.alerts import Alert, AlertStatus
from delaywatch.schemas.dlq import DeadLetter, SourceRef

__all__ = [
    "ReplayResult",
    "broken_causes",
    "iter_records",
    "load_alerts",
    "quality",
    "record_bytes",
    "replay",
    "replay_file",
    "role_of",
]


def role_of(topic: str, settings: Settings) -> str | None:
    t = settings.topics
    return {t.orders: "orders", t.inventory: "inventory", t.scans: "scans"}.get(topic)


def record_bytes(rec: dict[str, Any]) -> bytes:
    """The bytes a producer sends for one events-file line (malformed ones included)."""
    if "value" in rec:
        return orjson.dumps(rec["value"])
    if "raw" in rec:
        return str(rec["raw"]).encode("utf-8")
    return base64.b64decode(rec["raw_b64"])


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


@dataclass
class ReplayResult:
    alerts: list[Alert] = field(default_factory=list)
    system: list[Alert] = field(default_factory=list)  # alerts.system (the ops monitor)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    model_events: list[ModelEvent] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0
    seconds: float = 0.0

    def add(self, out: Any) -> None:
        if isinstance(out, Alert):
            (self.system if out.category == "system" else self.alerts).append(out)
        elif isinstance(out, DeadLetter):
            self.dead_letters.append(out)
        elif isinstance(out, Prediction):
            self.predictions.append(out)
        elif isinstance(out, Outcome):
            self.outcomes[out.order_id] = out
        elif isinstance(out, ModelEvent):
            self.model_events.append(out)

    def summary(self, truth: list[dict[str, Any]] | None = None,
                report: Any = None) -> dict[str, Any]:
        """Counts, and with ``truth`` the quality against the simulator's truth; with
        ``report`` (``delaywatch.report.ReportData`` of the replayed records) the report's
        KPIs under ``kpi.*``, ``quality.proactive_notice_rate`` and, without truth,
        ``alerts_per_1000_orders`` (with truth it counts the truth's orders, as before)."""
        # imported here: the report reads records with this module's helpers
        from delaywatch.report import alerts_per_1000, incidents_by_kind, summary_kpis

        out: dict[str, Any] = {
            "events": self.events,
            "events_per_second": round(self.events / self.seconds, 1) if self.seconds else None,
            "seconds": round(self.seconds, 3),
            "duplicates_absorbed": self.duplicates,
            "alerts": len(self.alerts),
            "alerts_by_kind": dict(sorted(Counter(
                a.kind for a in self.alerts if a.status == AlertStatus.OPEN).items())),
            "alerts_by_status": dict(sorted(Counter(a.status.value for a in self.alerts).items())),
            "dlq": len(self.dead_letters),
            "dlq_by_reason": dict(sorted(Counter(d.reason for d in self.dead_letters).items())),
        }
        out["drift_events"] = sum(1 for e in self.model_events if e.kind == "drift")
        out["kpi"] = {"cause_mix": cause_mix(self.alerts)}
        out["system_alerts"] = len(self.system)
        out["customer_messages"] = customer_messages(self.alerts)
        if truth is not None:
            out["quality"] = quality(self.alerts, truth)
            system = system_quality(self.system, self.alerts, truth)
            if "outage" in system:
                out["quality"]["outage"] = system.pop("outage")
            if "incident" in system:
                out["quality"]["incident"] = system.pop("incident")
            if system:
                out["quality"]["scenario"] = system
            out["quality"]["cause"] = cause_quality(self.alerts, truth)
            orders = out["quality"]["orders"]
            out["alerts_per_1000_orders"] = alerts_per_1000(sum(
                1 for a in self.alerts if a.status == AlertStatus.OPEN and a.category == "delay"
            ), orders)
            if self.predictions:
                out["quality"].update(model_quality(self.predictions_frame()))
        out["incidents_by_kind"] = incidents_by_kind(self.system)
        if report is not None:
            kpis = summary_kpis(report)
            for name in ("on_time_rate", "delay_rate", "stock_mismatch_rate"):
                out["kpi"][name] = kpis[f"kpi.{name}"]
            out.setdefault("quality", {})["proactive_notice_rate"] = kpis[
                "quality.proactive_notice_rate"]
            out.setdefault("alerts_per_1000_orders", kpis["alerts_per_1000_orders"])
        return out

    def predictions_frame(self) -> Any:
        """One row per scoring, joined to the outcome the stream delivered later."""
        import pandas as pd

        rows = [{"order_id": p.order_id, "scored_at": p.scored_at, "trigger": p.trigger,
                 "p_late": p.p_late, "eta_p50": p.eta_p50, "eta_p90": p.eta_p90,
                 "promised_at": p.promised_at} for p in self.predictions]
        df = pd.DataFrame(rows)
        outcome = self.outcomes
        df["delivered_at"] = [getattr(outcome.get(o), "delivered_at", None) for o in df.order_id]
        df["late"] = [getattr(outcome.get(o), "late", None) for o in df.order_id]
        for col in ("scored_at", "eta_p50", "eta_p90", "promised_at", "delivered_at"):
            df[col] = pd.to_datetime(df[col], unit="s", utc=True)
        return df


def replay(
    records: Iterable[dict[str, Any]], settings: Settings, thresholds: Thresholds,
    flush: bool = True, configure: Callable[[Topology], None] | None = None,
    with_monitor: bool = True,
) -> ReplayResult:
    """Feed records in order; with ``flush`` (default) the end of input advances every
    watermark to the last event time, as a live worker's idle advance would. ``configure``
    gets the Topology before the first record (analysis hooks, e.g. ``keep_features``)."""
    topo = Topology(settings, thresholds)
    if configure is not None:
        configure(topo)
    result = ReplayResult()
    monitor = OpsMonitor.of(thresholds) if with_monitor else None
    if monitor is not None:
        monitor.expect([f"{r}:{p}" for r in INPUT_ROLES for p in range(topo.n)],
                       [f"alerts:{p}" for p in range(topo.n)])

    def add(outputs: Iterable[Any]) -> None:
        for out in outputs:
            result.add(out)
            if monitor is not None and isinstance(out, Alert) and out.category == "delay":
                p = partition_for(out.key, topo.n)  # the alert topics are keyed like it
                result.system.extend(monitor.on_alerts(f"alerts:{p}", [out]))

    start = time.perf_counter()
    for offset, rec in enumerate(records):
        role = role_of(rec["topic"], settings)
        if role is None:
            continue
        key = rec.get("key")
        raw = record_bytes(rec)
        p = partition_for(key or "", topo.n)
        source = SourceRef(topic=rec["topic"], partition=p,
                           offset=offset, timestamp_ms=rec.get("ts"), key=key)
        outputs = list(topo.feed(role, key, raw, source))
        add(outputs)
        if monitor is not None and not any(
                isinstance(o, DeadLetter) and o.stage == "decode" for o in outputs):
            # what the worker accepted (a timestamp from the future would move the clock)
            value = rec.get("value")
            at = event_time(value)
            if at is not None and isinstance(value, dict):
                result.system.extend(monitor.on_input(f"{role}:{p}", role, value, at))
    add(topo.heartbeats())  # what a live worker sends after its last batch
    if flush:
        add(topo.flush())
        if monitor is not None:
            engines: list[Any] = [*(s.engine for s in topo.shipments),
                                  *(s.engine for s in topo.stocks)]
            end = max((c for e in engines for c in e.clocks.values()), default=None)
            if end is not None:
                result.system.extend(monitor.advance_to(end))
    result.seconds = time.perf_counter() - start
    result.events = topo.stats.events
    result.duplicates = topo.duplicates
    return result


def replay_file(
    input_path: Path, out_dir: Path | None, settings: Settings | None = None,
    truth_path: Path | None = None, flush: bool = True, checkpoint_out: Path | None = None,
) -> tuple[ReplayResult, dict[str, Any]]:
    """Replay a file; ``checkpoint_out`` saves what the models learned (``delaywatch train``)."""
    settings = settings or Settings()
    thresholds = load_thresholds(settings.thresholds_file)
    topologies: list[Topology] = []
    result = replay(iter_records(input_path), settings, thresholds, flush=flush,
                    configure=topologies.append)
    if checkpoint_out is not None:
        topologies[0].models.save(checkpoint_out)
    truth = list(iter_records(truth_path)) if truth_path else None
    from delaywatch.report import build

    # the report's KPIs of the same records (read again: outside the timed replay)
    report = build(iter_records(input_path), result.alerts, thresholds.timezone, settings)
    summary = result.summary(truth, report)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        # where the alerts came from: `delaywatch report --input DIR` finds the events here
        (out_dir / "source.json").write_bytes(orjson.dumps(
            {"input": str(input_path.resolve()),
             "truth": str(truth_path.resolve()) if truth_path else None},
            option=orjson.OPT_INDENT_2))
        with (out_dir / "alerts.jsonl").open("wb") as fh:
            for a in result.alerts:
                fh.write(a.model_dump_json().encode() + b"\n")
        with (out_dir / "system.jsonl").open("wb") as fh:  # alerts.system
            for a in result.system:
                fh.write(a.model_dump_json().encode() + b"\n")
        with (out_dir / "dlq.jsonl").open("wb") as fh:
            for d in result.dead_letters:
                fh.write(d.model_dump_json().encode() + b"\n")
        if result.predictions:
            result.predictions_frame().to_parquet(out_dir / "predictions.parquet", index=False)
        (out_dir / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return result, summary


def load_alerts(path: Path) -> Any:
    """Alerts of a replay (``DIR/alerts.jsonl``) or an exported topic as a pandas DataFrame."""
    import pandas as pd

    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    df = pd.json_normalize(rows, max_level=0)
    for col in ("detected_at", "promised_at"):
        if col in df:
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
    return df


# -- quality against the simulator's truth ---------------------------------------------------
ORDER_RULE_KINDS = ("waybill_missing", "handover_missed", "tracking_stale", "carrier_exception",
                    "stock_shortage")
OUTCOME_KINDS = ("promise_at_risk", "promise_broken", "delay_risk")
# stock alerts about orders (their truth is the order's, not the warehouse:sku's)
ORDER_STOCK_KINDS = ("reservation_not_released",)


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _pr(tp: int, alerted: int, positives_hit: int, positives: int) -> dict[str, Any]:
    return {
        "precision": round(tp / alerted, 4) if alerted else None,
        "recall": round(positives_hit / positives, 4) if positives else None,
        "alerted": alerted,
        "positives": positives,
    }


def model_quality(df: Any) -> dict[str, Any]:
    """Exact ROC-AUC / PR-AUC (scikit-learn) of p_late on labelled scorings before the
    promise, at placement (first scoring per order), Brier score; ETA interval coverage."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    lab = df[df["late"].notna() & (df["scored_at"] < df["promised_at"])]
    out: dict[str, Any] = {"delay_risk": {}, "eta": {}}
    risk = out["delay_risk"]
    if lab["late"].nunique() == 2:
        y = lab["late"].astype(bool)
        risk["roc_auc"] = round(float(roc_auc_score(y, lab["p_late"])), 4)
        risk["pr_auc"] = round(float(average_precision_score(y, lab["p_late"])), 4)
        risk["brier"] = round(float(brier_score_loss(y, lab["p_late"])), 4)
        first = lab.sort_values("scored_at").groupby("order_id", sort=False).head(1)
        if first["late"].nunique() == 2:
            yf = first["late"].astype(bool)
            risk["roc_auc_at_placement"] = round(float(roc_auc_score(yf, first["p_late"])), 4)
            risk["pr_auc_at_placement"] = round(
                float(average_precision_score(yf, first["p_late"])), 4)
        risk["scorings"] = len(lab)
        risk["base_rate"] = round(float(y.mean()), 4)
    done = df[df["delivered_at"].notna() & df["eta_p90"].notna()]
    if len(done):
        below90 = done["delivered_at"] <= done["eta_p90"]
        inside = below90 & (done["delivered_at"] >= done["eta_p50"])
        out["eta"]["p90_coverage"] = round(float(below90.mean()), 4)
        out["eta"]["interval_coverage"] = round(float(inside.mean()), 4)
        out["eta"]["scorings"] = len(done)
    return out


def broken_causes(alerts: list[Alert]) -> dict[str, str]:
    """order_id -> cause of its ``promise_broken`` alert (the late orders as the stream saw
    them, diagnosed when the promise passed)."""
    return {a.order_id: (a.cause.value if a.cause is not None else "unknown")
            for a in alerts if a.kind == "promise_broken" and a.status == AlertStatus.OPEN
            and a.order_id is not None}


def cause_mix(alerts: list[Alert]) -> dict[str, float]:
    """Share of late orders (a ``promise_broken`` alert) by cause."""
    counts = Counter(broken_causes(alerts).values())
    total = sum(counts.values())
    return {c: round(n / total, 4) for c, n in sorted(counts.items())} if total else {}


# the simulator's incidents as causes, in pipeline order: an order's root cause is the first
# step that went wrong (a stock shortage delays everything after it)
_TRUTH_CAUSES = (("stock_shortage", "stock_shortage"), ("waybill_missing", "waybill_missing"),
                 ("handover_missed", "handover_missed"), ("carrier_exception", "carrier_delay"),
                 ("tracking_stale", "carrier_delay"), ("transit_slow", "carrier_delay"))


def cause_quality(alerts: list[Alert], truth: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the diagnosed cause of a late order is its true root cause (late orders
    with a ``promise_broken`` alert and a named incident); a carrier exception diagnosed as
    an address issue (a failed delivery) counts as right."""
    diagnosed = broken_causes(alerts)
    first: dict[str, Alert] = {}  # each order's first delay alert: what ops saw first
    for a in alerts:
        if a.category == "delay" and a.status == AlertStatus.OPEN and a.order_id is not None:
            seen = first.get(a.order_id)
            if seen is None or a.detected_at < seen.detected_at:
                first[a.order_id] = a
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    right = n = first_right = first_unknown = 0
    for o in truth:
        if o.get("type") != "order" or not o.get("late") or o["order_id"] not in diagnosed:
            continue
        kinds = {i["kind"] for i in o.get("incidents", [])}
        root = next(((k, c) for k, c in _TRUTH_CAUSES if k in kinds), None)
        if root is None:
            continue
        got = diagnosed[o["order_id"]]
        confusion[root[1]][got] += 1
        n += 1
        right += _same(root, got)
        early = first[o["order_id"]].cause
        first_right += early is not None and _same(root, early.value)
        first_unknown += early is None or early.value == "unknown"
    return {"accuracy": round(right / n, 4) if n else None, "orders": n,
            "first_alert_accuracy": round(first_right / n, 4) if n else None,
            "first_alert_unknown": round(first_unknown / n, 4) if n else None,
            "confusion": {t: dict(sorted(c.items())) for t, c in sorted(confusion.items())}}


def customer_messages(alerts: list[Alert]) -> dict[str, Any]:
    """Messages a customer would get (alerts with a customer text, opened or updated; ETA and
    stage-change notices among them), per order and any 24 hours from the first of them."""
    times: dict[str, list[float]] = defaultdict(list)
    notices = 0
    for a in alerts:
        if a.message_ko is not None and a.status != AlertStatus.RESOLVED and a.order_id:
            times[a.order_id].append(a.detected_at.timestamp())
            notices += "notice" in a.evidence
    worst: list[int] = []
    for ts in times.values():
        ts.sort()
        worst.append(max(sum(1 for u in ts[i:] if u < t + 86400.0) for i, t in enumerate(ts)))
    return {"orders_told": len(times), "messages": sum(len(v) for v in times.values()),
            "eta_or_stage_notices": notices,
            "max_per_order_24h": max(worst, default=0),
            "orders_over_3_in_24h": sum(1 for w in worst if w > 3)}


def system_quality(system: list[Alert], alerts: list[Alert], truth: list[dict[str, Any]]
                   ) -> dict[str, Any]:
    """How the ops monitor (``alerts.system``) did against a scenario's truth: the meta
    record names the scenario's scope, window and affected orders (``simulate --scenario``).
    """
    opened = [a for a in system if a.status == AlertStatus.OPEN]
    meta = next((t for t in truth if t.get("type") == "meta"), {})
    scenario = meta.get("scenario")
    if not scenario:
        return {}
    start, end = _ts(scenario["start"]), _ts(scenario["end"])
    assert start is not None and end is not None
    name = scenario["scope"].partition(":")[2]
    affected = int(scenario["affected_orders"])
    out: dict[str, Any] = {"scenario": scenario["name"], "scope": scenario["scope"],
                           "affected_orders": affected}
    during = [a for a in opened if start - 3600 <= a.detected_at.timestamp() <= end + 12 * 3600]
    out["system_alerts_opened_near"] = sorted(a.key for a in during)
    if scenario["name"] == "carrier_outage":
        key = f"feed_outage:scans:{name}"
        per_order = [a for a in alerts if a.status == AlertStatus.OPEN and a.category == "delay"
                     and a.carrier == name and start <= a.detected_at.timestamp() < end]
        stale = [a for a in per_order if a.kind == "tracking_stale"]
        out["outage"] = {
            **_detection(system, key, start, end),
            "per_order_alerts_during": len(stale),
            "per_order_alerts_during_rate": round(len(stale) / affected, 4) if affected else None,
            "all_delay_alerts_during": len(per_order),
            "other_feed_outages": sum(1 for a in opened
                                      if a.kind == "feed_outage" and a.key != key),
        }
    elif scenario["name"] == "hub_congestion":
        key = f"incident:{scenario['scope']}"
        mine = [a for a in system if a.key == key]
        last = mine[-1] if mine else None
        got = int(last.evidence["affected_orders"]) if last is not None else 0
        hit = {o["order_id"] for o in truth if o.get("type") == "order"
               and any(i["kind"] == "hub_congestion" for i in o.get("incidents", []))}
        listed = set(last.evidence.get("orders", [])) if last is not None else set()
        out["incident"] = {
            "detected": bool(mine),
            "opens": sum(1 for a in mine if a.status == AlertStatus.OPEN),
            "detected_at": mine[0].detected_at.isoformat() if mine else None,
            "affected_count": got,
            "affected_error": round((got - affected) / affected, 4) if affected else None,
            "listed_precision": round(len(listed & hit) / len(listed), 4) if listed else None,
            "listed_recall": round(len(listed & hit) / len(hit), 4) if hit else None,
            "other_incidents": sum(1 for a in opened if a.kind == "incident" and a.key != key),
        }
    elif scenario["name"] == "integration_failure":  # the WMS's progress (scope feed:wms)
        out.update(_detection(system, f"feed_outage:{name}", start, end))
        out["other_feed_outages"] = sum(1 for a in opened if a.kind == "feed_outage"
                                        and a.key != f"feed_outage:{name}")
    return out


def _detection(system: list[Alert], key: str, start: float, end: float) -> dict[str, Any]:
    """Whether the system alert ``key`` caught a scenario that ran ``[start, end)``: its first
    open in the window (or two hours after it), in minutes of event time from the start."""
    mine = [a for a in system if a.key == key]
    first = min((a.detected_at.timestamp() for a in mine if a.status == AlertStatus.OPEN
                 and start <= a.detected_at.timestamp() <= end + 7200), default=None)
    return {
        "detected": first is not None,
        "detection_delay_minutes": round((first - start) / 60, 1) if first else None,
        "opens": sum(1 for a in mine if a.status == AlertStatus.OPEN),
        "resolves": sum(1 for a in mine if a.status == AlertStatus.RESOLVED),
    }


def _same(root: tuple[str, str], got: str) -> bool:
    return got == root[1] or (root[0] == "carrier_exception" and got == "address_issue")


# integrity alert kind -> the simulator's incident kind it should find
_INTEGRITY_TRUTH = {"misdelivery_suspected": "misdelivery"}


def quality(alerts: list[Alert], truth: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision/recall per detector, lead time and unannounced-late rate.

    A delay alert is right when its order had that incident (for promise_at_risk and
    promise_broken: when the order was late); an order counts as positive when it was late or
    had any named incident. "Announced" means a delay alert detected before ``promised_at``.
    """
    orders = {t["order_id"]: t for t in truth if t.get("type") == "order"}
    stock_truth = {t["key"]: t for t in truth if t.get("type") == "stock"}
    opened = [a for a in alerts if a.status == AlertStatus.OPEN]

    by_order: dict[str, dict[str, float]] = defaultdict(dict)  # order -> kind -> first detected
    integrity: dict[str, set[str]] = defaultdict(set)  # kind -> orders (not delay alerts)
    for a in opened:
        if a.kind in INTEGRITY_KINDS and a.order_id is not None:
            integrity[a.kind].add(a.order_id)
        elif a.category == "delay" and a.order_id is not None:
            t = a.detected_at.timestamp()
            kinds = by_order[a.order_id]
            kinds[a.kind] = min(kinds.get(a.kind, t), t)

    def incident_kinds(o: dict[str, Any]) -> set[str]:
        return {i["kind"] for i in o.get("incidents", [])}

    def is_positive(o: dict[str, Any]) -> bool:
        return bool(o.get("late")) or bool(incident_kinds(o) & set(ORDER_RULE_KINDS))

    per_kind: dict[str, Any] = {}
    present = {a.kind for a in opened}
    for kind in (*ORDER_RULE_KINDS, *OUTCOME_KINDS):
        if kind == "delay_risk" and kind not in present:
            continue  # models off
        alerted = [oid for oid, ks in by_order.items() if kind in ks]
        if kind in OUTCOME_KINDS:
            pos = {oid for oid, o in orders.items() if o.get("late")}
        else:
            pos = {oid for oid, o in orders.items() if kind in incident_kinds(o)}
        tp = sum(1 for oid in alerted if oid in pos)
        hit = sum(1 for oid in pos if kind in by_order.get(oid, {}))
        per_kind[kind] = _pr(tp, len(alerted), hit, len(pos))

    positives = {oid for oid, o in orders.items() if is_positive(o)}
    alerted_orders = [oid for oid in by_order if oid in orders]
    delay = _pr(sum(1 for oid in alerted_orders if oid in positives), len(alerted_orders),
                sum(1 for oid in positives if oid in by_order), len(positives))
    delay["by_kind"] = per_kind

    late = [o for o in orders.values() if o.get("late") and not o.get("cancelled")]

    def announced(exclude: tuple[str, ...]) -> tuple[int, list[float]]:
        unannounced, leads = 0, []
        for o in late:
            promised = _ts(o.get("promised_at"))
            kinds = by_order.get(o["order_id"], {})
            first = min((t for k, t in kinds.items() if k not in exclude), default=None)
            if first is None or promised is None or first >= promised:
                unannounced += 1
            else:
                leads.append((promised - first) / 3600)
        return unannounced, leads

    unannounced, leads = announced(())
    unannounced_rules, leads_rules = announced(("delay_risk",))

    stock_alerted: dict[str, set[str]] = defaultdict(set)
    for a in opened:
        if a.category == "stock" and a.kind not in ORDER_STOCK_KINDS:
            stock_alerted[a.key].add(a.kind)
    stock_pos = {k for k, t in stock_truth.items() if t.get("incidents")}
    stock = _pr(sum(1 for k in stock_alerted if k in stock_pos), len(stock_alerted),
                sum(1 for k in stock_pos if k in stock_alerted), len(stock_pos))
    stock_kinds: dict[str, Any] = {}
    for kind in ("oversell", "negative_stock", "stock_mismatch"):
        alerted_k = [k for k, ks in stock_alerted.items() if kind in ks]
        pos_k = {k for k, t in stock_truth.items()
                 if kind in {i["kind"] for i in t.get("incidents", [])}}
        stock_kinds[kind] = _pr(sum(1 for k in alerted_k if k in pos_k), len(alerted_k),
                                sum(1 for k in pos_k if kind in stock_alerted.get(k, set())),
                                len(pos_k))
    for kind in ("stock_anomaly", "stockout_forecast"):  # learned: right on any incident SKU
        alerted_k = [k for k, ks in stock_alerted.items() if kind in ks]
        if alerted_k:
            hit = sum(1 for k in stock_pos if kind in stock_alerted.get(k, set()))
            stock_kinds[kind] = _pr(sum(1 for k in alerted_k if k in stock_pos), len(alerted_k),
                                    hit, len(stock_pos))
    # reservation_not_released lists orders: right when the order's truth has the incident
    held = {o["order_id"] for a in alerts
            if a.kind == "reservation_not_released" and a.status != AlertStatus.RESOLVED
            for o in a.evidence.get("orders", [])}
    pos_held = {oid for oid, o in orders.items()
                if "reservation_not_released" in incident_kinds(o)}
    if held or pos_held:
        stock_kinds["reservation_not_released"] = _pr(
            len(held & pos_held), len(held), len(held & pos_held), len(pos_held))
    stock["by_kind"] = stock_kinds

    # process-integrity alerts are facts about an order, not delay predictions: scored on
    # their own, against the truth's incident of the same meaning where the world has one
    integrity_kinds: dict[str, Any] = {}
    for kind, truth_kind in _INTEGRITY_TRUTH.items():
        pos = {oid for oid, o in orders.items() if truth_kind in incident_kinds(o)}
        alerted_i = integrity.get(kind, set())
        if pos or alerted_i:
            integrity_kinds[kind] = _pr(len(alerted_i & pos), len(alerted_i),
                                        len(alerted_i & pos), len(pos))

    return {
        "delay": delay,
        "stock": stock,
        "integrity": {"by_kind": integrity_kinds},
        "late_orders": len(late),
        "orders": len(orders),
        "unannounced_late_rate": round(unannounced / len(late), 4) if late else None,
        "unannounced_late_rate_rules_only": (
            round(unannounced_rules / len(late), 4) if late else None),
        "median_lead_time_hours": round(statistics.median(leads), 2) if leads else None,
        # how early: share of late orders announced at least 24 h before their promise
        "late_announced_24h_ahead_rate": (
            round(sum(1 for h in leads if h >= 24) / len(late), 4) if late else None),
        "median_lead_time_hours_rules_only": (
            round(statistics.median(leads_rules), 2) if leads_rules else None),
    }
