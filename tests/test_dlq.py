"""DLQ tools without a broker: masking and summaries."""

from __future__ import annotations

import base64

import orjson

from delaywatch.dlq import dlq_frame, mask_payload, original_bytes, summarize


def _dead(payload: dict | bytes, reason: str = "unknown_enum") -> dict:
    if isinstance(payload, bytes):
        return {"reason": reason, "stage": "decode", "error": "x", "payload_encoding": "base64",
                "payload": base64.b64encode(payload).decode(), "source": {"topic": "orders"}}
    return {"reason": reason, "stage": "decode", "error": "bad enum", "payload_encoding": "utf-8",
            "payload": orjson.dumps(payload).decode(), "source": {"topic": "orders"}}


def test_mask_hides_customer_block_and_phone_numbers():
    rec = _dead({"order_id": "O-1", "customer": {"name": "김민준", "phone": "010-1234-5678"},
                 "attributes": {"note": "call 010-9876-5432"}})
    masked = mask_payload(rec)
    assert "김민준" not in masked and "010-1234-5678" not in masked and "9876" not in masked
    assert "O-1" in masked


def test_original_bytes_round_trip_for_undecodable_payloads():
    raw = b"\xff\xfe{broken"
    assert original_bytes(_dead(raw, "undecodable")) == raw
    assert "***" not in mask_payload(_dead(raw, "undecodable"))


def test_summary_and_frame():
    recs = [_dead({"a": 1}), _dead({"a": 2}), _dead(b"\xff", "undecodable")]
    s = summarize(recs)
    assert s["by_reason"] == {"unknown_enum": 2, "undecodable": 1}
    assert len(s["samples"]["unknown_enum"]) == 2
    df = dlq_frame(recs)
    assert list(df["reason"]) == ["unknown_enum", "unknown_enum", "undecodable"]


def test_mask_also_covers_broken_json():
    text = '{"order_id": "O-1", "customer": {"name": "김민준", "phone": "010-1234-5678"}, "x'
    rec = {"payload_encoding": "utf-8", "payload": text}
    masked = mask_payload(rec)
    assert "김민준" not in masked and "1234" not in masked and "O-1" in masked
    cut = {"payload_encoding": "utf-8", "payload": '{"customer": {"name": "김민'}
    assert "김민" not in mask_payload(cut)
