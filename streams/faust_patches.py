"""Four changes to Faust's Kafka clients, applied once by :func:`apply` from ``create_app``.

**Idempotent producer.** Faust turns on aiokafka's ``enable_idempotence`` only inside
transactions (its exactly-once mode, which we do not use). Outside them a retried send can
be written twice, or out of order within a partition -- for a changelog that would restore
stale state. Every producer of delaywatch is idempotent with ``acks=all`` -- unless
``kafka.idempotent_producer`` is off: Tansu, the pip-only fallback broker, refuses aiokafka's
``InitProducerId`` request (measured), so the demo turns it off there.

**Commit crawl (faust-streaming #596, #606).**

When a worker starts with messages waiting, Faust can record "gaps" (offsets it believes it
never received) for offsets that are in fact delivered and acked. ``Consumer._new_offset``
then adds those offsets to the acked list a second time; the duplicates break its run of
consecutive offsets, and the committed offset advances by about one per commit interval.
Every later restart then re-processes thousands of messages. Measured here on Apache Kafka
(``tests/streams/test_worker_recovery.py`` catches it: offsets must reach the end): with
the fix, commits reach the end at once.

The fix removes from the gap set every offset already acked before ``_new_offset`` runs.

**Offsets the state holds count as acknowledged** (:func:`count_state_as_acked`). After a
rebalance Faust's fetch loop can read records (its read offset moves past them) that never
reach the stream: they are never acked and no gap covers them. ``_new_offset`` then finds
the acked offsets starting beyond the committed one and returns ``None`` at every commit,
for good: the partition's offsets never move again. Measured: CI, ``inventory/0`` 3,922
records behind 30 s after the last output; a loop of the kill -9 test, 2 runs in 6,
``committed 3073, acked from 3084``, no gap. The worker knows better than Faust's
bookkeeping what is done: its state records, per input partition, the next offset whose
effects are not yet all on the broker (``Agents._skipped_records`` reads back what Faust
skipped). Before each commit every offset below that one is acked, as Faust would have had
the records reached the stream -- whether the stream ever saw them or not.

**Held events are settled before Faust waits for them** (:func:`before_wait_empty`). The
worker keeps each applied event unacked until its key's state is written (once per
state-write interval). Before a rebalance and at shutdown Faust waits until every started
message is acked (``Consumer.wait_empty``): without the hook a SIGTERM waited forever (the
worker's timers are stopped by then) and was ended by SIGKILL (measured: 30 s). The hook
writes the state, which acks what it holds -- every half second while Faust waits, since a
batch already fetched can still be applied meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["ack_offsets", "apply", "before_wait_empty", "count_state_as_acked", "release"]

log = structlog.get_logger("delaywatch.faust_patches")
_APPLIED = "_delaywatch_gap_fix"
_WAIT_APPLIED = "_delaywatch_wait_empty_hook"


def _drop_acked_from_gaps(consumer: Any, tp: Any) -> None:
    gap = consumer._gap.get(tp)
    if not gap:
        return
    for offset in consumer._acked_index.get(tp, ()):
        if gap.overlaps(offset):
            gap.chop(offset, offset + 1)


def ack_offsets(consumer: Any, tp: Any, offsets: Any) -> int:
    """Acknowledge ``offsets`` of ``tp`` in Faust's bookkeeping, as ``Consumer.ack`` does for
    a message (offsets below the committed one or already acked are left alone); how many
    were new. Only for records whose effects are on the broker."""
    committed = consumer._committed_offset[tp]
    index, acked = consumer._acked_index[tp], consumer._acked[tp]
    new = 0
    for offset in offsets:
        if (committed is None or offset >= committed) and offset not in index:
            index.add(offset)
            acked.append(offset)
            new += 1
    return new


# () -> {TP: next offset whose effects are not all on the broker}, set by the worker
_HELD: list[Callable[[], Mapping[Any, int]] | None] = [None]


def count_state_as_acked(held: Callable[[], Mapping[Any, int]] | None) -> None:
    """Before each commit, ack every offset of a partition below ``held()[tp]`` (``None``:
    stop). Only offsets whose effects -- outputs, state, the state's offsets -- are on the
    broker may be in ``held``."""
    _HELD[0] = held


def _ack_held(consumer: Any) -> list[Any]:
    """The partitions where offsets the state holds were not yet acked, now acked."""
    held = _HELD[0]
    if held is None:
        return []
    filled = []
    for tp, nxt in held().items():
        committed = consumer._committed_offset.get(tp)
        # never committed: Faust commits past a hole at the head by itself
        if committed is not None and nxt > committed and ack_offsets(
                consumer, tp, range(committed, nxt)):
            filled.append(tp)
    return filled


def _patch_once(cls: Any, marker: str, wraps: tuple[str, ...], warning: str,
                install: Callable[[], None]) -> None:
    """Run ``install`` (which wraps methods of ``cls``) once per process, and only while
    ``cls`` still has every method in ``wraps``: a Faust upgrade that renames them logs
    ``warning`` and runs unpatched rather than failing at start-up."""
    if getattr(cls, marker, False):
        return
    if not all(hasattr(cls, name) for name in wraps):
        log.warning(warning, reason=f"Faust's {cls.__name__} changed")
        return
    install()
    setattr(cls, marker, True)


def _idempotent_producer() -> None:
    producer = faust_aiokafka.Producer

    def install() -> None:
        original = producer._settings_extra

        def _settings_extra(self: Any) -> Any:
            extra = {**original(self), "acks": "all"}
            if _IDEMPOTENT[0]:
                extra["enable_idempotence"] = True
            return extra

        producer._settings_extra = _settings_extra  # type: ignore[method-assign]

    _patch_once(producer, _APPLIED, ("_settings_extra",), "faust_idempotence_not_applied",
                install)


_IDEMPOTENT = [True]

# () -> awaitable run before Consumer.wait_empty (a rebalance, a shutdown), set by the worker
_BEFORE_WAIT_EMPTY: list[Callable[[], Awaitable[None]] | None] = [None]


def before_wait_empty(hook: Callable[[], Awaitable[None]] | None) -> None:
    """Run ``hook`` each time Faust is about to wait for every started message to be acked
    (``None``: stop)."""
    _BEFORE_WAIT_EMPTY[0] = hook


def _settle_before_wait_empty() -> None:
    def install() -> None:
        original = Consumer.wait_empty

        async def wait_empty(self: Any) -> None:
            hook = _BEFORE_WAIT_EMPTY[0]
            if hook is None:
                await original(self)
                return

            async def settle() -> None:
                while True:
                    await hook()
                    await asyncio.sleep(0.5)

            settling = asyncio.ensure_future(settle())
            try:
                await original(self)
            finally:
                settling.cancel()

        Consumer.wait_empty = wait_empty  # type: ignore[method-assign]

    _patch_once(Consumer, _WAIT_APPLIED, ("wait_empty",), "faust_wait_empty_hook_not_applied",
                install)


def release(message: Any) -> None:
    """Stop Faust waiting for ``message`` without counting its offset as done: it is
    delivered again after a restart (a batch cut short by a shutdown)."""
    message.acked = True


def _commit_fixes() -> None:
    def install() -> None:
        original = Consumer._new_offset

        def _new_offset(self: Any, tp: Any) -> int | None:
            _drop_acked_from_gaps(self, tp)
            return original(self, tp)

        Consumer._new_offset = _new_offset  # type: ignore[method-assign]
        filter_committable = Consumer._filter_committable_offsets

        def _filter_committable_offsets(self: Any, tps: Any) -> Any:
            return filter_committable(self, {*tps, *_ack_held(self)})

        Consumer._filter_committable_offsets = _filter_committable_offsets  # type: ignore[method-assign]

    _patch_once(Consumer, _APPLIED, ("_new_offset", "_add_gap", "_filter_committable_offsets"),
                "faust_gap_fix_not_applied", install)


def apply(idempotent_producer: bool = True) -> None:
    _IDEMPOTENT[0] = idempotent_producer
    _idempotent_producer()
    _settle_before_wait_empty()
    _commit_fixes()
