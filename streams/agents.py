"""Agents: decode -> engine of the record's partition -> write state back -> send.

``track_shipments`` consumes orders, carrier scans and stock notices (co-partitioned by
order_id) into the shipment table; ``track_stock`` consumes inventory and re-keyed order
lines (co-partitioned by warehouse_id:sku) into the stock table. Engines live in memory per
partition and are rebuilt from the tables after every rebalance.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
import orjson
import structlog
from faust.types import TableT

from delaywatch.config.settings import Settings
from delaywatch.config.thresholds import Thresholds
from delaywatch.core.decode import DecodeError, decode
from delaywatch.core.engine import Engine, Forward, Rejected
from delaywatch.core.pipeline import (
    ShipmentPartition,
    StockPartition,
    dead_letter,
    make_models,
    partition_for,
    rejected_source,
)
from delaywatch.models.risk import ModelEvent
from delaywatch.schemas.alerts import Alert
from delaywatch.schemas.dlq import SourceRef
from delaywatch.schemas.events import StockNotice
from delaywatch.streams.tables import Tables
from delaywatch.streams.topics import Topics

__all__ = ["Agents", "define_agents"]

log = structlog.get_logger("delaywatch.agents")


class PartitionEngines:
    """In-memory engines per partition, rebuilt from a table after a rebalance."""

    def __init__(self, kind: str, table: TableT, clocks: TableT, n: int,
                 factory: Callable[[int], Any]) -> None:
        self.kind, self.table, self.clocks, self.n, self.factory = kind, table, clocks, n, factory
        self.parts: dict[int, Any] = {}

    def reset(self) -> None:
        self.parts.clear()

    def get(self, p: int) -> Any:
        part = self.parts.get(p)
        if part is None:
            part = self.factory(p)
            engine: Engine[Any] = part.engine
            meta = self.clocks.get(f"{self.kind}:{p}")
            clocks: dict[str, float] = {}
            if meta is not None:
                clocks, extra = pickle.loads(meta)
                if hasattr(part, "logic"):
                    part.logic.last_heartbeat = extra
            states = [pickle.loads(v) for k, v in list(self.table.items())
                      if partition_for(k, self.n) == p]
            engine.restore(states, clocks)
            self.parts[p] = part
            log.info("engine_restored", table=self.kind, partition=p, keys=len(states))
        return part

    def write_back(self, p: int) -> None:
        """Persist what changed in partition ``p`` to the table and its changelog partition
        ``p`` (explicitly, so it also works from a timer, outside stream iteration)."""
        part = self.parts[p]
        changed, deleted = part.engine.take_changes()
        for key, ks in changed.items():
            _put(self.table, p, key, pickle.dumps(ks, protocol=pickle.HIGHEST_PROTOCOL))
        for key in deleted:
            _put(self.table, p, key, None)
        extra = getattr(getattr(part, "logic", None), "last_heartbeat", None)
        _put(self.clocks, p, f"{self.kind}:{p}", pickle.dumps((part.engine.clocks, extra)))


def source_of(msg: Any) -> SourceRef:
    key = msg.key.decode("utf-8", "replace") if isinstance(msg.key, bytes) else msg.key
    return SourceRef(topic=msg.topic, partition=msg.partition, offset=msg.offset,
                     timestamp_ms=int(msg.timestamp * 1000) if msg.timestamp else None, key=key)


def provenance_headers(source: SourceRef) -> dict[str, bytes]:
    """Headers on every alert record: the input record whose processing decided it
    (``topic/partition/offset``; ``<idle-advance>/p/`` when event time ran on while the input
    was idle) and that record's timestamp in ms -- for tracing and end-to-end latency."""
    ref = f"{source.topic}/{source.partition}/{'' if source.offset is None else source.offset}"
    headers = {"dw-source": ref.encode()}
    if source.timestamp_ms is not None:
        headers["dw-source-ts"] = str(source.timestamp_ms).encode()
    return headers


def _put(table: TableT, partition: int, key: str, value: bytes | None) -> None:
    # Same effect as ``table[key] = value`` inside an agent, with the changelog partition
    # given instead of taken from the current event (memory store; see docs).
    if value is None:
        if key in table.data:
            del table.data[key]
        table.send_changelog(partition, key, None, value_serializer="raw")
    else:
        table.data[key] = value
        table.send_changelog(partition, key, value)


