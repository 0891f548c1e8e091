"""KPI report tables (issue #8): what happened to each order, from the input records alone.

The ground truth is what the input topics say happened (orders placed and cancelled, carrier
``delivered`` scans, WMS/OMS stock snapshots); the alerts say what the detectors told, and
when. No simulator truth file is needed, so the same tables come from a replay or from live
topics. Everything here is a pure function of records and alerts; reading files and topics is
at the end of the module (``load_replay``, ``load_topics``), rendering in
``delaywatch.report_html``.

Definitions (an order's day is its ``order_placed`` time in the shop's timezone, ``timezone``
of the thresholds file; its week the ISO week of that day):

* **orders** - orders with an ``order_placed`` event (first one per order id).
* **due** - orders not cancelled that were delivered, or whose promise passed undelivered by
  the end of the data (``as_of``: the last event time read, or ``--until``). Orders still
  within their promise are neither on time nor late yet.
* **late** - due, and delivered after ``promised_at`` or not delivered by ``as_of``.
* **on_time_rate** = delivered at or before the promise / due; **delay_rate** = late / due
  (the two add up to 1).
* **announced** - a late order with a delay alert (any kind, status ``open``) detected before
  its promise. **proactive_notice_rate** = announced / late;
  **unannounced_late_rate** = 1 - proactive_notice_rate. The same rule as
  ``replay.quality()``'s ``unannounced_late_rate``, which counts late orders from the
  simulator's truth instead of the records.
* **lead_hours** - promise minus the first delay alert, for announced late orders
  (``quality.median_lead_time_hours`` is their median).
* **alerts_per_1000_orders** = 1000 x delay alerts opened for the group's orders / orders.
* **stock_mismatch_rate** = ``warehouse:sku`` keys with a ``stock_mismatch`` alert opened /
  keys with both a WMS and an OMS ``stock_snapshot`` (by day: keys snapshotted by both that
  day, and the alerts opened that day; by warehouse: the warehouse's keys). Not defined by
  carrier.
* **cause mix** - orders with a ``promise_broken`` alert (the late orders as the stream saw
  them when the promise passed), by that alert's cause; ``kpi.cause_mix`` of ``summary.json``.
* **incidents** - alerts of an incident kind (``incident``, ``feed_outage``) or of category
  ``system``. No detector emits them yet, so the table is empty and says so.
* **calibration** - scorings before the promise with a known outcome
  (``predictions.parquet``), binned by ``p_late``: mean predicted vs observed late share.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from pydantic import ValidationError

from delaywatch.config.settings import Settings
from delaywatch.replay import broken_causes, iter_records, role_of
from delaywatch.schemas.alerts import Alert, AlertStatus
from delaywatch.schemas.events import InventoryEvent, OrderEvent, ScanEvent

__all__ = [
    "GROUPS",
    "INCIDENT_KINDS",
    "ReportData",
    "alerts_per_1000",
    "build",
    "calibration",
    "cause_mix_table",
    "incident_list",
    "incidents",
    "incidents_by_kind",
    "kpi_table",
    "lead_times",
    "load_replay",
    "load_topics",
    "order_outcomes",
    "stock_keys",
    "summary_kpis",
]

INCIDENT_KINDS = ("incident", "feed_outage")
GROUPS = ("day", "week", "carrier", "warehouse_id")
LEAD_BINS = (0.0, 6.0, 12.0, 24.0, 48.0, math.inf)
KPI_COLUMNS = ("orders", "due", "late", "on_time_rate", "delay_rate", "unannounced_late_rate",
               "proactive_notice_rate", "alerts_per_1000_orders", "stock_mismatch_rate")


@dataclass(frozen=True)
class ReportData:
    """Everything the tables are built from; ``build()`` makes one."""

    orders: pd.DataFrame  # one row per order: order_outcomes()
    stock: pd.DataFrame  # one row per (key, day) snapshotted by WMS and OMS: stock_keys()
    alerts: list[Alert]
    as_of: datetime | None
    timezone: str
    predictions: pd.DataFrame | None = None


# -- per-order outcomes -----------------------------------------------------------------------
_ORDER_TYPES = ("order_placed", "order_cancelled")


def _events(records: Iterable[dict[str, Any]],
            settings: Settings) -> Iterator[OrderEvent | ScanEvent | InventoryEvent]:
    """The valid events that decide outcomes, validated at the edge like the worker does;
    malformed records (the DLQ's) and events dated impossibly far after their record's
    timestamp are skipped. Only the event types the report reads are validated (speed)."""
    max_future = settings.time.max_future_s
    for rec in records:
        value = rec.get("value")
        role = role_of(rec.get("topic", ""), settings)
        if role is None or not isinstance(value, dict):
            continue
        model: type[OrderEvent] | type[ScanEvent] | type[InventoryEvent]
        if role == "orders" and value.get("event_type") in _ORDER_TYPES:
            model = OrderEvent
        elif role == "scans" and value.get("scan_type") == "delivered":
            model = ScanEvent
        elif role == "inventory" and value.get("event_type") == "stock_snapshot":
            model = InventoryEvent
        else:
            continue
        try:
            ev = model.model_validate(value)
        except ValidationError:
            continue
        ts = rec.get("ts")
        t = ev.occurred_at.timestamp()
        if ts is not None and t > ts / 1000 + max_future:
            continue
        yield ev


def _first_delay_alerts(alerts: Iterable[Alert]) -> tuple[dict[str, Alert], dict[str, int]]:
    """order_id -> its first opened delay alert, and -> how many delay alerts opened."""
    first: dict[str, Alert] = {}
    opened: dict[str, int] = defaultdict(int)
    for a in alerts:
        if a.category != "delay" or a.status != AlertStatus.OPEN or a.order_id is None:
            continue
        opened[a.order_id] += 1
        seen = first.get(a.order_id)
        if seen is None or a.detected_at < seen.detected_at:
            first[a.order_id] = a
    return first, opened


def order_outcomes(events: Iterable[OrderEvent | ScanEvent | InventoryEvent],
                   alerts: list[Alert], timezone: str, *, as_of: datetime | None = None,
                   since: datetime | None = None) -> tuple[pd.DataFrame, datetime | None]:
    """One row per order placed (at or after ``since``) and the data's end (``as_of``, or the
    last event time seen). Columns: order_id, carrier, warehouse_id, placed_at, day, week,
    promised_at, delivered_at, cancelled, due, late, on_time, delay_alerts, first_alert_at,
    first_alert_kind, first_cause, announced, lead_hours, broken_cause."""
    placed: dict[str, OrderEvent] = {}
    cancelled: set[str] = set()
    delivered: dict[str, datetime] = {}
    last: datetime | None = None
    for ev in events:
        last = ev.occurred_at if last is None else max(last, ev.occurred_at)
        if isinstance(ev, OrderEvent):
            if ev.event_type == "order_cancelled":
                cancelled.add(ev.order_id)
            elif ev.order_id not in placed or ev.occurred_at < placed[ev.order_id].occurred_at:
                placed[ev.order_id] = ev
        elif isinstance(ev, ScanEvent):
            seen = delivered.get(ev.order_id)
            delivered[ev.order_id] = ev.occurred_at if seen is None else min(seen, ev.occurred_at)
    end = as_of if as_of is not None else last
    first, opened = _first_delay_alerts(alerts)
    broken = broken_causes(alerts)
    rows = []
    for oid, ev in placed.items():
        if since is not None and ev.occurred_at < since:
            continue
        a = first.get(oid)
        rows.append({
            "order_id": oid, "carrier": ev.carrier, "warehouse_id": ev.warehouse_id,
            "placed_at": ev.occurred_at, "promised_at": ev.promised_at,
            "delivered_at": delivered.get(oid), "cancelled": oid in cancelled,
            "delay_alerts": opened.get(oid, 0),
            "first_alert_at": a.detected_at if a else None,
            "first_alert_kind": a.kind if a else None,
            "first_cause": (a.cause.value if a.cause else "unknown") if a else None,
            "broken_cause": broken.get(oid),
        })
    df = pd.DataFrame(rows, columns=[
        "order_id", "carrier", "warehouse_id", "placed_at", "promised_at", "delivered_at",
        "cancelled", "delay_alerts", "first_alert_at", "first_alert_kind", "first_cause",
        "broken_cause"])
    for col in ("placed_at", "promised_at", "delivered_at", "first_alert_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    df["cancelled"] = df["cancelled"].astype(bool)
    df["delay_alerts"] = df["delay_alerts"].astype(int)
    local = df["placed_at"].dt.tz_convert(timezone)
    df["day"] = local.dt.strftime("%Y-%m-%d")
    iso = local.dt.isocalendar()
    df["week"] = iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2)
    has_promise = df["promised_at"].notna()
    delivered_s = df["delivered_at"].notna()
    past = (df["promised_at"] < pd.Timestamp(end)) if end is not None else has_promise & False
    df["due"] = ~df["cancelled"] & has_promise & (delivered_s | past)
    df["late"] = df["due"] & ((delivered_s & (df["delivered_at"] > df["promised_at"]))
                              | (~delivered_s & past))
    df["on_time"] = df["due"] & ~df["late"]
    df["announced"] = df["late"] & (df["first_alert_at"] < df["promised_at"])
    lead = (df["promised_at"] - df["first_alert_at"]).dt.total_seconds() / 3600
    df["lead_hours"] = lead.where(df["announced"])
    return df, end


def stock_keys(events: Iterable[OrderEvent | ScanEvent | InventoryEvent], alerts: list[Alert],
               timezone: str, *, since: datetime | None = None) -> pd.DataFrame:
    """One row per (``warehouse:sku`` key, local day) on which both WMS and OMS sent a
    ``stock_snapshot`` (or a ``stock_mismatch`` alert opened), with ``mismatch``: an alert
    opened for the key that day."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(timezone)
    sources: dict[tuple[str, str], set[str]] = defaultdict(set)
    warehouse: dict[str, str] = {}
    for ev in events:
        if isinstance(ev, InventoryEvent) and (since is None or ev.occurred_at >= since):
            key = ev.stock_key
            sources[(key, ev.occurred_at.astimezone(tz).strftime("%Y-%m-%d"))].add(ev.source)
            warehouse[key] = ev.warehouse_id
    mismatch: set[tuple[str, str]] = set()
    for a in alerts:
        if (a.kind == "stock_mismatch" and a.status == AlertStatus.OPEN
                and (since is None or a.detected_at >= since)):
            mismatch.add((a.key, a.detected_at.astimezone(tz).strftime("%Y-%m-%d")))
            warehouse.setdefault(a.key, a.warehouse_id or a.key.split(":", 1)[0])
    pairs = {k for k, src in sources.items() if {"wms", "oms"} <= src} | mismatch
    rows = [{"key": key, "warehouse_id": warehouse[key], "day": day,
             "mismatch": (key, day) in mismatch} for key, day in sorted(pairs)]
    df = pd.DataFrame(rows, columns=["key", "warehouse_id", "day", "mismatch"])
    days = pd.to_datetime(df["day"]).dt.isocalendar()
    df["week"] = days["year"].astype(str) + "-W" + days["week"].astype(str).str.zfill(2)
    df["mismatch"] = df["mismatch"].astype(bool)
    return df


