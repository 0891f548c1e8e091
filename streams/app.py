"""The Faust App, and only the App: topics, tables and agents are wired in by their modules."""

from __future__ import annotations

import ssl
from typing import Any

import faust
from faust.sensors.monitor import Monitor

from delaywatch.config.settings import Settings
from delaywatch.streams import faust_patches

__all__ = ["create_app"]


def _credentials(settings: Settings) -> faust.auth.Credentials | ssl.SSLContext | None:
    k = settings.kafka
    context = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
    if k.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = k.sasl_password.get_secret_value() if k.sasl_password else ""
        return faust.SASLCredentials(
            username=k.sasl_username, password=password,
            mechanism=k.sasl_mechanism or "PLAIN",
            ssl_context=context if k.security_protocol == "SASL_SSL" else None,
        )
    if k.security_protocol == "SSL":
        return context
    return None


class LeanMonitor(Monitor):
    """Faust's built-in sensor without its per-message and per-send bookkeeping: it feeds
    only Faust's web statistics (disabled here), and cost ~1-3 % of the worker's time in
    py-spy profiles (100k events). The worker's own figures are in ``streams/metrics.py``;
    commits, rebalances and end offsets are still tracked."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: Any = None) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int,
                          valsize: int) -> Any:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        pass


def _datadir(settings: Settings) -> dict[str, Any]:
    d = settings.worker.data_dir
    return {"datadir": str(d)} if d else {}  # else Faust's default, <app_id>-data in the cwd


def create_app(settings: Settings) -> faust.App:
    faust_patches.apply(idempotent_producer=settings.kafka.idempotent_producer)
    w = settings.worker
    return faust.App(
        w.app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store=w.store,
        **_datadir(settings),
        autodiscover=False,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_commit_interval=w.commit_interval_s,
        producer_request_timeout=w.producer_request_timeout_s,
        broker_session_timeout=w.broker_session_timeout_s,
        broker_heartbeat_interval=max(1.0, w.broker_session_timeout_s / 10),
        # Faust binds its web server to 0.0.0.0:6066 even when it is disabled.
        web_enabled=False,
        web_bind="127.0.0.1",
        web_port=w.web_port,
        web_in_thread=False,
        monitor=LeanMonitor(),
    )
