"""All runtime settings in one place (env prefix ``DELAYWATCH_``, nested groups with ``__``).

Example: ``DELAYWATCH_KAFKA__BOOTSTRAP_SERVERS=broker:9092``,
``DELAYWATCH_TIME__ALLOWED_LATENESS_S=900``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    # the worker's producer: idempotent (no duplicates or reordering from its own retries);
    # off only for brokers without InitProducerId support (Tansu: the demo turns it off)
    idempotent_producer: bool = True


class TopicSettings(BaseModel):
    orders: str = "orders"
    inventory: str = "inventory"
    scans: str = "carrier-scans"
    alerts_delay: str = "alerts.delay"
    alerts_stock: str = "alerts.stock"
    # issue #8: ops tools acknowledge alerts here (schemas/acks.py, key alert_id); the
    # escalation service writes escalated copies of unacknowledged alerts, and admin alerts
    alerts_ack: str = "alerts.ack"
    alerts_escalation: str = "alerts.escalation"
    alerts_system: str = "alerts.system"
    dlq: str = "delaywatch.dlq"
    model: str = "delaywatch.model"  # model events: drift, checkpoint, restore
    # internal re-keying topics (co-partitioned with the tables that consume them)
    order_lines: str = "delaywatch.order-lines"
    stock_notices: str = "delaywatch.stock-notices"
    # retry tiers of the worker, in order: (topic, delay s). A record whose processing raised
    # a transient error goes to the first, is processed again no earlier than the delay,
    # moves to the next on failure and to the DLQ after the last (delaywatch.core.retry)
    retry_tiers: list[tuple[str, float]] = [("delaywatch.retry.1m", 60.0),
                                            ("delaywatch.retry.10m", 600.0)]
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)


class TimeSettings(BaseModel):
    # How far behind its own stream's clock an event may arrive and still be ordered by its
    # occurred_at; later events are ordered at their arrival (see delaywatch.core.engine).
    allowed_lateness_s: float = Field(1800.0, ge=0)
    # An event dated this far after its record's own timestamp is rejected as impossible.
    max_future_s: float = Field(3 * 86400.0, gt=0)
    # An event this far behind its stream's clock is rejected: its key's state (and the
    # de-duplication memory) may already be gone, so applying it could alert twice.
    max_past_s: float = Field(2 * 86400.0, gt=0)
    # Order lines travel through an internal topic; shipment partitions send a heartbeat of
    # their order clock this often (event time) so stock partitions can advance.
    heartbeat_s: float = Field(900.0, gt=0)
    # Live only: while every input is idle this long (wall clock), let the watermark follow
    # the wall clock so a silent carrier is still noticed. None = off (replay never does it).
    idle_advance_after_s: float | None = None


class ModelSettings(BaseModel):
    # river delay-risk and ETA models next to the rules (one set per partition). Off by
    # default until they reach issue #4's targets (see README, "Learned models").
    enabled: bool = False
    target_precision: float = Field(0.6, gt=0, lt=1)
    # Learned models are checkpointed here (a local file: see delaywatch.models.checkpoint)
    # and warm-started from it when it exists; `delaywatch train` writes one from history.
    checkpoint_path: Path | None = None
    checkpoint_interval_s: float = Field(60.0, gt=0)
    seed: int = 42


class WorkerSettings(BaseModel):
    app_id: str = "delaywatch"
    web_port: int = 6066
    store: str = "memory://"
    # Faust's data directory (table metadata, rocksdb files); None: ``<app_id>-data`` in the
    # working directory, Faust's default
    data_dir: Path | None = None
    # seconds between Faust offset commits
    commit_interval_s: float = 2.0
    # records per micro-batch and the longest wait to fill one: a batch's outputs are sent
    # as one acknowledged round (stock heartbeats in a second one).
    # Larger batches are faster -- measured (40k events, 4 partitions, models off, two runs
    # each): 500/0.05 s 1.29-1.34k events/s, 2000/0.25 s 1.45-1.64k, 5000/1 s 1.56-1.97k,
    # 10000/2 s 1.89-2.32k, the same rule alerts -- but they move the learned models' live
    # scores away from replay's (most likely, not yet shown: an order is scored when its
    # record is processed, with the stock notices that reached it by then, and a larger
    # batch delays their round trip through the stock agent). Delay-risk alerts live vs
    # replay (tests/streams/test_models_live.py, 4 partitions, Jaccard):
    # 500/0.05 s 0.70-0.91, 2000/0.25 s 0.34, 10000/2 s 0.26 (the test's bound is 0.5).
    batch_size: int = Field(500, ge=1)
    batch_within_s: float = Field(0.05, gt=0)
    # A batch's outputs go out at once, but each changed key's state (and the partition's
    # offsets) is written at most once per this interval -- coalesced over every batch in
    # it -- and the batch's records are acknowledged to Faust only then, so no offset is
    # committed ahead of its state. Measured (py-spy, 100k events, 4 partitions, models
    # off): writing state after every batch took 20 % of the worker's time (17 % of it
    # pickling), and its changelog records were most of what it sent; 9-14 % after.
    # 0: after every batch.
    state_write_interval_s: float = Field(2.0, ge=0)
    broker_session_timeout_s: float = 30.0
    # a produce request unanswered this long fails and the outbox sends it again (Faust's
    # default, 20 min, left a worker waiting silently after a broker stall)
    producer_request_timeout_s: float = Field(30.0, gt=0)
    # Prometheus /metrics and /health on 127.0.0.1:<port> (streams/metrics.py); None: off,
    # 0: a free port (logged as ``metrics_serving``)
    metrics_port: int | None = Field(None, ge=0, le=65535)


class NotifierSettings(BaseModel):
    """``delaywatch notify`` (delaywatch/notify.py); its command-line options override these."""

    group: str = "delaywatch-notifier"
    store_path: Path = Path(".notifier/delivered.sqlite")  # dedupe store (SQLite)
    keep_days: float = Field(14.0, gt=0)  # dedupe entries older than this are pruned
    attempts: int = Field(2, ge=1)  # quick in-process sink attempts before a retry tier
    backoff_s: float = Field(0.2, ge=0)
    # retry tiers in order: (topic, delay s, visits); give each notifier group its own
    tiers: list[tuple[str, float, int]] = [("alerts.retry.1m", 60.0, 1),
                                           ("alerts.retry.10m", 600.0, 1)]
    dlq_topic: str = "alerts.dlq"
    skip_resolved_before_delivery: bool = False
    metrics_port: int | None = Field(None, ge=0, le=65535)


class EscalatorSettings(BaseModel):
    """``delaywatch escalate`` (delaywatch/escalate.py); its command-line options override
    these. The per-severity times are thresholds (``escalation`` in config/thresholds.yaml)."""

    group: str = "delaywatch-escalator"
    store_path: Path = Path(".escalator/state.sqlite")  # alert/ack state (SQLite)
    tick_s: float = Field(1.0, gt=0)  # how often due escalations are looked for (wall clock)
    # admin alarms on alerts.system from the DLQ topics' rates (thresholds.yaml "system")
    system_alarms: bool = True
    metrics_port: int | None = Field(None, ge=0, le=65535)


class KpiTargets(BaseModel):
    """Field KPIs of the best operators (issue #8); ``delaywatch report`` marks each figure
    against them. Rates are shares (0.98 = 98 %)."""

    on_time_rate_min: float = Field(0.98, ge=0, le=1)
    delay_rate_max: float = Field(0.03, ge=0, le=1)  # strictly below
    stock_mismatch_rate_max: float = Field(0.01, ge=0, le=1)
    unannounced_late_rate_max: float = Field(0.08, ge=0, le=1)
    proactive_notice_rate_min: float = Field(0.85, ge=0, le=1)


class ReportSettings(BaseModel):
    """``delaywatch report`` (delaywatch/report.py, delaywatch/report_html.py)."""

    targets: KpiTargets = KpiTargets()
    # reading topics for --from-topics: give up on a topic after this long (wall clock)
    read_timeout_s: float = Field(300.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DELAYWATCH_", env_nested_delimiter="__", extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    time: TimeSettings = TimeSettings()
    models: ModelSettings = ModelSettings()
    worker: WorkerSettings = WorkerSettings()
    notifier: NotifierSettings = NotifierSettings()
    escalator: EscalatorSettings = EscalatorSettings()
    report: ReportSettings = ReportSettings()
    thresholds_file: Path | None = None
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    def masked(self) -> dict[str, object]:
        """Settings as a dict safe to print or log (SecretStr renders as '**********')."""
        return self.model_dump(mode="json")