def build(records: Iterable[dict[str, Any]], alerts: list[Alert], timezone: str,
          settings: Settings | None = None, *, since: datetime | None = None,
          until: datetime | None = None, predictions: pd.DataFrame | None = None) -> ReportData:
    """Report data from events-file records (``{"topic", "key", "ts", "value"}``) and the
    alerts raised on them. With ``since``/``until`` (event time): orders placed and snapshots
    taken in ``[since, until)``, events and alerts after ``until`` unseen."""
    settings = settings or Settings()
    if until is not None:
        alerts = [a for a in alerts if a.detected_at < until]
    events = list(_events(records, settings))
    as_of = None
    if until is not None:
        # the data's end: ``until``, or the last event if the topics end before it
        as_of = min(until, max(ev.occurred_at for ev in events)) if events else until
        events = [ev for ev in events if ev.occurred_at < until]
    orders, end = order_outcomes(events, alerts, timezone, as_of=as_of, since=since)
    return ReportData(orders=orders, stock=stock_keys(events, alerts, timezone, since=since),
                      alerts=alerts, as_of=end, timezone=timezone, predictions=predictions)


# -- tables -----------------------------------------------------------------------------------
def _ratio(num: float, den: float) -> float:
    return round(num / den, 4) if den else math.nan


def alerts_per_1000(delay_alerts_opened: int, orders: int) -> float | None:
    """1000 x delay alerts opened / orders, to one decimal (``summary.json`` and the report)."""
    return round(1000 * delay_alerts_opened / orders, 1) if orders else None


