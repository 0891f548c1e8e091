"""Which processing failures are retried, where, and what a retried record carries.

A record whose processing raised a *transient* error goes to the first retry tier (a topic
with a delay: ``delaywatch.retry.1m``, ``delaywatch.retry.10m``), is processed again no
earlier than its due time, moves on to the next tier if it fails again, and goes to the DLQ
with every attempt counted when the tiers are exhausted. Any other error is permanent: DLQ at
once (retrying a deterministic core on the same input gives the same exception).

Pure: no I/O, times are passed in. The Faust layer moves the records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from delaywatch.schemas.dlq import SourceRef

__all__ = ["RetryInfo", "TransientError", "is_transient", "next_tier"]


class TransientError(Exception):
    """A failure that may pass when the same record is tried again later (a dependency that
    timed out, a resource briefly unavailable). Raise it -- or let a ``TimeoutError`` or
    ``ConnectionError`` escape -- to send the record through the retry tiers."""


_TRANSIENT: tuple[type[BaseException], ...] = (TransientError, TimeoutError, ConnectionError)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT)


def next_tier(tiers: Sequence[tuple[str, float]], failures: int
              ) -> tuple[str, float] | None:
    """The tier (topic, delay s) a record goes to after its ``failures``-th failure, or None
    when the tiers are exhausted (DLQ)."""
    return tiers[failures - 1] if 1 <= failures <= len(tiers) else None


_H = "dw-retry-"


@dataclass(frozen=True, slots=True)
class RetryInfo:
    """Where a retried record came from and how it fared; travels as record headers."""

    source: SourceRef
    attempts: int
    first_failure_at: datetime
    last_failure_at: datetime
    due_at: float  # epoch seconds: not to be processed before
    error: str

    @classmethod
    def first(cls, source: SourceRef, error: str, now: datetime, delay_s: float) -> RetryInfo:
        return cls(source, 1, now, now, now.timestamp() + delay_s, error)

    def failed_again(self, error: str, now: datetime, delay_s: float) -> RetryInfo:
        return replace(self, attempts=self.attempts + 1, last_failure_at=now,
                       due_at=now.timestamp() + delay_s, error=error)

    def headers(self) -> dict[str, bytes]:
        s = self.source
        raw = {
            "topic": s.topic, "partition": s.partition, "offset": s.offset,
            "timestamp-ms": s.timestamp_ms, "key": s.key, "attempts": self.attempts,
            "first-failure": self.first_failure_at.isoformat(),
            "last-failure": self.last_failure_at.isoformat(), "due": repr(self.due_at),
            "error": self.error[:500],
        }
        return {_H + k: str(v).encode() for k, v in raw.items() if v is not None}

    @classmethod
    def from_headers(cls, headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]]
                     ) -> RetryInfo:
        """Raises ``KeyError``/``ValueError`` for a record that is not a retry record."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        h = {k[len(_H):]: v.decode() for k, v in items if k.startswith(_H)}

        def opt_int(name: str) -> int | None:
            return int(h[name]) if name in h else None

        source = SourceRef(topic=h["topic"], partition=opt_int("partition"),
                           offset=opt_int("offset"), timestamp_ms=opt_int("timestamp-ms"),
                           key=h.get("key"))
        return cls(source, int(h["attempts"]),
                   datetime.fromisoformat(h["first-failure"]).astimezone(UTC),
                   datetime.fromisoformat(h["last-failure"]).astimezone(UTC),
                   float(h["due"]), h.get("error", ""))
