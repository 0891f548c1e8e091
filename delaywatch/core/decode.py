"""The edge: raw Kafka bytes -> a validated event, or a reason why not (for the DLQ)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from pydantic import BaseModel, ValidationError

from delaywatch.schemas.events import InventoryEvent, OrderEvent, ScanEvent

__all__ = ["EVENT_MODELS", "MAX_PAYLOAD_BYTES", "DecodeError", "decode", "expected_key"]

EVENT_MODELS: dict[str, type[BaseModel]] = {
    "orders": OrderEvent,
    "inventory": InventoryEvent,
    "scans": ScanEvent,
}
MAX_PAYLOAD_BYTES = 256 * 1024
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_TIMESTAMPS = {"orders": ("occurred_at", "promised_at"), "inventory": ("occurred_at",),
               "scans": ("occurred_at", "carrier_eta")}


class DecodeError(Exception):
    def __init__(self, reason: str, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.event_id = event_id


def _classify(err: ValidationError) -> tuple[str, str]:
    first = err.errors(include_url=False)[0]
    kind = first["type"]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    if kind == "missing":
        return "missing_field", f"missing field {where!r}"
    if kind in ("enum", "literal_error"):
        return "unknown_enum", f"{where}: {first['msg']} (got {first.get('input')!r:.80})"
    if kind == "json_invalid":
        return "invalid_json", f"invalid JSON: {first['msg']}"
    if kind == "datetime_out_of_range":
        return "impossible_timestamp", f"{where}: {first['msg']} (got {first.get('input')!r:.80})"
    return "schema_violation", f"{where}: {first['msg']}"


def _why_not_json(raw: bytes) -> tuple[str, str] | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return "undecodable", f"payload is not UTF-8: {exc}"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return "invalid_json", f"invalid JSON: {exc}"
    if not isinstance(obj, dict):
        return "invalid_json", f"expected a JSON object, got {type(obj).__name__}"
    return None


def _event_id(raw: bytes) -> str | None:
    """Best effort, for the dead letter: the event_id of a payload that failed validation."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    value = obj.get("event_id") if isinstance(obj, dict) else None
    return value[:128] if isinstance(value, str) else None


def expected_key(role: str, event: BaseModel) -> str:
    if role == "inventory":
        assert isinstance(event, InventoryEvent)
        return event.stock_key
    order_id: str = event.order_id  # type: ignore[attr-defined]
    return order_id


def decode(role: str, raw: bytes | None, key: str | bytes | None,
           received_ms: int | None = None, max_future_s: float = 3 * 86400.0) -> BaseModel:
    """Validate one record of an input topic; raise :class:`DecodeError` with a DLQ reason.

    ``received_ms`` is the record's own timestamp (Kafka's, or ``ts`` in a file): an event
    cannot be reported ``max_future_s`` before it happens.
    """
    if raw is None or raw == b"":
        raise DecodeError("invalid_json", "empty payload (tombstone on an input topic)")
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise DecodeError("schema_violation", f"payload of {len(raw)} bytes exceeds the limit")
    try:
        event = EVENT_MODELS[role].model_validate_json(raw)
    except ValidationError as exc:
        reason, message = _classify(exc)
        if reason == "invalid_json" or exc.errors()[0]["type"] == "model_type":
            reason, message = _why_not_json(raw) or (reason, message)
        raise DecodeError(reason, message, _event_id(raw)) from None
    event_id = event.event_id  # type: ignore[attr-defined]
    occurred: datetime = event.occurred_at  # type: ignore[attr-defined]
    # every timestamp: a promise in 1970 is broken at once, an ETA in 9999 never comes
    for name in _TIMESTAMPS[role]:
        when: datetime | None = getattr(event, name)
        if when is not None and not _EARLIEST <= when < _LATEST:
            raise DecodeError("impossible_timestamp", f"{name} {when.isoformat()} is out of "
                              "range", event_id)
    if received_ms is not None and occurred.timestamp() > received_ms / 1000 + max_future_s:
        ahead_h = (occurred.timestamp() - received_ms / 1000) / 3600
        raise DecodeError("impossible_timestamp", f"occurred_at {occurred.isoformat()} is "
                          f"{ahead_h:.0f} h after the record was sent (limit "
                          f"{max_future_s / 3600:.0f} h)", event_id)
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            key = repr(key)
    want = expected_key(role, event)
    if key != want:
        raise DecodeError("key_mismatch", f"record key {key!r} but the payload belongs to "
                          f"{want!r}: it would be joined on the wrong partition", event_id)
    return event
