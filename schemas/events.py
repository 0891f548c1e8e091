"""Input events of wire contract v1 (orders, inventory, carrier-scans)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

EVENT_SCHEMA_VERSION = 1


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# strict: ISO-8601 strings in JSON only (a bare number is not silently read as epoch seconds)
UtcDatetime = Annotated[AwareDatetime, Field(strict=True), AfterValidator(_to_utc)]
"""An ISO-8601 timestamp that must carry an offset; stored in UTC."""

Id = Annotated[str, Field(min_length=1, max_length=128)]
Name = Annotated[str, Field(min_length=1, max_length=128)]
AttributeValue = Annotated[str, Field(max_length=256)] | float | int | bool


class _Event(BaseModel):
    # Unknown fields are tolerated and dropped (producers add fields before we do);
    # frozen because the core shares events between state snapshots.
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    event_id: Id
    occurred_at: UtcDatetime


class OrderEventType(StrEnum):
    ORDER_PLACED = "order_placed"
    PAYMENT_CONFIRMED = "payment_confirmed"
    ORDER_CANCELLED = "order_cancelled"
    ADDRESS_CHANGED = "address_changed"


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    sku: Id
    quantity: int = Field(gt=0, le=100_000)


class Customer(BaseModel):
    """Raw PII as order systems send it. Never copied into state, alerts or logs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str | None = None
    phone: str | None = None
    address: str | None = None


class OrderEvent(_Event):
    """An OMS event about one order (topic ``orders``, key ``order_id``)."""

    event_type: OrderEventType
    order_id: Id
    promised_at: UtcDatetime | None = None
    customer_ref: Name | None = None
    customer_tier: Name = "standard"
    warehouse_id: Name | None = None
    carrier: Name | None = None
    service_level: Name = "standard"
    origin_region: Name | None = None
    destination_region: Name | None = None
    lines: list[OrderLine] = Field(default_factory=list, max_length=500)
    order_value: float | None = Field(default=None, ge=0)
    attributes: dict[Annotated[str, Field(max_length=64)], AttributeValue] = Field(
        default_factory=dict, max_length=64
    )
    customer: Customer | None = Field(default=None, exclude=True, repr=False)


class InventoryEventType(StrEnum):
    STOCK_SNAPSHOT = "stock_snapshot"
    STOCK_RECEIVED = "stock_received"
    STOCK_PICKED = "stock_picked"
    STOCK_ADJUSTED = "stock_adjusted"
    STOCK_RESERVED = "stock_reserved"
    RESERVATION_RELEASED = "reservation_released"


class InventoryEvent(_Event):
    """A WMS or OMS stock event (topic ``inventory``, key ``warehouse_id:sku``).

    ``quantity`` is the counted level for snapshots, a signed delta for adjustments and a
    positive amount for every other type.
    """

    event_type: InventoryEventType
    warehouse_id: Name
    sku: Id
    quantity: int = Field(ge=-10_000_000, le=10_000_000)
    source: Literal["wms", "oms"]
    order_id: Id | None = None

    @property
    def stock_key(self) -> str:
        return f"{self.warehouse_id}:{self.sku}"


class ScanType(StrEnum):
    WAYBILL_CREATED = "waybill_created"
    PICKED_UP = "picked_up"
    ARRIVED_AT_HUB = "arrived_at_hub"
    DEPARTED_HUB = "departed_hub"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    DELIVERY_FAILED = "delivery_failed"
    EXCEPTION = "exception"
    RETURNED = "returned"


class ScanEvent(_Event):
    """A carrier (TMS) scan (topic ``carrier-scans``, key ``order_id``)."""

    tracking_number: Id
    order_id: Id
    carrier: Name
    scan_type: ScanType
    location: Annotated[str, Field(max_length=128)] | None = None
    carrier_eta: UtcDatetime | None = None


class StockNotice(BaseModel):
    """Internal: the stock table tells an order that one of its lines is short.

    Travels on ``delaywatch.stock-notices`` keyed by order_id, so it lands on the partition
    that owns the order's shipment state.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    notice_id: Id
    order_id: Id
    warehouse_id: Name
    sku: Id
    shortfall: int
    occurred_at: UtcDatetime