def _kpis(orders: pd.DataFrame) -> dict[str, Any]:
    n, due, late = len(orders), int(orders["due"].sum()), int(orders["late"].sum())
    announced = int(orders["announced"].sum())
    per_1000 = alerts_per_1000(int(orders["delay_alerts"].sum()), n)
    return {"orders": n, "due": due, "late": late,
            "on_time_rate": _ratio(int(orders["on_time"].sum()), due),
            "delay_rate": _ratio(late, due),
            "unannounced_late_rate": _ratio(late - announced, late),
            "proactive_notice_rate": _ratio(announced, late),
            "alerts_per_1000_orders": math.nan if per_1000 is None else per_1000}


def _mismatch_rate(stock: pd.DataFrame) -> float:
    if stock.empty:
        return math.nan
    return round(float(stock.groupby("key")["mismatch"].any().mean()), 4)


def _mismatch_rates(stock: pd.DataFrame, by: str) -> pd.DataFrame:
    per_key = stock.groupby([by, "key"])["mismatch"].any()
    rates = per_key.groupby(level=0).mean().round(4)
    return rates.rename("stock_mismatch_rate").rename_axis(by).reset_index()


def kpi_table(data: ReportData, by: str | None = None) -> pd.DataFrame:
    """KPIs overall (one row, ``by=None``) or per ``day``, ``week``, ``carrier`` or
    ``warehouse_id``: orders, due, late and the rates of the module docstring."""
    if by is None:
        row = {**_kpis(data.orders), "stock_mismatch_rate": _mismatch_rate(data.stock)}
        return pd.DataFrame([row], columns=list(KPI_COLUMNS))
    if by not in GROUPS:
        raise ValueError(f"by must be one of {GROUPS}, not {by!r}")
    rows = [{by: value, **_kpis(group)}
            for value, group in data.orders.groupby(by, sort=True, dropna=False)]
    df = pd.DataFrame(rows, columns=[by, *KPI_COLUMNS[:-1]])
    if by == "carrier":
        df["stock_mismatch_rate"] = math.nan  # stock keys have no carrier
    else:  # days or warehouses with snapshots but no orders placed get a row too
        df = df.merge(_mismatch_rates(data.stock, by), on=by, how="outer").sort_values(by)
        df["orders"] = df["orders"].fillna(0).astype(int)
        df[["due", "late"]] = df[["due", "late"]].fillna(0).astype(int)
    return df.reset_index(drop=True)


