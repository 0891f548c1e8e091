"""The worker's /metrics and /health endpoint (no broker: the server and the metrics)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from delaywatch.streams.metrics import MetricsServer, WorkerMetrics


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def served():
    metrics = WorkerMetrics()
    state = {"ok": False}
    server = MetricsServer(metrics, lambda: (state["ok"], {"assigned_partitions": 0})).start()
    yield metrics, state, f"http://127.0.0.1:{server.port}"
    server.stop()


def test_metrics_are_served_in_prometheus_format_on_localhost(served):
    metrics, _, base = served
    metrics.events.labels("orders").inc(3)
    metrics.alerts.labels("waybill_missing", "open").inc()
    metrics.dead_letters.labels("invalid_json").inc(2)
    status, body = _get(f"{base}/metrics")
    text = body.decode()
    assert status == 200
    assert 'delaywatch_events_total{topic="orders"} 3.0' in text
    assert 'delaywatch_alerts_total{kind="waybill_missing",status="open"} 1.0' in text
    assert 'delaywatch_dead_letters_total{reason="invalid_json"} 2.0' in text
    assert metrics.total(metrics.events) == 3


def test_health_answers_503_until_the_worker_is_ready(served):
    _, state, base = served
    status, body = _get(f"{base}/health")
    assert status == 503 and json.loads(body)["ok"] is False
    state["ok"] = True
    status, body = _get(f"{base}/health")
    assert status == 200 and json.loads(body) == {"ok": True, "assigned_partitions": 0}
