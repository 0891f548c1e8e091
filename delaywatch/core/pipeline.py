"""The topology in one process: what the Faust worker does with Kafka, without Kafka.

A :class:`ShipmentPartition` and a :class:`StockPartition` wrap the engines of partition ``p``.
The Faust agents call them for the partition of the record at hand; :class:`Topology` runs
``n`` of each and routes records between them with Kafka's own partitioner, so replay follows
exactly the per-partition event order (and hence the watermarks) of a live run.
"""

from __future__ import annotations

import base64
import contextlib
import math
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import structlog
from aiokafka.partitioner import murmur2

from delaywatch.config.settings import Settings
from delaywatch.config.thresholds import Thresholds
from delaywatch.core.alerts import ts_to_dt
from delaywatch.core.decode import MAX_PAYLOAD_BYTES, DecodeError, decode
from delaywatch.core.engine import Engine, Forward, Rejected, fingerprint
from delaywatch.core.shipment import ORDERS, SCANS, ShipmentLogic
from delaywatch.core.state import ShipmentState, StockState
from delaywatch.core.stock import INVENTORY, StockLogic, lines_stream
from delaywatch.models.checkpoint import ModelSet
from delaywatch.models.risk import ModelEvent, Outcome, Prediction, RiskDetector
from delaywatch.models.stock_risk import StockAnomaly, StockModels
from delaywatch.schemas.alerts import Alert
from delaywatch.schemas.dlq import DeadLetter, SourceRef
from delaywatch.schemas.events import StockNotice

__all__ = [
    "INPUT_ROLES",
    "ShipmentPartition",
    "StockPartition",
    "Topology",
    "dead_letter",
    "make_models",
    "notices_stream",
    "partition_for",
    "rejected_source",
]

INPUT_ROLES = ("orders", "inventory", "scans")
log = structlog.get_logger(__name__)


@lru_cache(maxsize=262_144)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def dead_letter(
    reason: str, error: str, stage: str, source: SourceRef, raw: bytes | None,
    event_id: str | None = None, at: datetime | None = None,
) -> DeadLetter:
    """The DLQ record of ``raw``; it always fits a Kafka record (1 MB by default) with room
    to spare: the payload is kept as text when that is readable and small, else base64
    (4/3 of its size: JSON writes a control character in 6 bytes), and a payload refused
    for its size is kept cut to the size limit."""
    raw = raw or b""
    error = error[:2000]
    if len(raw) > MAX_PAYLOAD_BYTES:
        error = (f"{error[:1900]} (payload cut to its first {MAX_PAYLOAD_BYTES} of "
                 f"{len(raw)} bytes)")
        raw = raw[:MAX_PAYLOAD_BYTES]
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and len(orjson.dumps(text)) <= 4 * len(raw) // 3 + 4:
        payload, encoding = text, "utf-8"
    else:
        payload, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return DeadLetter(
        reason=reason, error=error, stage=stage,
        source=source, payload=payload, payload_encoding=encoding,
        event_id=event_id, first_failure_at=at, last_failure_at=at,
    )


def rejected_source(out: Rejected, source: SourceRef, raw: bytes | None
                    ) -> tuple[SourceRef, bytes | None]:
    """Where a refused record came from. Refusals at ordering time carry their own origin and
    event (re-serialised: the original bytes are not kept in state)."""
    if out.origin is None:
        return source, raw
    event = out.event
    payload = event.model_dump_json().encode() if hasattr(event, "model_dump_json") else None
    return out.origin, payload


def notices_stream(origin: int) -> str:
    """Stock notices from stock partition ``origin`` form one ordered stream."""
    return f"notices:{origin}"


class ShipmentPartition:
    """Shipment table of one partition: orders + carrier scans + stock notices.

    Notices gate the watermark like the shipment topics: a notice is applied at the event
    time the stock partition decided it, not when it happens to arrive, so an order's stage
    when it learns of a shortage is the same in every run. Each stock partition's notices
    are one stream whose clock its heartbeats carry (its watermark: every later notice is
    dated at or after it), hence lateness 0.
    """

    def __init__(self, settings: Settings, thresholds: Thresholds, partition: int,
                 risk: RiskDetector | None = None) -> None:
        self.partition = partition
        self.logic = ShipmentLogic(
            thresholds, partition=partition, stock_partitions=settings.topics.partitions,
            heartbeat_s=settings.time.heartbeat_s, risk=risk,
        )
        notices = [notices_stream(q) for q in range(settings.topics.partitions)]
        self.engine: Engine[ShipmentState] = Engine(
            self.logic, gating_streams=(ORDERS, SCANS, *notices),
            allowed_lateness_s=settings.time.allowed_lateness_s,
            max_past_s=settings.time.max_past_s, lateness=dict.fromkeys(notices, 0.0),
        )

    def on_event(self, role: str, event: Any, origin: Any = None) -> list[Any]:
        stream = ORDERS if role == "orders" else SCANS
        return self.engine.ingest(stream, event.order_id, event, event.event_id,
                                  event.occurred_at.timestamp(), origin, fingerprint(event))

    def on_notice(self, raw: bytes) -> list[Any]:
        """A record of the stock-notices topic: a notice or a stock partition's heartbeat."""
        msg = orjson.loads(raw)
        if isinstance(msg, dict) and msg.get("kind") == "heartbeat":
            return self.engine.observe_clock(notices_stream(int(msg["origin"])),
                                             float(msg["clock"]))
        notice = StockNotice.model_validate_json(raw)
        return self.engine.ingest(notices_stream(notice.origin), notice.order_id, notice,
                                  notice.notice_id, notice.occurred_at.timestamp())