def cause_mix_table(data: ReportData, by: str | None = None) -> pd.DataFrame:
    """Orders with a ``promise_broken`` alert by its cause: orders and share of the group's
    (overall, ``share`` equals ``kpi.cause_mix``)."""
    broken = data.orders[data.orders["broken_cause"].notna()]
    keys = ["cause"] if by is None else [by, "cause"]
    if broken.empty:
        return pd.DataFrame(columns=[*keys, "orders", "share"])
    counts = broken.rename(columns={"broken_cause": "cause"}).groupby(keys).size()
    df = counts.rename("orders").reset_index()
    totals = df["orders"].sum() if by is None else df.groupby(by)["orders"].transform("sum")
    df["share"] = (df["orders"] / totals).round(4)
    return df.sort_values(keys).reset_index(drop=True)


def lead_times(data: ReportData) -> pd.DataFrame:
    """Announced late orders by lead time (promise minus first delay alert), in bins, plus
    the late orders never announced before their promise as the last row."""
    late = data.orders[data.orders["late"]]
    lead = late["lead_hours"].dropna()
    labels = [f"{int(lo)}-{int(hi)} h" if hi != math.inf else f">= {int(lo)} h"
              for lo, hi in pairwise(LEAD_BINS)]
    cut = pd.cut(lead, bins=list(LEAD_BINS), labels=labels, right=False)
    counts = cut.value_counts().reindex(labels, fill_value=0)
    rows = [{"lead_time": lab, "late_orders": int(n)} for lab, n in counts.items()]
    rows.append({"lead_time": "not announced", "late_orders": int(len(late) - len(lead))})
    df = pd.DataFrame(rows)
    df["share_of_late"] = (df["late_orders"] / len(late)).round(4) if len(late) else math.nan
    return df