class Agents:
    def __init__(self, app: faust.App, settings: Settings, thresholds: Thresholds,
                 topics: Topics, tables: Tables) -> None:
        self.topics = topics
        n = settings.topics.partitions
        # one learned model set per worker, warm-started from its checkpoint file
        self.models = make_models(settings, thresholds)
        self.shipments = PartitionEngines(
            "shipment", tables.shipments, tables.clocks, n,
            lambda p: ShipmentPartition(settings, thresholds, p, self.models.risk))
        self.stock = PartitionEngines(
            "stock", tables.stock, tables.clocks, n,
            lambda p: StockPartition(settings, thresholds, p, self.models.stock))
        self.checkpoint_path = settings.models.checkpoint_path
        if self.models.risk is not None or self.models.stock is not None:
            self._model_events: list[ModelEvent] = [self._model_event(
                "restored" if self.checkpoint_path and self.checkpoint_path.exists()
                else "cold_start")]
            log.info("models_ready", **self._model_events[0].detail)
            if self.checkpoint_path is not None:
                app.timer(interval=settings.models.checkpoint_interval_s,
                          name="checkpoint_models")(self._checkpoint)

            @app.task
            async def _announce_models() -> None:
                await self._send_model_events()
        self.counts: dict[str, int] = {"events": 0, "alerts": 0, "dlq": 0}
        self.max_future_s = settings.time.max_future_s
        self.batch_size = settings.worker.batch_size
        self.batch_within_s = settings.worker.batch_within_s
        self.last_input = time.monotonic()
        idle = settings.time.idle_advance_after_s
        if idle:
            app.timer(interval=max(0.5, idle / 2), name="advance_idle_watermarks")(
                self._make_idle_advance(idle))

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def _revoked(app: faust.App, revoked: Any, **_: Any) -> None:
            self.shipments.reset()
            self.stock.reset()

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def _assigned(app: faust.App, assigned: Any, **_: Any) -> None:
            self.shipments.reset()
            self.stock.reset()

        self.track_shipments = app.agent(topics.shipment_inputs, name="track_shipments")(
            self._track_shipments)
        self.track_stock = app.agent(topics.stock_inputs, name="track_stock")(self._track_stock)

    # -- agents ----------------------------------------------------------------------------
    async def _track_shipments(self, stream: faust.StreamT) -> None:
        await self._track(stream, self.shipments, self._shipment_record)

    async def _track_stock(self, stream: faust.StreamT) -> None:
        await self._track(stream, self.stock, self._stock_record)

    async def _track(self, stream: faust.StreamT, engines: PartitionEngines,
                     handle: Callable[[Any, str | None, SourceRef, bytes], list[Any]]) -> None:
        # Micro-batches: each key's state is pickled and written to the changelog once per
        # batch instead of once per event. Faust acks a batch's events only after this body
        # has run (take_events), so the state is written before their offsets can commit.
        async for batch in stream.take_events(  # type: ignore[attr-defined]  # not in StreamT
                self.batch_size, within=self.batch_within_s):
            touched: set[int] = set()
            for event in batch:
                msg = event.message
                part = engines.get(msg.partition)
                role = self.topics.roles.get(msg.topic)
                source = source_of(msg)
                await self._process(source, event.value,
                                    partial(handle, part, role, source, event.value))
                touched.add(msg.partition)
            for p in touched:
                engines.write_back(p)

    def _shipment_record(self, part: ShipmentPartition, role: str | None, source: SourceRef,
                         value: bytes) -> list[Any]:
        if role == "stock_notices":
            return part.on_notice(StockNotice.model_validate_json(value))
        event = decode(role or "", value, source.key, source.timestamp_ms, self.max_future_s)
        return part.on_event(role or "", event, source)

    def _stock_record(self, part: StockPartition, role: str | None, source: SourceRef,
                      value: bytes) -> list[Any]:
        if role == "order_lines":
            return part.on_line(orjson.loads(value))
        return part.on_inventory(
            decode("inventory", value, source.key, source.timestamp_ms, self.max_future_s))

    def _make_idle_advance(self, idle_s: float) -> Callable[[], Any]:
        async def advance_idle_watermarks() -> None:
            """Input idle: let event time run on from the latest clock at wall-clock speed,
            so a silent feed still reaches its deadlines (live only, never in replay)."""
            idle_for = time.monotonic() - self.last_input
            if idle_for < idle_s:
                return
            for engines in (self.shipments, self.stock):
                for p, part in list(engines.parts.items()):
                    clocks = part.engine.clocks
                    if not clocks:
                        continue
                    outputs = part.engine.advance_to(max(clocks.values()) + idle_for)
                    source = SourceRef(topic="<idle-advance>", partition=p)
                    await self._emit(outputs, source, None)
                    engines.write_back(p)

        return advance_idle_watermarks

    # -- models ----------------------------------------------------------------------------
    def _model_event(self, kind: str, **extra: Any) -> ModelEvent:
        detail = {"probe_p_late": self.models.probe(), "learned": self.models.learned(),
                  "checkpoint": str(self.checkpoint_path) if self.checkpoint_path else None,
                  **extra}
        return ModelEvent(kind, time.time(), detail)

    async def _checkpoint(self) -> None:
        """Write the learned models. They are pickled between two events, never inside one
        (each event is handled synchronously), but possibly between two events of a
        micro-batch whose table write-back has not run yet (the agent awaits its sends): after
        a kill -9 such events are processed again and learned twice -- at-least-once, like
        the outputs."""
        assert self.checkpoint_path is not None
        size = self.models.save(self.checkpoint_path)
        event = self._model_event("checkpoint", bytes=size)
        log.info("models_checkpointed", **event.detail)
        self._model_events.append(event)
        await self._send_model_events()

    async def _send_model_events(self) -> None:
        while self._model_events:
            ev = self._model_events.pop(0)
            await self.topics.model.send(key=ev.kind, value=orjson.dumps(
                {"kind": ev.kind, "at": ev.at, "worker_pid": os.getpid(), **ev.detail}))

    # -- shared ----------------------------------------------------------------------------
    async def _process(self, source: SourceRef, value: Any,
                       handle: Callable[[], list[Any]]) -> None:
        self.counts["events"] += 1
        self.last_input = time.monotonic()
        try:
            outputs = handle()
        except DecodeError as exc:
            await self._dlq(exc.reason, exc.message, "decode", source, value, exc.event_id)
            return
        except Exception as exc:  # a bug must not stop the worker or lose the record
            log.exception("processing_failed", topic=source.topic, partition=source.partition,
                          offset=source.offset)
            await self._dlq("processing_error", f"{type(exc).__name__}: {exc}", "process",
                            source, value, None)
            return
        await self._emit(outputs, source, value)

    async def _emit(self, outputs: list[Any], source: SourceRef, value: Any) -> None:
        origin_ms = source.timestamp_ms
        for out in outputs:
            if isinstance(out, Alert):
                self.counts["alerts"] += 1
                topic = (self.topics.alerts_delay if out.category == "delay"
                         else self.topics.alerts_stock)
                await topic.send(key=out.key, value=out.model_dump_json().encode(),
                                 headers=provenance_headers(source))
            elif isinstance(out, Forward):
                # internal hop: keeps the original record's timestamp, so an alert's
                # ``dw-source-ts`` header is the time the shop's system produced the event
                topic = (self.topics.order_lines if out.role == "order_lines"
                         else self.topics.stock_notices)
                await topic.send(key=out.key, value=orjson.dumps(out.value),
                                 partition=out.partition,
                                 timestamp=origin_ms / 1000 if origin_ms else None)
            elif isinstance(out, Rejected):
                await self._dlq(out.reason, out.error, "process",
                                *rejected_source(out, source, value), out.event_id)
            elif isinstance(out, ModelEvent):  # drift: to the model topic and the log
                log.warning("model_drift", **out.detail)
                await self.topics.model.send(key=out.kind, value=orjson.dumps(
                    {"kind": out.kind, "at": out.at, "worker_pid": os.getpid(), **out.detail}))

    async def _dlq(self, reason: str, error: str, stage: str, source: SourceRef, raw: Any,
                   event_id: str | None) -> None:
        self.counts["dlq"] += 1
        now = datetime.now(UTC)
        record = dead_letter(reason, error, stage, source,
                             raw if isinstance(raw, bytes) else None, event_id, now)
        log.warning("dead_letter", reason=reason, topic=source.topic,
                    partition=source.partition, offset=source.offset, event_id=event_id)
        await self.topics.dlq.send(key=source.key, value=record.model_dump_json().encode())


def define_agents(app: faust.App, settings: Settings, thresholds: Thresholds, topics: Topics,
                  tables: Tables) -> Agents:
    return Agents(app, settings, thresholds, topics, tables)
