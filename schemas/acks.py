"""Acknowledgement schema v1 (topic ``alerts.ack``, key: the alert_id).

An ops tool sends one when a person takes an alert on: that alert_id then never escalates
(``delaywatch.core.escalation``). An ack covers the alert's whole episode; acking the same
alert twice is harmless, and an ack may arrive before its alert (it is kept for a while).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from delaywatch.schemas.events import UtcDatetime

__all__ = ["ACK_SCHEMA_VERSION", "Ack"]

ACK_SCHEMA_VERSION = 1


class Ack(BaseModel):
    # unknown fields are dropped (ops tools add fields before we do)
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    alert_id: Annotated[str, Field(min_length=1, max_length=128)]
    by: Annotated[str, Field(min_length=1, max_length=128)]  # who: a person or a tool
    at: UtcDatetime  # when it was acknowledged (ISO-8601 with an offset)
    note: Annotated[str, Field(max_length=1000)] | None = None