def calibration(predictions: pd.DataFrame | None, bins: int = 10) -> pd.DataFrame:
    """Scorings before the promise with a known outcome, by ``p_late`` bin: scorings, mean
    predicted p_late, observed late share. Empty without predictions (models off)."""
    cols = ["bin", "scorings", "mean_p_late", "observed_late"]
    if predictions is None or predictions.empty:
        return pd.DataFrame(columns=cols)
    lab = predictions[predictions["late"].notna()
                      & (predictions["scored_at"] < predictions["promised_at"])]
    if lab.empty:
        return pd.DataFrame(columns=cols)
    edges = [i / bins for i in range(bins + 1)]
    binned = pd.cut(lab["p_late"].clip(0, 1), bins=edges, include_lowest=True)
    g = lab.assign(bin=binned, late=lab["late"].astype(float)).groupby("bin", observed=True)
    df = pd.DataFrame({"scorings": g.size(), "mean_p_late": g["p_late"].mean().round(4),
                       "observed_late": g["late"].mean().round(4)}).reset_index()
    df["bin"] = df["bin"].astype(str)
    return df[cols]


def _is_incident(a: Any) -> bool:
    return getattr(a, "kind", None) in INCIDENT_KINDS or getattr(a, "category", None) == "system"


def incidents(alerts: Iterable[Alert]) -> pd.DataFrame:
    """Incident/system alerts opened, by kind: count, first and last detected. Empty (and
    the report says "none") while no detector emits them."""
    rows = [{"kind": a.kind, "detected_at": a.detected_at} for a in alerts
            if _is_incident(a) and a.status == AlertStatus.OPEN]
    if not rows:
        return pd.DataFrame(columns=["kind", "incidents", "first", "last"])
    df = pd.DataFrame(rows)
    g = df.groupby("kind")["detected_at"]
    return pd.DataFrame({"incidents": g.size(), "first": g.min(), "last": g.max()}).reset_index()