class StockPartition:
    """Stock table of one partition: inventory events + re-keyed order lines."""

    def __init__(self, settings: Settings, thresholds: Thresholds, partition: int,
                 models: StockModels | None = None, heartbeat_s: float | None = None) -> None:
        """``heartbeat_s``: tell the shipment partitions our watermark whenever it moved this
        far (event time) since we last did (replay); None: the caller asks for heartbeats
        with :meth:`heartbeats` (the worker, once its notices are on the broker)."""
        self.partition = partition
        self.n = n = settings.topics.partitions
        self.engine: Engine[StockState] = Engine(
            StockLogic(thresholds, models=models, partition=partition),
            gating_streams=(INVENTORY, *(lines_stream(q) for q in range(n))),
            allowed_lateness_s=settings.time.allowed_lateness_s,
            max_past_s=settings.time.max_past_s,
        )
        self.heartbeat_s = heartbeat_s
        self.last_heartbeat = -math.inf

    def on_inventory(self, event: Any) -> list[Any]:
        out = self.engine.ingest(INVENTORY, event.stock_key, event, event.event_id,
                                 event.occurred_at.timestamp(), content=fingerprint(event))
        return self._with_heartbeats(out)

    def on_line(self, msg: dict[str, Any]) -> list[Any]:
        stream = lines_stream(int(msg["origin"]))
        if msg["kind"] == "heartbeat":
            return self._with_heartbeats(self.engine.observe_clock(stream, float(msg["clock"])))
        key = f"{msg['warehouse_id']}:{msg['sku']}"
        return self._with_heartbeats(
            self.engine.ingest(stream, key, msg, msg["event_id"], float(msg["occurred_at"])))

    def heartbeats(self, min_step_s: float = 0.0) -> list[Forward]:
        """Our watermark to every shipment partition, if it moved ``min_step_s`` since the
        last time. Every notice decided later is dated at or after it (items are applied
        from the watermark on); sent only after the notices decided before it."""
        engine = self.engine
        wm = engine.watermark
        if INVENTORY not in engine.clocks:
            # No inventory yet (a shop may have no inventory feed at all): no line can be
            # short before a stock level is known, so delay alerts need not wait for it.
            wm = max(wm, min(engine.clocks.get(s, -math.inf) - engine.lateness[s]
                             for s in engine.gating_streams if s != INVENTORY))
        if wm == -math.inf or wm == math.inf or wm - self.last_heartbeat <= min_step_s:
            return []
        self.last_heartbeat = wm
        # the same rounding to microseconds as a notice's occurred_at, so none sorts below
        clock = ts_to_dt(wm).timestamp()
        return [Forward("stock_notices", None, {
            "kind": "heartbeat", "origin": self.partition, "clock": clock}, partition=p)
            for p in range(self.n)]

    def _with_heartbeats(self, out: list[Any]) -> list[Any]:
        if self.heartbeat_s is not None:
            out.extend(self.heartbeats(self.heartbeat_s))
        return out


def make_models(settings: Settings, thresholds: Thresholds) -> ModelSet:
    """The learned detectors of a process, shared by all its partitions: one model learns
    from every order the process sees (per partition, each would see 1/n of them and learn n
    times slower). With one partition, live and replay learn in the same order. Warm-started
    from ``settings.models.checkpoint_path`` when that file exists."""
    if not settings.models.enabled:
        return ModelSet(None, None)
    models = ModelSet(
        RiskDetector(ZoneInfo(thresholds.timezone),
                     target_precision=settings.models.target_precision),
        # anomaly score + stock-out forecast next to the stock rules
        StockModels(StockAnomaly(seed=settings.models.seed)))
    path = settings.models.checkpoint_path
    if path is not None:
        try:
            models.load(path)
        except (ValueError, pickle.UnpicklingError, AttributeError, EOFError) as exc:
            # an old or damaged checkpoint must not stop the worker: learn from zero, loudly
            log.warning("checkpoint_ignored", path=str(path), error=str(exc))
    return models


