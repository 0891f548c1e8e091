"""Agents: decode -> engine of the record's partition -> send outputs -> write state back.

``track_shipments`` consumes orders, carrier scans and stock notices (co-partitioned by
order_id) into the shipment table; ``track_stock`` consumes inventory and re-keyed order
lines (co-partitioned by warehouse_id:sku) into the stock table. Engines live in memory per
partition and are rebuilt from the tables after every rebalance.

Order of effects (what makes a kill -9 lose nothing):

1. the engine handles every event of a micro-batch (pure, in memory);
2. everything they decided -- alerts, internal forwards, dead letters -- is sent and
   **acknowledged by the broker** (acks=all; a failed send is retried with backoff, never
   dropped: see :class:`Outbox`), batch by batch;
3. at most once per ``state_write_interval_s`` (and before a rebalance or shutdown), the
   state of every key changed since the last write is written to the changelog --
   coalesced: one record per key however many batches touched it -- and acknowledged;
4. only then the partitions' clocks and input offsets (what the state holds), acknowledged;
5. only then are those batches' events acked to Faust, so their offsets can be committed.

A crash before 3 leaves the old state and uncommitted offsets: the events are re-delivered
and decide the same alerts again (same alert_ids: a duplicate, never a loss). A crash
between 3 and 4 leaves state that already holds the events, whose alerts are on the broker
(re-delivered events are then recognised by event_id); after 4, by their offsets.
Faust's own ways would break this: a ``topic.send`` inside an agent is held back until the
event's offset is committed, while a table's changelog goes out at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import faust
import orjson
import structlog
from confluent_kafka import Producer
from faust.types import TP, TableT

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
from delaywatch.core.retry import RetryInfo, is_transient, next_tier
from delaywatch.kafka_io import client_config, read_range
from delaywatch.models.risk import ModelEvent
from delaywatch.schemas.alerts import Alert
from delaywatch.schemas.dlq import SourceRef
from delaywatch.streams.faust_patches import (
    before_wait_empty,
    count_state_as_acked,
    release,
)
from delaywatch.streams.metrics import MetricsServer, WorkerMetrics
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
        # per partition: the next offset of each input topic whose event is not yet in the
        # state -- written with the state, so a re-delivered event is recognised by its
        # offset even when the key it touched has since finished and left the table
        self.offsets: dict[int, dict[str, int]] = {}
        # the same, as last written with the state (restored, or at the end of a batch):
        # every effect of the events below it is on the broker
        self.settled: dict[int, dict[str, int]] = {}
        # held from an engine's first change to its outputs being on the broker (batch or
        # idle advance), so a timer never writes state whose outputs are not
        self.lock = asyncio.Lock()
        # partitions whose state changed since it was last written, and the events whose
        # effects that write will complete (acked to Faust only then)
        self.dirty: set[int] = set()
        self.held: list[Any] = []
        self.written_at = time.monotonic()
        # a batch is being applied and its outputs are not yet all on the broker: the
        # engines are ahead of what was sent, and their state must not be written (a
        # cancelled batch leaves this set; its events are then re-delivered)
        self.torn = False

    @contextlib.contextmanager
    def applying(self) -> Iterator[None]:
        """Engines ahead of what was sent while the block runs (their state must not be
        written). A block cut short -- cancelled by a shutdown -- leaves them torn: its
        events are then released unwritten and delivered again."""
        self.torn = True
        yield
        self.torn = False

    def reset(self) -> None:
        self.parts.clear()
        self.offsets.clear()
        self.settled.clear()
        self.dirty.clear()
        self.held.clear()  # not acked: re-delivered, and recognised by the state's offsets
        self.torn = False

    def applied(self, p: int, topic: str, offset: int) -> bool:
        """True when this record's event is already in partition ``p``'s state."""
        return offset < self.offsets[p].get(topic, -1)

    def mark(self, p: int, topic: str, offset: int) -> None:
        self.offsets[p][topic] = offset + 1

    def get(self, p: int) -> Any:
        part = self.parts.get(p)
        if part is None:
            part = self.factory(p)
            engine: Engine[Any] = part.engine
            meta = self.clocks.get(f"{self.kind}:{p}")
            clocks: dict[str, float] = {}
            offsets: dict[str, int] = {}
            if meta is not None:
                clocks, extra, *rest = pickle.loads(meta)  # (older workers: no offsets)
                offsets = rest[0] if rest else {}
                if hasattr(part, "logic"):
                    part.logic.restore_checkpoint(extra)
            self.offsets[p] = dict(offsets)
            self.settled[p] = dict(offsets)
            states = [pickle.loads(v) for k, v in list(self.table.items())
                      if partition_for(k, self.n) == p]
            engine.restore(states, clocks)
            self.parts[p] = part
            log.info("engine_restored", table=self.kind, partition=p, keys=len(states))
        return part

    def write_back(self, p: int, out: Outbox) -> int:
        """Put what changed in partition ``p`` into the table, and its changelog records
        (partition ``p``, explicitly: this also runs from a timer) into ``out``; the bytes
        of state written."""
        part = self.parts.get(p)
        if part is None:  # reset by a rebalance meanwhile: nothing of ours to write
            return 0
        changed, deleted = part.engine.take_changes()
        written = 0
        for key, ks in changed.items():
            value = pickle.dumps(ks, protocol=pickle.HIGHEST_PROTOCOL)
            written += len(value)
            _put(self.table, p, key, value, out)
        for key in deleted:
            _put(self.table, p, key, None, out)
        return written

    def write_meta(self, p: int, out: Outbox) -> None:
        """Partition ``p``'s clocks and input offsets into ``out``. Only once the keys'
        records are acknowledged: the offsets claim that the state holds their events (they
        are different topics, so sent together either could land first and a crash between
        would skip events the state never saw)."""
        part = self.parts.get(p)
        if part is None:
            return
        logic = getattr(part, "logic", None)
        extra = logic.checkpoint() if logic is not None else None
        _put(self.clocks, p, f"{self.kind}:{p}",
             pickle.dumps((part.engine.clocks, extra, self.offsets.get(p, {}))), out)

    def keys(self) -> int:
        return sum(len(part.engine.states) for part in self.parts.values())


@dataclass(slots=True)
class _Record:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None
    timestamp_ms: int | None = None


def make_producer(settings: Settings) -> Producer:
    """The worker's own producer (confluent-kafka) for everything an Outbox sends.

    Faust's aiokafka producer encodes each record and request in Python on the event loop:
    with Faust's ``Topic.send`` around it that was ~15 % of the worker's time (py-spy,
    100k events); librdkafka does it in its own threads. Keyed records without a partition
    go where Kafka's default (murmur2) partitioner puts them, as Faust's would."""
    k, w = settings.kafka, settings.worker
    return Producer({
        **client_config(settings), "partitioner": "murmur2_random", "acks": "all",
        "enable.idempotence": k.idempotent_producer, "linger.ms": 2,
        # an unacknowledged record fails after this long and the Outbox sends it again
        "message.timeout.ms": int(w.producer_request_timeout_s * 1000),
    })


class Outbox:
    """Records to send, and the guarantee that they reached the broker.

    ``add`` only collects; ``deliver`` sends everything collected, waits for every
    acknowledgement and sends again, with capped exponential backoff, whatever failed -- for
    as long as it takes. Blocking the agent is the intended back-pressure: a record is never
    dropped, and the state that records its decision is not written until it is
    delivered."""

    def __init__(self, producer: Producer, metrics: WorkerMetrics,
                 max_backoff_s: float = 30.0) -> None:
        self.producer, self.metrics, self.max_backoff_s = producer, metrics, max_backoff_s
        self.records: list[_Record] = []

    def add(self, topic: Any, *, key: str | bytes | None, value: bytes | None,
            partition: int | None = None, headers: Any = None,
            timestamp: float | None = None, json_key: bool = False) -> None:
        """``topic``: a Faust topic (its one name is used); ``timestamp`` in seconds;
        ``json_key``: the key as a JSON string (how Faust serializes table keys)."""
        if isinstance(key, str):
            key = orjson.dumps(key) if json_key else key.encode("utf-8")
        if isinstance(headers, dict):
            headers = list(headers.items())
        self.records.append(_Record(
            topic.get_topic_name(), key, value, partition, headers,
            None if timestamp is None else int(timestamp * 1000)))

    async def deliver(self) -> None:
        attempt = 0
        while self.records:
            pending, self.records = self.records, []
            failed: list[_Record] = []
            errors: list[Any] = []
            refused: BaseException | None = None
            for i, rec in enumerate(pending):
                try:
                    await self._produce(rec, failed, errors)
                except Exception as exc:  # refused before queueing (unknown topic, config)
                    refused, failed = exc, failed + pending[i:]  # the rest waits, in order
                    break
            # every queued record is acknowledged or has failed (message.timeout.ms) when
            # flush returns; its delivery callbacks have run by then
            await asyncio.to_thread(self.producer.flush)
            if not failed:
                return
            attempt += 1
            topics = [rec.topic for rec in failed]
            for name in topics:
                self.metrics.send_failures.labels(name).inc()
            log.error("send_failed_retrying", records=len(failed), attempt=attempt,
                      topics=sorted(set(topics)), error=repr(errors[0] if errors else refused))
            await asyncio.sleep(min(self.max_backoff_s, 0.25 * 2 ** min(attempt, 8)))
            # failed records in the order they were added, ahead of anything added since
            order = {id(rec): i for i, rec in enumerate(pending)}
            self.records = sorted(failed, key=lambda r: order[id(r)]) + self.records

    async def _produce(self, rec: _Record, failed: list[_Record], errors: list[Any]) -> None:
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(rec)
                errors.append(err)

        extra: dict[str, Any] = {}
        if rec.partition is not None:
            extra["partition"] = rec.partition
        if rec.headers:
            extra["headers"] = rec.headers
        if rec.timestamp_ms is not None:
            extra["timestamp"] = rec.timestamp_ms
        while True:
            try:
                self.producer.produce(rec.topic, rec.value, rec.key, on_delivery=on_delivery,
                                      **extra)
                return
            except BufferError:  # the local queue is full: let librdkafka drain it
                await asyncio.to_thread(self.producer.poll, 0.5)


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


def _put(table: TableT, partition: int, key: str, value: bytes | None, out: Outbox) -> None:
    # Same effect as ``table[key] = value`` inside an agent (memory store), with the
    # changelog partition given instead of taken from the current event and the changelog
    # record sent through the outbox (acknowledged before the batch's offsets may commit)
    # instead of Faust's buffer. Keys as Faust writes them (JSON strings, see tables.py).
    if value is None:
        table.data.pop(key, None)
    else:
        table.data[key] = value
    out.add(table.changelog_topic, key=key, value=value, partition=partition, json_key=True)


class Agents:
    def __init__(self, app: faust.App, settings: Settings, thresholds: Thresholds,
                 topics: Topics, tables: Tables) -> None:
        self.topics, self.settings = topics, settings
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
        self.metrics = WorkerMetrics()
        self.producer = make_producer(settings)
        # events handled per topic since the last _count(): a prometheus counter takes a
        # lock per increment, which cost ~8 % of the worker's time per event (py-spy)
        self._counted: collections.Counter[str] = collections.Counter()
        self._alerted: collections.Counter[tuple[str, str]] = collections.Counter()  # alike
        count_state_as_acked(self._held_offsets)
        self.metrics_port = settings.worker.metrics_port
        self.assigned: set[Any] = set()
        self.app = app
        self.max_future_s = settings.time.max_future_s
        self.batch_size = settings.worker.batch_size
        self.batch_within_s = settings.worker.batch_within_s
        self.state_write_interval_s = settings.worker.state_write_interval_s
        app.timer(interval=max(0.1, self.state_write_interval_s / 2),
                  name="write_due_state")(self._write_due_state)

        before_wait_empty(self._write_all_state)
        self.last_input = time.monotonic()
        idle = settings.time.idle_advance_after_s
        if idle:
            app.timer(interval=max(0.5, idle / 2), name="advance_idle_watermarks")(
                self._make_idle_advance(idle))

        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def _revoked(app: faust.App, revoked: Any, **_: Any) -> None:
            await self._reset_engines()

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def _assigned(app: faust.App, assigned: Any, **_: Any) -> None:
            self.assigned = set(assigned)
            await self._reset_engines()

        if self.metrics_port is not None:
            @app.task
            async def _serve_metrics() -> None:
                server = MetricsServer(self.metrics, self._health, port=self.metrics_port or 0)
                server.start()
                log.info("metrics_serving", host="127.0.0.1", port=server.port,
                         paths=["/metrics", "/health"])

            app.timer(interval=5.0, name="measure_lag")(self._measure_lag)

        self.track_shipments = app.agent(topics.shipment_inputs, name="track_shipments")(
            self._track_shipments)
        self.track_stock = app.agent(topics.stock_inputs, name="track_stock")(self._track_stock)
        self.tiers = [(t.get_topic_name(), delay) for t, delay in topics.retry_tiers]
        if topics.retries is not None:
            self.retry = app.agent(topics.retries, name="retry_tiers")(self._retry)

    async def _reset_engines(self) -> None:
        # after the batch in hand is delivered and its state written (locks), never in its
        # middle
        for engines in (self.shipments, self.stock):
            async with engines.lock:
                await self._write_state(engines)
                engines.reset()

    async def _deliver(self, engines: PartitionEngines, partitions: Any, out: Outbox) -> None:
        """Steps 2 of the order of effects (module docstring): what was decided reaches the
        broker. A stock partition's heartbeat goes after its notices are on the broker:
        every notice decided before it is then ahead of it in its partitions."""
        await out.deliver()
        if engines is self.stock:
            for p in partitions:
                if (part := engines.parts.get(p)) is not None:
                    self._emit(part.heartbeats(),
                               SourceRef(topic="<heartbeat>", partition=p), None, out)
            await out.deliver()
        engines.dirty.update(partitions)

    async def _write_state(self, engines: PartitionEngines) -> int:
        """Steps 3-5: the state of every key changed since the last write, then the
        partitions' clocks and offsets, then the held events acked; the bytes of state
        written. Only under ``engines.lock``, after :meth:`_deliver`."""
        engines.written_at = time.monotonic()
        if engines.torn:  # a batch was cut short (shutdown): its events come again
            log.warning("state_not_written_batch_interrupted", table=engines.kind,
                        events=len(engines.held))
            for event in engines.held:
                release(event.message)
            engines.held.clear()
            return 0
        if not engines.dirty:
            return 0
        dirty, held = sorted(engines.dirty), engines.held
        engines.dirty, engines.held = set(), []
        out = Outbox(self.producer, self.metrics)
        written = sum(engines.write_back(p, out) for p in dirty)
        await out.deliver()
        for p in dirty:
            engines.write_meta(p, out)
        await out.deliver()
        for p in dirty:
            engines.settled[p] = dict(engines.offsets.get(p, {}))
        for event in held:
            event.ack()  # the last reference (the batch's own ack came first)
        m = self.metrics
        m.state_bytes.labels(engines.kind).set(written)
        m.state_keys.labels(engines.kind).set(engines.keys())
        return written

    async def _write_due_state(self) -> None:
        """Timer: state not written for ``state_write_interval_s`` (an idle input)."""
        for engines in (self.shipments, self.stock):
            due = time.monotonic() - engines.written_at >= self.state_write_interval_s
            if engines.dirty and due:
                async with engines.lock:
                    await self._write_state(engines)

    async def _write_all_state(self) -> None:
        """Before Faust waits for every started event to be acked (a rebalance, a
        shutdown; ``faust_patches.before_wait_empty``): everything held is written, which
        acks it -- a restart or the partition's next owner then finds its events in the
        state."""
        for engines in (self.shipments, self.stock):
            async with engines.lock:
                held = len(engines.held)
                written = await self._write_state(engines)
            if held:
                log.info("state_written_before_wait", table=engines.kind, events=held,
                         state_bytes=written)

    def _held_offsets(self) -> dict[TP, int]:
        """Per input partition, the next offset whose effects are not all on the broker:
        Faust counts every offset below it as acknowledged (``faust_patches``)."""
        return {TP(topic, p): nxt for engines in (self.shipments, self.stock)
                for p, offsets in engines.settled.items() for topic, nxt in offsets.items()}

    # -- operations --------------------------------------------------------------------------
    async def _measure_lag(self) -> None:
        """Consumer lag per input partition: the high-water mark the consumer last fetched
        minus the next offset not yet applied to the state."""
        for engines in (self.shipments, self.stock):
            for p, offsets in list(engines.offsets.items()):
                for topic, nxt in offsets.items():
                    try:
                        high = self.app.consumer.highwater(TP(topic, p))
                    except Exception:  # not fetched yet / not ours any more
                        continue
                    if high is not None:
                        self.metrics.lag.labels(topic, str(p)).set(max(0, high - nxt))

    def _health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy: partitions assigned (Faust running) -- and how long the input is quiet,
        for an outside judge of feeds (a silent feed is not a sick worker)."""
        return bool(self.assigned), {
            "assigned_partitions": len(self.assigned),
            "engines": {"shipment": len(self.shipments.parts), "stock": len(self.stock.parts)},
            "input_idle_s": round(time.monotonic() - self.last_input, 1),
            "events": self.metrics.total(self.metrics.events),
        }

    # -- agents ----------------------------------------------------------------------------
    async def _track_shipments(self, stream: faust.StreamT) -> None:
        await self._track(stream, self.shipments, self._shipment_record)

    async def _track_stock(self, stream: faust.StreamT) -> None:
        await self._track(stream, self.stock, self._stock_record)

    async def _track(self, stream: faust.StreamT, engines: PartitionEngines,
                     handle: Callable[[Any, str | None, SourceRef, bytes], list[Any]]) -> None:
        # Micro-batches: a batch's outputs are sent together; each key's state is pickled
        # and written to the changelog once per state-write interval, however many batches
        # changed it. Faust acks a batch's events after this body has run (take_events);
        # an extra reference holds each applied one until its state is written, so no
        # offset commits ahead of its state (order of effects: module docstring).
        async for batch in stream.take_events(  # type: ignore[attr-defined]  # not in StreamT
                self.batch_size, within=self.batch_within_s):
            async with engines.lock:
                started = time.perf_counter()
                out = Outbox(self.producer, self.metrics)
                touched: set[int] = set()
                with engines.applying():
                    for event in batch:
                        msg = event.message
                        part = engines.get(msg.partition)
                        if engines.applied(msg.partition, msg.topic, msg.offset):
                            # at-least-once: already applied before a crash or rebalance
                            self.metrics.redelivered.labels(msg.topic).inc()
                            continue
                        for source, value in await self._skipped_records(engines, msg):
                            self._apply(engines, part, handle, source, value, out)
                        self._apply(engines, part, handle, source_of(msg), event.value, out)
                        touched.add(msg.partition)
                        msg.incref()
                        engines.held.append(event)
                    await self._deliver(engines, touched, out)
                if time.monotonic() - engines.written_at >= self.state_write_interval_s:
                    await self._write_state(engines)
                self._count()
                m = self.metrics
                m.batch_seconds.labels(engines.kind).observe(time.perf_counter() - started)
                m.last_input.set(time.time())

    def _apply(self, engines: PartitionEngines, part: Any,
               handle: Callable[[Any, str | None, SourceRef, bytes], list[Any]],
               source: SourceRef, value: bytes, out: Outbox) -> None:
        engines.mark(cast(int, source.partition), source.topic, cast(int, source.offset))
        role = self.topics.roles.get(source.topic)
        self._process(source, value, partial(handle, part, role, source, value), out)

    async def _skipped_records(self, engines: PartitionEngines, msg: Any
                               ) -> list[tuple[SourceRef, bytes]]:
        """The records between the next offset partition ``msg.partition``'s state holds
        and ``msg``, read from the broker: Faust skipped them, and would commit past them.

        Measured (10-kill fault test, Faust's commit and gap bookkeeping logged): after a
        rebalance Faust resets its read offset to the committed one, but the fetcher
        resumes beyond the records it had delivered to the stream before the rebalance and
        then dropped; Faust books the offsets in between as a "gap" (as if they held no
        record -- transaction markers), counts them as acknowledged and commits past them.
        15-22 records per partition, in 5 of 10 restarts; a live rebalance does the same.
        Nothing of the kind is left to chance: the state's own offsets say what is missing.
        A read that fails is logged and counted (``delaywatch_input_skipped``)."""
        p, topic = msg.partition, msg.topic
        want = engines.offsets[p].get(topic)
        if want is None or msg.offset <= want:
            return []
        try:
            records = await asyncio.to_thread(read_range, self.settings, topic, p, want,
                                              msg.offset)
        except Exception as exc:  # the broker is unreachable: go on, loudly
            log.error("input_offsets_skipped", topic=topic, partition=p, expected=want,
                      got=msg.offset, error=repr(exc))
            self.metrics.skipped.labels(topic).inc(msg.offset - want)
            return []
        log.warning("input_offsets_refetched", topic=topic, partition=p, expected=want,
                    got=msg.offset, records=len(records))
        self.metrics.refetched.labels(topic).inc(len(records))
        out = []
        for r in records:
            key = r.key()
            ts_type, ts = r.timestamp()
            source = SourceRef(topic=topic, partition=p, offset=r.offset(),
                               timestamp_ms=ts if ts_type and ts >= 0 else None,
                               key=key.decode("utf-8", "replace") if key is not None else None)
            out.append((source, r.value()))
        return out

    def _shipment_record(self, part: ShipmentPartition, role: str | None, source: SourceRef,
                         value: bytes) -> list[Any]:
        if role == "stock_notices":
            return part.on_notice(value)
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
                async with engines.lock:
                    for p, part in list(engines.parts.items()):
                        clocks = part.engine.clocks
                        if not clocks:
                            continue
                        out = Outbox(self.producer, self.metrics)
                        with engines.applying():
                            outputs = part.engine.advance_to(max(clocks.values()) + idle_for)
                            self._emit(outputs, SourceRef(topic="<idle-advance>",
                                                          partition=p), None, out)
                            await self._deliver(engines, [p], out)
                    await self._write_state(engines)
                    self._count()

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
    def _count(self) -> None:
        for topic, n in self._counted.items():
            self.metrics.events.labels(topic).inc(n)
        self._counted.clear()
        for (kind, status), n in self._alerted.items():
            self.metrics.alerts.labels(kind, status).inc(n)
        self._alerted.clear()

    def _process(self, source: SourceRef, value: Any, handle: Callable[[], list[Any]],
                 out: Outbox, retry: RetryInfo | None = None) -> None:
        self._counted[source.topic] += 1
        self.last_input = time.monotonic()
        try:
            outputs = handle()
        except DecodeError as exc:
            self._dlq(exc.reason, exc.message, "decode", source, value, exc.event_id, out,
                      retry)
            return
        except Exception as exc:  # a bug must not stop the worker or lose the record
            self._failed(exc, source, value, out, retry)
            return
        self._emit(outputs, source, value, out)

    def _failed(self, exc: Exception, source: SourceRef, value: Any, out: Outbox,
                retry: RetryInfo | None) -> None:
        """Transient: to the next retry tier (or the DLQ when none is left); permanent: DLQ."""
        error = f"{type(exc).__name__}: {exc}"
        now = datetime.now(UTC)
        if not is_transient(exc):
            log.exception("processing_failed", topic=source.topic, partition=source.partition,
                          offset=source.offset, attempts=(retry.attempts + 1) if retry else 1)
            self._dlq("processing_error", error, "process", source, value, None, out, retry)
            return
        tier = next_tier(self.tiers, (retry.attempts + 1) if retry else 1)
        if tier is None:
            log.error("retries_exhausted", topic=source.topic, partition=source.partition,
                      offset=source.offset, error=error)
            self._dlq("retries_exhausted", error, "process", source, value, None, out, retry)
            return
        name, delay = tier
        info = (retry.failed_again(error, now, delay) if retry
                else RetryInfo.first(source, error, now, delay))
        log.warning("retry_scheduled", tier=name, attempts=info.attempts, topic=source.topic,
                    partition=source.partition, offset=source.offset, error=error)
        self.metrics.retries.labels(name).inc()
        topic = next(t for t, _ in self.topics.retry_tiers if t.get_topic_name() == name)
        out.add(topic, key=source.key, value=value, partition=source.partition,
                headers=info.headers())

    async def _retry(self, stream: faust.StreamT) -> None:
        """Records of the retry tiers, each processed again once due, by the engine of its
        source partition (tier records keep it; Faust assigns co-partitioned topics
        together). Waiting is wall-clock (a retry delay, not an event-time decision); a
        rebalance cuts it short rather than holding up the group."""
        async for event in stream.events():
            msg = event.message
            try:
                info = RetryInfo.from_headers(list(msg.headers or []))
            except (KeyError, ValueError) as exc:
                out = Outbox(self.producer, self.metrics)
                self._dlq("invalid_retry_record", f"missing retry header {exc}", "process",
                          source_of(msg), msg.value, None, out)
                await out.deliver()
                continue
            while (wait := info.due_at - time.time()) > 0 and not self.app.rebalancing:
                await asyncio.sleep(min(1.0, wait))
            role = self.topics.roles.get(info.source.topic)
            engines, handle = ((self.stock, self._stock_record)
                               if role in ("inventory", "order_lines")
                               else (self.shipments, self._shipment_record))
            p = msg.partition
            async with engines.lock:
                part = engines.get(p)
                if engines.applied(p, msg.topic, msg.offset):
                    self.metrics.redelivered.labels(msg.topic).inc()
                    continue
                with engines.applying():
                    engines.mark(p, msg.topic, msg.offset)
                    out = Outbox(self.producer, self.metrics)
                    self._process(info.source, msg.value,
                                  partial(handle, part, role, info.source, msg.value), out,
                                  info)
                    await self._deliver(engines, [p], out)
                await self._write_state(engines)
                self._count()

    def _emit(self, outputs: list[Any], source: SourceRef, value: Any, out: Outbox) -> None:
        origin_ms = source.timestamp_ms
        for o in outputs:
            if isinstance(o, Alert):
                self._alerted[(o.kind, o.status)] += 1
                topic = (self.topics.alerts_delay if o.category == "delay"
                         else self.topics.alerts_stock)
                out.add(topic, key=o.key, value=o.model_dump_json().encode(),
                        headers=provenance_headers(source))
            elif isinstance(o, Forward):
                # internal hop: keeps the original record's timestamp, so an alert's
                # ``dw-source-ts`` header is the time the shop's system produced the event
                topic = (self.topics.order_lines if o.role == "order_lines"
                         else self.topics.stock_notices)
                out.add(topic, key=o.key, value=orjson.dumps(o.value), partition=o.partition,
                        timestamp=origin_ms / 1000 if origin_ms else None)
            elif isinstance(o, Rejected):
                self._dlq(o.reason, o.error, "process", *rejected_source(o, source, value),
                          o.event_id, out)
            elif isinstance(o, ModelEvent):  # drift: to the model topic and the log
                log.warning("model_drift", **o.detail)
                out.add(self.topics.model, key=o.kind, value=orjson.dumps(
                    {"kind": o.kind, "at": o.at, "worker_pid": os.getpid(), **o.detail}))

    def _dlq(self, reason: str, error: str, stage: str, source: SourceRef, raw: Any,
             event_id: str | None, out: Outbox, retry: RetryInfo | None = None) -> None:
        self.metrics.dead_letters.labels(reason).inc()
        now = datetime.now(UTC)
        record = dead_letter(reason, error, stage, source,
                             raw if isinstance(raw, bytes) else None, event_id, now)
        if retry is not None:  # this failure ends a retried record: count every attempt
            record = record.model_copy(update={"attempts": retry.attempts + 1,
                                               "first_failure_at": retry.first_failure_at})
        log.warning("dead_letter", reason=reason, topic=source.topic,
                    partition=source.partition, offset=source.offset, event_id=event_id,
                    attempts=record.attempts)
        # a hostile key may be huge: the DLQ record keeps it whole, its Kafka key is cut
        key = source.key[:1024] if source.key else source.key
        out.add(self.topics.dlq, key=key, value=record.model_dump_json().encode())


def define_agents(app: faust.App, settings: Settings, thresholds: Thresholds, topics: Topics,
                  tables: Tables) -> Agents:
    return Agents(app, settings, thresholds, topics, tables)