def incident_list(alerts: Iterable[Alert]) -> pd.DataFrame:
    """One row per incident or system alert episode: what, since when, how many orders,
    and when it was resolved (if it was)."""
    rows: dict[str, dict[str, Any]] = {}
    for a in alerts:
        if not _is_incident(a):
            continue
        ev = a.evidence if isinstance(a.evidence, dict) else {}
        row = rows.setdefault(a.alert_id, {
            "kind": a.kind, "key": a.key, "opened": a.detected_at, "since": ev.get("since"),
            "resolved": None, "affected_orders": None})
        if ev.get("affected_orders") is not None:
            row["affected_orders"] = ev["affected_orders"]
        elif ev.get("orders_in_flight") is not None:
            row["affected_orders"] = ev["orders_in_flight"]
        if a.status == AlertStatus.RESOLVED:
            row["resolved"] = a.detected_at
    cols = ["kind", "key", "since", "opened", "resolved", "affected_orders"]
    df = pd.DataFrame(list(rows.values()), columns=cols)
    df["affected_orders"] = df["affected_orders"].astype("Int64")
    return df


def incidents_by_kind(alerts: Iterable[Alert]) -> dict[str, int]:
    """``summary.json``'s ``incidents_by_kind``: the counts of ``incidents()``."""
    table = incidents(alerts)
    return {str(k): int(n) for k, n in zip(table["kind"], table["incidents"], strict=True)}


def _json_rate(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def summary_kpis(data: ReportData) -> dict[str, Any]:
    """The report's overall figures under the keys ``summary.json`` gives them."""
    row = kpi_table(data).iloc[0]
    return {
        "kpi.on_time_rate": _json_rate(float(row["on_time_rate"])),
        "kpi.delay_rate": _json_rate(float(row["delay_rate"])),
        "kpi.stock_mismatch_rate": _json_rate(float(row["stock_mismatch_rate"])),
        "quality.proactive_notice_rate": _json_rate(float(row["proactive_notice_rate"])),
        "alerts_per_1000_orders": _json_rate(float(row["alerts_per_1000_orders"])),
        "incidents_by_kind": incidents_by_kind(data.alerts),
    }


# -- reading a replay or the topics (the I/O edge) --------------------------------------------
def _alerts_from_lines(lines: Iterable[bytes]) -> list[Alert]:
    out = []
    for line in lines:
        if line.strip():
            try:
                out.append(Alert.model_validate_json(line))
            except ValidationError:
                continue
    return out


def load_replay(replay_dir: Path, events: Path | None, timezone: str,
                settings: Settings | None = None) -> ReportData:
    """A replay's output directory and the events file it replayed (default: the one its
    ``source.json`` names)."""
    if events is None:
        source = replay_dir / "source.json"
        if not source.exists():
            raise FileNotFoundError(f"{source} not found: pass the events file (--events)")
        events = Path(orjson.loads(source.read_bytes())["input"])
    alerts = _alerts_from_lines((replay_dir / "alerts.jsonl").read_bytes().splitlines())
    system = replay_dir / "system.jsonl"  # alerts.system: the ops monitor's
    if system.exists():
        alerts += _alerts_from_lines(system.read_bytes().splitlines())
    preds = replay_dir / "predictions.parquet"
    predictions = pd.read_parquet(preds) if preds.exists() else None
    return build(iter_records(events), alerts, timezone, settings, predictions=predictions)


def load_topics(settings: Settings, timezone: str, since: datetime,
                until: datetime) -> ReportData:
    """The configured input and alert topics, read to their end, filtered by event time."""
    from delaywatch.kafka_io import read_all

    t, timeout = settings.topics, settings.report.read_timeout_s
    records: list[dict[str, Any]] = []
    for topic in (t.orders, t.inventory, t.scans):
        for r in read_all(settings, topic, timeout_s=timeout, parse=False):
            try:
                value = orjson.loads(r["value"]) if r["value"] else None
            except orjson.JSONDecodeError:
                continue  # the DLQ's business
            records.append({"topic": topic, "key": r["key"], "ts": r["timestamp_ms"],
                            "value": value})
    alerts: list[Alert] = []
    for topic in (t.alerts_delay, t.alerts_stock, t.alerts_system):
        alerts += _alerts_from_lines(r["value"] or b"" for r in read_all(
            settings, topic, timeout_s=timeout, parse=False))
    return build(records, alerts, timezone, settings, since=since, until=until)
