"""The topology's dead letters: they always fit a Kafka record, and a record time no calendar
holds does not stop a replay (found by the bad input fuzz, ``tests/core/test_fuzz_core.py``)."""

from __future__ import annotations

import pytest

from delaywatch.core.decode import MAX_PAYLOAD_BYTES
from delaywatch.core.pipeline import Topology, dead_letter
from delaywatch.dlq import original_bytes
from delaywatch.schemas.dlq import SourceRef

KAFKA_RECORD_LIMIT = 1_048_576  # the broker's and producers' default
SOURCE = SourceRef(topic="orders", partition=0, offset=7, key="O-1")


def wire_size(raw: bytes) -> int:
    return len(dead_letter("invalid_json", "bad", "decode", SOURCE, raw).model_dump_json())


@pytest.mark.parametrize("raw", [
    b"\x01" * 250_000,  # control characters: 6 bytes each as JSON text (1.5 MB)
    b'"' * 250_000,
    b"\xff\xfe" * 450_000,  # not UTF-8, under Kafka's limit on the way in: base64 is 4/3
    b"x" * 1_000_000,
    "가".encode() * 300_000,
], ids=["control", "quotes", "binary", "ascii", "hangul"])
def test_a_dead_letter_always_fits_a_kafka_record(raw) -> None:
    assert wire_size(raw) < KAFKA_RECORD_LIMIT // 2


def test_a_payload_within_the_size_limit_is_kept_whole() -> None:
    for raw in (b'{"event_id": "e1"}', b"\x01" * 1000, b"\xff" * 10, "가나다".encode()):
        record = dead_letter("invalid_json", "bad", "decode", SOURCE, raw)
        assert original_bytes(record.model_dump(mode="json")) == raw
    readable = dead_letter("invalid_json", "bad", "decode", SOURCE, b'{"a": "b", "c": 1')
    assert readable.payload_encoding == "utf-8"
    assert dead_letter("invalid_json", "bad", "decode", SOURCE,
                       b"\x01" * 1000).payload_encoding == "base64"


def test_a_payload_refused_for_its_size_is_kept_cut_and_says_so() -> None:
    raw = b"x" * (MAX_PAYLOAD_BYTES + 10)
    record = dead_letter("schema_violation", "too big", "decode", SOURCE, raw)
    assert original_bytes(record.model_dump(mode="json")) == raw[:MAX_PAYLOAD_BYTES]
    assert record.error.startswith("too big (payload cut to its first")
    assert str(len(raw)) in record.error


@pytest.mark.parametrize("ts", [10**17, -(10**17)])
def test_a_record_time_no_calendar_holds_still_gets_its_dead_letter(make_settings,
                                                                     thresholds, ts) -> None:
    topo = Topology(make_settings(partitions=1), thresholds)
    source = SourceRef(topic="orders", partition=0, offset=0, timestamp_ms=ts, key="O-1")
    [letter] = topo.feed("orders", "O-1", b"not json", source)
    assert letter.reason == "invalid_json" and letter.first_failure_at is None
