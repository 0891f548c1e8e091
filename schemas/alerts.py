"""Alert schema v1 (topics ``alerts.delay`` and ``alerts.stock``).

Contract for notifier services: ``alert_id`` is stable across re-runs and restarts
(a hash of key, kind and episode). Each (key, kind) has at most one open episode; ``updated``
is sent when severity changes, and for customer-facing kinds when the order's stage or the
carrier's ETA changed (an ETA/stage-change notice: reason code ``stage_changed`` /
``eta_changed``, ``evidence.notice`` numbers it within the episode), and for
``reservation_not_released`` when the orders it lists changed (reason code
``held_orders_changed``, numbered the same way); ``resolved`` closes the
episode. A later recurrence is a new episode with a new alert_id. One message's identity is
(alert_id, status, severity, ``evidence.notice``, ``evidence.escalation.level``)
(``delaywatch.notify.DeliveredStore.key``): a consumer that remembers the identities it has
delivered is exactly-once.

``audience`` names the team that acts (``delaywatch.models.audience``: customer-facing delay
kinds -> cs, process and stock kinds -> logistics, system kinds -> admin). It was added within
v1, so it is optional: a consumer that finds it absent derives it from ``kind`` with
:func:`delaywatch.models.audience.audience_for`.

Escalation copies (topic ``alerts.escalation``, ``delaywatch escalate``) are this schema too:
the alert's latest message with status ``updated``, severity one step up (capped at
critical) and ``evidence.escalation = {level, after_s, from_severity, since}``; they keep the
alert_id, and a notifier tells them apart by that level (``DeliveredStore.key``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from delaywatch.schemas.events import UtcDatetime

ALERT_SCHEMA_VERSION = 1


class AlertStatus(StrEnum):
    OPEN = "open"
    UPDATED = "updated"
    RESOLVED = "resolved"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Cause(StrEnum):
    """Why a delay alert's order is late or at risk: the first step of the pipeline that
    overran (``delaywatch.models.causes``). Consumers must accept values added later."""

    STOCK_SHORTAGE = "stock_shortage"
    PICKING_BACKLOG = "picking_backlog"
    WAYBILL_MISSING = "waybill_missing"
    HANDOVER_MISSED = "handover_missed"
    CARRIER_DELAY = "carrier_delay"
    FEED_OUTAGE = "feed_outage"
    ADDRESS_ISSUE = "address_issue"
    UNKNOWN = "unknown"


class ProcessStage(StrEnum):
    """The furthest step an order has reached, on every delay alert (``stage``):
    order (placed) -> stock_check (paid; held here while a line is short) -> pick_pack
    (paid, stock not short) -> waybill (label issued) -> handover (picked up by the carrier)
    -> in_transit (hub scans) -> out_for_delivery -> delivered; or cancelled / returned.
    Consumers must accept values added later."""

    ORDER = "order"
    STOCK_CHECK = "stock_check"
    PICK_PACK = "pick_pack"
    WAYBILL = "waybill"
    HANDOVER = "handover"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    RETURNED = "returned"


class Audience(StrEnum):
    """The team that acts on an alert."""

    CS = "cs"                # customer service: tell or compensate the customer
    LOGISTICS = "logistics"  # warehouse, carrier and stock operations
    ADMIN = "admin"          # the people who run delaywatch itself


SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class Compensation(BaseModel):
    """What the compensation policy (``config/thresholds.yaml``) grants for a broken promise."""

    model_config = ConfigDict(frozen=True)

    kind: str
    amount_krw: int
    reason: str
    # added within v1 (absent from records written before): the policy rule that chose it,
    # and until when the coupon is valid
    rule: str | None = None
    expires_at: UtcDatetime | None = None


class Risk(BaseModel):
    """Filled by the learned models (issue #4); null from the rule detectors."""

    model_config = ConfigDict(frozen=True)

    p_late: float
    eta_p50: datetime | None = None
    eta_p90: datetime | None = None
    model: str
    top_features: list[str] = Field(default_factory=list)


def alert_id_for(key: str, kind: str, episode: int) -> str:
    """Deterministic id: the same incident yields the same id in every run.

    >>> alert_id_for("O-1", "waybill_missing", 1)
    'al-...'
    """
    digest = hashlib.blake2b(f"{key}|{kind}|{episode}".encode(), digest_size=10).hexdigest()
    return f"al-{digest}"


class Alert(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    alert_id: str
    status: AlertStatus
    # "system": delaywatch's own health, feed outages and incidents; on alerts.system only
    # (added within v1)
    category: Literal["delay", "stock", "system"]
    kind: str
    key: str
    episode: int
    severity: Severity
    reason_codes: list[str]
    evidence: dict[str, Any]
    detected_at: UtcDatetime
    order_id: str | None = None
    warehouse_id: str | None = None
    sku: str | None = None
    carrier: str | None = None
    # delay alerts: a ProcessStage value (kept a string in v1: values may be added)
    stage: str | None = None
    promised_at: UtcDatetime | None = None
    customer_ref: str | None = None
    customer_tier: str | None = None
    message_ko: str | None = None
    message_en: str | None = None
    compensation_suggested: Compensation | None = None
    risk: Risk | None = None
    # delay alerts: why (added within v1: optional, absent from records written before it)
    cause: Cause | None = None
    # who acts (added within v1: optional; absent -> audience_for(kind, category))
    audience: Audience | None = None
