"""Retry classification, tiers and the headers a retried record carries (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from delaywatch.core.retry import RetryInfo, TransientError, is_transient, next_tier
from delaywatch.schemas.dlq import SourceRef

TIERS = [("delaywatch.retry.1m", 60.0), ("delaywatch.retry.10m", 600.0)]


@pytest.mark.parametrize("exc, transient", [
    (TransientError("lookup timed out"), True),
    (TimeoutError(), True),
    (ConnectionResetError(), True),
    (ValueError("bad"), False),
    (KeyError("x"), False),
    (ZeroDivisionError(), False),
])
def test_only_transient_errors_are_retried(exc, transient):
    assert is_transient(exc) is transient


def test_tiers_in_order_then_exhausted():
    assert next_tier(TIERS, 1) == TIERS[0]
    assert next_tier(TIERS, 2) == TIERS[1]
    assert next_tier(TIERS, 3) is None
    assert next_tier([], 1) is None


def test_headers_round_trip_and_count_failures():
    t0 = datetime(2026, 5, 20, 9, 0, tzinfo=UTC)
    src = SourceRef(topic="orders", partition=2, offset=41, timestamp_ms=1_779_000_000_000,
                    key="O-1")
    first = RetryInfo.first(src, "TransientError: lookup timed out", t0, 60.0)
    assert first.due_at == t0.timestamp() + 60
    again = first.failed_again("TimeoutError: ", t0 + timedelta(minutes=1), 600.0)
    back = RetryInfo.from_headers(list(again.headers().items()))
    assert back == again
    assert (back.attempts, back.first_failure_at, back.last_failure_at) == (
        2, t0, t0 + timedelta(minutes=1))
    assert back.source == src


def test_a_record_without_retry_headers_is_refused():
    with pytest.raises(KeyError):
        RetryInfo.from_headers({"dw-source": b"orders/0/1"})
