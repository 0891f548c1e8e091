"""The KPI report: definitions on hand-built records, a replay's report, and live topics."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from delaywatch.cli import app
from delaywatch.config import Settings
from delaywatch.replay import cause_mix, replay_file
from delaywatch.report import (
    build,
    calibration,
    cause_mix_table,
    incidents_by_kind,
    kpi_table,
    lead_times,
    summary_kpis,
)
from delaywatch.report_html import render_html
from delaywatch.schemas.alerts import Alert, Cause, alert_id_for
from delaywatch.simulate import write_jsonl

TZ = "Asia/Seoul"
T0 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)  # 10:00 in Seoul
runner = CliRunner()


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _iso(hours: float) -> str:
    return _at(hours).isoformat()


def _placed(oid: str, hours: float, promise_h: float, carrier: str = "CJ",
            warehouse: str = "ICN-1") -> dict[str, Any]:
    return {"topic": "orders", "key": oid, "value": {
        "event_id": f"{oid}-p", "occurred_at": _iso(hours), "event_type": "order_placed",
        "order_id": oid, "promised_at": _iso(promise_h), "carrier": carrier,
        "warehouse_id": warehouse}}


def _cancelled(oid: str, hours: float) -> dict[str, Any]:
    return {"topic": "orders", "key": oid, "value": {
        "event_id": f"{oid}-c", "occurred_at": _iso(hours), "event_type": "order_cancelled",
        "order_id": oid}}


def _delivered(oid: str, hours: float, n: int = 0) -> dict[str, Any]:
    return {"topic": "carrier-scans", "key": oid, "value": {
        "event_id": f"{oid}-d{n}", "occurred_at": _iso(hours), "tracking_number": f"T{oid}",
        "order_id": oid, "carrier": "CJ", "scan_type": "delivered"}}


def _snapshot(key: str, source: str, hours: float) -> dict[str, Any]:
    wh, sku = key.split(":")
    return {"topic": "inventory", "key": key, "value": {
        "event_id": f"{key}-{source}-{hours}", "occurred_at": _iso(hours),
        "event_type": "stock_snapshot", "warehouse_id": wh, "sku": sku, "quantity": 5,
        "source": source}}


def _alert(kind: str, key: str, hours: float, category: str = "delay",
           cause: Cause | None = None, status: str = "open") -> Alert:
    return Alert(alert_id=alert_id_for(key, kind, 1), status=status, category=category,
                 kind=kind, key=key, episode=1, severity="medium", reason_codes=[],
                 evidence={}, detected_at=_at(hours),
                 order_id=key if category == "delay" else None,
                 warehouse_id=key.split(":")[0] if category == "stock" else None, cause=cause)


def _world() -> tuple[list[dict[str, Any]], list[Alert]]:
    """Five orders whose outcome is known by construction:

    O1 on time; O2 late, told 10 h before its promise; O3 late, told only when the promise
    broke; O4 cancelled; O5 still within its promise at the end of the data. Two of three
    snapshotted stock keys; one of them mismatched."""
    records = [
        _placed("O1", 0, 40), _delivered("O1", 30),
        _placed("O2", 1, 40), _delivered("O2", 50), _delivered("O2", 55, n=1),  # first counts
        _placed("O3", 2, 40, carrier="LOTTE", warehouse="PYT-2"), _delivered("O3", 45),
        _placed("O4", 15, 60), _cancelled("O4", 15.2),  # 15:00 UTC = next day in Seoul
        _placed("O5", 60, 100),
        _snapshot("ICN-1:A", "wms", 3), _snapshot("ICN-1:A", "oms", 3),
        _snapshot("ICN-1:B", "wms", 3), _snapshot("ICN-1:B", "oms", 3),
        _snapshot("PYT-2:C", "wms", 3),  # no OMS snapshot: not compared
        # malformed: invalid JSON, and a naive timestamp (both the DLQ's, never counted)
        {"topic": "orders", "key": "O9", "raw": '{"event_type": "order_pla'},
        {"topic": "carrier-scans", "key": "O1", "value": {
            **_delivered("O1", 10)["value"], "event_id": "m-1", "occurred_at": "2026-05-20T11:00"}},
    ]
    alerts = [
        _alert("tracking_stale", "O2", 30, cause=Cause.CARRIER_DELAY),
        _alert("promise_broken", "O2", 40.5, cause=Cause.CARRIER_DELAY),
        _alert("promise_broken", "O3", 40.5, cause=Cause.HANDOVER_MISSED),
        _alert("promise_broken", "O3", 45, status="resolved"),  # not an opening
        _alert("stock_mismatch", "ICN-1:A", 3.1, category="stock"),
    ]
    return records, alerts


@pytest.fixture
def data():
    records, alerts = _world()
    return build(records, alerts, TZ, Settings())


def test_order_outcomes_by_construction(data):
    o = data.orders.set_index("order_id")
    assert list(o.index) == ["O1", "O2", "O3", "O4", "O5"]
    assert list(o["due"]) == [True, True, True, False, False]
    assert list(o["late"]) == [False, True, True, False, False]
    assert list(o["announced"]) == [False, True, False, False, False]
    assert o.loc["O2", "delivered_at"] == pd.Timestamp(_at(50))
    assert o.loc["O2", "lead_hours"] == pytest.approx(10.0)
    assert math.isnan(o.loc["O3", "lead_hours"])
    assert o.loc["O2", "first_alert_kind"] == "tracking_stale"
    assert o.loc["O3", "broken_cause"] == "handover_missed"
    assert list(o["day"]) == ["2026-05-20"] * 3 + ["2026-05-21", "2026-05-22"]  # in Seoul
    assert data.as_of == _at(60)


def test_overall_kpis(data):
    row = kpi_table(data).iloc[0]
    assert (row["orders"], row["due"], row["late"]) == (5, 3, 2)
    assert row["on_time_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert row["delay_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["proactive_notice_rate"] == 0.5
    assert row["unannounced_late_rate"] == 0.5
    assert row["alerts_per_1000_orders"] == 600.0  # 3 delay alerts opened, 5 orders
    assert row["stock_mismatch_rate"] == 0.5  # A of {A, B}


def test_grouped_kpis(data):
    carrier = kpi_table(data, "carrier").set_index("carrier")
    assert carrier.loc["CJ", "delay_rate"] == 0.5
    assert carrier.loc["CJ", "proactive_notice_rate"] == 1.0
    assert carrier.loc["LOTTE", "unannounced_late_rate"] == 1.0
    assert carrier["stock_mismatch_rate"].isna().all()
    wh = kpi_table(data, "warehouse_id").set_index("warehouse_id")
    assert wh.loc["ICN-1", "stock_mismatch_rate"] == 0.5
    assert math.isnan(wh.loc["PYT-2", "stock_mismatch_rate"])  # no compared key
    day = kpi_table(data, "day").set_index("day")
    assert day.loc["2026-05-20", "late"] == 2 and day.loc["2026-05-21", "due"] == 0
    assert day.loc["2026-05-22", "orders"] == 1
    assert list(kpi_table(data, "week")["week"]) == ["2026-W21"]
    with pytest.raises(ValueError):
        kpi_table(data, "sku")


def test_cause_mix_lead_times_incidents(data):
    _, alerts = _world()
    mix = cause_mix_table(data)
    assert dict(zip(mix["cause"], mix["share"], strict=True)) == cause_mix(alerts)
    by = cause_mix_table(data, "carrier")
    assert list(by["carrier"]) == ["CJ", "LOTTE"] and list(by["share"]) == [1.0, 1.0]
    lead = lead_times(data).set_index("lead_time")
    assert lead.loc["6-12 h", "late_orders"] == 1 and lead.loc["not announced", "late_orders"] == 1
    assert incidents_by_kind(alerts) == {}
    outage = _alert("feed_outage", "CJ", 20)
    assert incidents_by_kind([*alerts, outage]) == {"feed_outage": 1}
    assert summary_kpis(data) == {
        "kpi.on_time_rate": 0.3333, "kpi.delay_rate": 0.6667, "kpi.stock_mismatch_rate": 0.5,
        "quality.proactive_notice_rate": 0.5, "alerts_per_1000_orders": 600.0,
        "incidents_by_kind": {}}


def test_until_hides_later_events_and_alerts():
    records, alerts = _world()
    data = build(records, alerts, TZ, Settings(), until=_at(42))
    o = data.orders.set_index("order_id")
    # at 42 h: O2 and O3 undelivered past their promise (late), O1 delivered, O5 not placed
    assert list(o.index) == ["O1", "O2", "O3", "O4"]
    assert list(o["late"]) == [False, True, True, False]
    assert data.as_of == _at(42)


def _predictions() -> pd.DataFrame:
    return pd.DataFrame({
        "p_late": [0.05, 0.05, 0.95, 0.95, 0.5],
        "late": [False, False, True, False, None],  # the last one: no outcome yet
        "scored_at": pd.to_datetime([_at(0)] * 5, utc=True),
        "promised_at": pd.to_datetime([_at(10)] * 5, utc=True),
    })


def test_incident_list_has_one_row_per_episode():
    from delaywatch.core.alerts import ts_to_dt
    from delaywatch.report import incident_list
    from delaywatch.schemas.alerts import Alert, Severity

    def system(status: str, at: float, affected: int) -> Alert:
        return Alert(alert_id="al-1", status=status, category="system", kind="incident",
                     key="incident:hub:H1", episode=1, severity=Severity.HIGH, reason_codes=[],
                     detected_at=ts_to_dt(at), evidence={"since": "2026-05-23T01:00:00+00:00",
                                                         "affected_orders": affected})

    table = incident_list([system("open", 3600.0, 30), system("resolved", 7200.0, 41)])
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["key"], int(row["affected_orders"]), row["resolved"]) == (
        "incident:hub:H1", 41, ts_to_dt(7200.0))


def test_calibration_bins():
    table = calibration(_predictions()).set_index("bin")
    assert table["scorings"].sum() == 4
    assert table.iloc[0]["observed_late"] == 0.0 and table.iloc[-1]["observed_late"] == 0.5
    assert calibration(None).empty


def test_html_is_self_contained(data):
    page = render_html(data)
    assert page.count("<figure>") == 7 and page.count("<svg") == 6  # no predictions
    assert "calibration: no model predictions" in page
    assert "<script" not in page and 'src="http' not in page and "<link" not in page
    assert "none were found" in page  # the fixture has no system alerts
    with_models = render_html(dataclasses.replace(data, predictions=_predictions()))
    assert with_models.count("<svg") == 7 and "calibration: scorings before" in with_models
    assert render_html(data) == page  # the same data, the same file (no clock, fixed ids)


def test_report_of_a_small_replay(small_world, tmp_path):
    records, truth = small_world
    events, truth_path, out = tmp_path / "e.jsonl", tmp_path / "t.jsonl", tmp_path / "replay"
    write_jsonl(events, records)
    write_jsonl(truth_path, truth)
    _, summary = replay_file(events, out, Settings(), truth_path)
    kpi, q = summary["kpi"], summary["quality"]
    assert kpi["on_time_rate"] + kpi["delay_rate"] == pytest.approx(1.0, abs=2e-4)
    # the records say what the truth says: the same late orders and announcements
    assert q["proactive_notice_rate"] == pytest.approx(1 - q["unannounced_late_rate"], abs=0.01)
    assert 0 < kpi["stock_mismatch_rate"] < 0.2
    assert summary["incidents_by_kind"] == {}

    page_path = tmp_path / "report.html"
    r = runner.invoke(app, ["report", "--input", str(out), "--out", str(page_path)])
    assert r.exit_code == 0, r.output
    page = page_path.read_text(encoding="utf-8")
    assert page.count("<figure>") == 7 and page.count("<svg") == 6
    assert "<script" not in page and 'src="http' not in page
    assert f"{kpi['on_time_rate']:.1%}" in page
    for wrong in (["--input", str(out), "--from-topics"], [], ["--from-topics"]):
        r = runner.invoke(app, ["report", *wrong, "--out", str(page_path)])
        assert r.exit_code != 0, wrong  # one source; topics need a time range


@pytest.mark.broker
def test_report_from_topics_equals_report_from_replay(kafka, small_world, tmp_path, monkeypatch):
    """The input records and the replay's alerts on a real Kafka: ``--from-topics`` reads them
    back and gives the replay's tables."""
    from delaywatch.kafka_io import create_all_topics, produce_records
    from delaywatch.report import load_replay

    records, _ = small_world
    events, out = tmp_path / "e.jsonl", tmp_path / "replay"
    write_jsonl(events, records)
    settings = Settings()
    settings.kafka.bootstrap_servers = kafka.bootstrap
    result, _ = replay_file(events, out, settings)
    create_all_topics(settings)
    t = settings.topics
    alerts = [{"topic": t.alerts_delay if a.category == "delay" else t.alerts_stock,
               "key": a.key, "value": orjson.loads(a.model_dump_json())}
              for a in result.alerts]
    produce_records(settings, [*records, *alerts])

    monkeypatch.setenv("DELAYWATCH_KAFKA__BOOTSTRAP_SERVERS", kafka.bootstrap)
    page = tmp_path / "live.html"
    r = runner.invoke(app, ["report", "--from-topics", "--since", "2026-05-01",
                            "--until", "2026-07-01", "--out", str(page)])
    assert r.exit_code == 0, r.output
    print("\n" + r.output.strip())
    assert page.read_text(encoding="utf-8").count("<figure>") == 7

    from delaywatch.report import load_topics

    live = load_topics(settings, TZ, datetime(2026, 5, 1, tzinfo=UTC),
                       datetime(2026, 7, 1, tzinfo=UTC))
    replayed = load_replay(out, None, TZ, settings)
    for by in (None, "day", "carrier", "warehouse_id"):
        pd.testing.assert_frame_equal(kpi_table(live, by), kpi_table(replayed, by))
    assert live.as_of == replayed.as_of


def test_report_cli_needs_events_when_replay_dir_has_no_source(tmp_path):
    (tmp_path / "alerts.jsonl").write_bytes(b"")
    r = runner.invoke(app, ["report", "--input", str(tmp_path), "--out",
                            str(tmp_path / "r.html")])
    assert r.exit_code != 0 and "source.json" in repr(r.exception)


def test_report_cli_reads_an_explicit_events_file(tmp_path: Path):
    records, alerts = _world()
    events = tmp_path / "e.jsonl"
    write_jsonl(events, records)
    (tmp_path / "alerts.jsonl").write_bytes(b"".join(
        a.model_dump_json().encode() + b"\n" for a in alerts))
    r = runner.invoke(app, ["report", "--input", str(tmp_path), "--events", str(events),
                            "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert "5 orders" in r.output and "proactive notice 0.5000" in r.output
