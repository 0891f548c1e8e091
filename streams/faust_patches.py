"""A fix for Faust's offset commits crawling after a restart (faust-streaming #596, #606).

When a worker starts with messages waiting, Faust can record "gaps" (offsets it believes it
never received) for offsets that are in fact delivered and acked. ``Consumer._new_offset``
then adds those offsets to the acked list a second time; the duplicates break its run of
consecutive offsets, and the committed offset advances by about one per commit interval.
Every later restart then re-processes thousands of messages. Measured here on Apache Kafka
(``tests/streams/test_worker_recovery.py`` catches it: offsets must reach the end): with
the fix, commits reach the end at once.

The fix removes from the gap set every offset already acked before ``_new_offset`` runs.
Applied once, by :func:`apply`, from ``create_app``.
"""

from __future__ import annotations

from typing import Any

import structlog
from faust.transport.consumer import Consumer

__all__ = ["apply"]

log = structlog.get_logger("delaywatch.faust_patches")
_APPLIED = "_delaywatch_gap_fix"


def _drop_acked_from_gaps(consumer: Any, tp: Any) -> None:
    gap = consumer._gap.get(tp)
    if not gap:
        return
    for offset in consumer._acked_index.get(tp, ()):
        if gap.overlaps(offset):
            gap.chop(offset, offset + 1)


def apply() -> None:
    if getattr(Consumer, _APPLIED, False):
        return
    if not all(hasattr(Consumer, a) for a in ("_new_offset", "_add_gap")):
        log.warning("faust_gap_fix_not_applied", reason="Faust's Consumer changed")
        return
    original = Consumer._new_offset

    def _new_offset(self: Any, tp: Any) -> int | None:
        _drop_acked_from_gaps(self, tp)
        return original(self, tp)

    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    setattr(Consumer, _APPLIED, True)
