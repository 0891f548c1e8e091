"""Prometheus metrics and a health endpoint of the worker, served on 127.0.0.1.

``GET /metrics``: the Prometheus text format; ``GET /health``: JSON, 200 while the worker is
running and has seen its partitions assigned, 503 otherwise. Off unless
``worker.metrics_port`` is set (``DELAYWATCH_WORKER__METRICS_PORT``; 0 picks a free port,
logged as ``metrics_serving``). Labels carry topics, alert kinds, statuses and DLQ reasons
only -- never keys, order ids or anything from a payload.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

__all__ = ["MetricsServer", "WorkerMetrics"]


class WorkerMetrics:
    """The worker's metrics, in a registry of their own (several workers per test process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter("delaywatch_events", "Input records handled, by topic",
                              ["topic"], registry=r)
        self.redelivered = Counter(
            "delaywatch_redelivered", "Re-delivered input records skipped: already in the "
            "state (at-least-once after a crash or rebalance)", ["topic"], registry=r)
        self.skipped = Counter(
            "delaywatch_input_skipped", "Input offsets never applied: a record arrived "
            "beyond the next offset the state holds and those between could not be read",
            ["topic"], registry=r)
        self.refetched = Counter(
            "delaywatch_input_refetched", "Input records Faust skipped (after a rebalance), "
            "read from the broker and applied", ["topic"], registry=r)
        self.alerts = Counter("delaywatch_alerts", "Alert records sent, by kind and status",
                              ["kind", "status"], registry=r)
        self.dead_letters = Counter("delaywatch_dead_letters",
                                    "Records sent to the DLQ, by reason", ["reason"],
                                    registry=r)
        self.retries = Counter("delaywatch_retries",
                               "Records sent to a retry tier after a transient failure",
                               ["tier"], registry=r)
        self.send_failures = Counter(
            "delaywatch_send_failures", "Sends the broker did not acknowledge (each is "
            "retried until it is)", ["topic"], registry=r)
        self.state_keys = Gauge("delaywatch_state_keys", "Keys held in the worker's state",
                                ["table"], registry=r)
        self.state_bytes = Gauge("delaywatch_state_bytes",
                                 "Serialized size of the state written in the last batch",
                                 ["table"], registry=r)
        self.lag = Gauge("delaywatch_consumer_lag",
                         "Records in the partition not yet applied (high-water - next offset)",
                         ["topic", "partition"], registry=r)
        self.batch_seconds = Histogram(
            "delaywatch_batch_seconds", "Micro-batch: handle, deliver outputs, write state",
            ["agent"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.last_input = Gauge("delaywatch_last_input_timestamp_seconds",
                                "Wall-clock time the last input record was handled",
                                registry=r)

    def total(self, counter: Counter) -> float:
        """Sum of a counter over its labels (tests, health)."""
        return sum(s.value for m in counter.collect() for s in m.samples
                   if s.name.endswith("_total"))


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not log lines
        pass


class MetricsServer:
    """``/metrics`` and ``/health`` on ``host:port`` in a daemon thread."""

    def __init__(self, metrics: WorkerMetrics, health: Callable[[], tuple[bool, dict[str, Any]]],
                 host: str = "127.0.0.1", port: int = 0) -> None:
        prometheus = make_wsgi_app(metrics.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO") == "/health":
                ok, body = health()
                start_response("200 OK" if ok else "503 Service Unavailable",
                               [("Content-Type", "application/json")])
                return [orjson.dumps({"ok": ok, **body})]
            return prometheus(environ, start_response)

        self.server: WSGIServer = make_server(host, port, app, handler_class=_Quiet)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="delaywatch-metrics")

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