@dataclass
class TopologyStats:
    events: int = 0
    dlq_by_reason: dict[str, int] = field(default_factory=dict)


class Topology:
    """``n`` shipment and stock partitions wired as the Faust worker wires them."""

    def __init__(self, settings: Settings, thresholds: Thresholds) -> None:
        self.n = settings.topics.partitions
        self.models = make_models(settings, thresholds)
        self.risk = self.models.risk
        self.shipments = [ShipmentPartition(settings, thresholds, p, self.risk)
                          for p in range(self.n)]
        self.stocks = [StockPartition(settings, thresholds, p, self.models.stock,
                                      heartbeat_s=settings.time.heartbeat_s)
                       for p in range(self.n)]
        self.stats = TopologyStats()
        self.max_future_s = settings.time.max_future_s

    def feed(
        self, role: str, key: str | None, raw: bytes | None, source: SourceRef
    ) -> Iterator[Any]:
        """One input record; yields the alerts and dead letters it causes."""
        self.stats.events += 1
        try:
            event = decode(role, raw, key, received_ms=source.timestamp_ms,
                           max_future_s=self.max_future_s)
        except DecodeError as exc:
            yield self._dlq(exc.reason, exc.message, "decode", source, raw, exc.event_id)
            return
        p = partition_for(key or "", self.n)
        if role == "inventory":
            outputs = self.stocks[p].on_inventory(event)
        else:
            outputs = self.shipments[p].on_event(role, event, source)
        yield from self._route(outputs, source, raw)

    def heartbeats(self) -> Iterator[Any]:
        """Every stock partition tells the shipment partitions its watermark now, as the
        worker does after each micro-batch (replay does it only every ``heartbeat_s`` of
        event time): where the input ends, live and replay then stand at the same time."""
        source = SourceRef(topic="<heartbeat>")
        for part in self.stocks:
            yield from self._route(part.heartbeats(), source, None)

    def flush(self) -> Iterator[Any]:
        """End of input: let every partition's watermark reach the latest event time seen.

        A finished file has idle streams by definition; without this, deadlines after the last
        order event of a partition would never fire. A live worker never knows its input ended
        (there the idle-advance setting plays this part), so live == replay compares without it.
        """
        engines: list[Engine[Any]] = [*(p.engine for p in self.shipments),
                                      *(p.engine for p in self.stocks)]
        end = max((c for e in engines for c in e.clocks.values()), default=None)
        if end is None:
            return
        source = SourceRef(topic="<end-of-input>")
        end = math.nextafter(end, math.inf)  # the engines apply what is strictly before
        for _ in range(3):  # stock notices produced by the flush need one more round
            outputs = [o for e in engines for o in e.advance_to(end)]
            if not outputs:
                break
            yield from self._route(outputs, source, None)

    def _route(
        self, outputs: list[Any], source: SourceRef, raw: bytes | None
    ) -> Iterator[Any]:
        queue = list(outputs)
        while queue:
            out = queue.pop(0)
            if isinstance(out, Alert | Prediction | Outcome | ModelEvent):
                yield out
            elif isinstance(out, Rejected):
                src, payload = rejected_source(out, source, raw)
                yield self._dlq(out.reason, out.error, "process", src, payload, out.event_id)
            elif isinstance(out, Forward):
                if out.role == "order_lines":
                    p = out.partition if out.partition is not None else partition_for(
                        out.key or "", self.n)
                    queue.extend(self.stocks[p].on_line(out.value))
                else:  # stock_notices: as on the wire
                    p = out.partition if out.partition is not None else partition_for(
                        out.key or "", self.n)
                    queue.extend(self.shipments[p].on_notice(orjson.dumps(out.value)))

    def _dlq(self, reason: str, error: str, stage: str, source: SourceRef, raw: bytes | None,
             event_id: str | None) -> DeadLetter:
        self.stats.dlq_by_reason[reason] = self.stats.dlq_by_reason.get(reason, 0) + 1
        at = None
        # a record time no calendar holds leaves the failure time out, not the dead letter
        with contextlib.suppress(OverflowError, ValueError, OSError):
            if source.timestamp_ms is not None:
                at = datetime.fromtimestamp(source.timestamp_ms / 1000, UTC)
        return dead_letter(reason, error, stage, source, raw, event_id, at)

    @property
    def duplicates(self) -> int:
        return sum(s.engine.duplicates for s in self.shipments) + sum(
            s.engine.duplicates for s in self.stocks)
