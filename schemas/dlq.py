"""Dead-letter record (topic ``delaywatch.dlq``, a restricted topic: it keeps the original
bytes, PII included, so that records can be re-injected after a fix)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from delaywatch.schemas.events import UtcDatetime

DLQ_REASONS = (
    "undecodable",  # bytes are not UTF-8
    "invalid_json",  # not parseable JSON, or not a JSON object
    "missing_field",
    "unknown_enum",
    "schema_violation",  # wrong type, out of range, too long
    "impossible_timestamp",  # far future, or before the order was placed
    "key_mismatch",  # record key disagrees with the key the payload implies
    "conflicting_duplicate",  # an event_id already received, with other content
    "processing_error",  # the core raised on a valid event (a permanent error)
    "retries_exhausted",  # a transient error outlived every retry tier
    "invalid_retry_record",  # a record on a retry tier without its retry headers
)


class SourceRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None
    key: str | None = None


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    reason: str
    error: str
    stage: Literal["decode", "validate", "process"]
    source: SourceRef
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    event_id: str | None = None
    attempts: int = 1
    first_failure_at: UtcDatetime | None = None
    last_failure_at: UtcDatetime | None = None
