"""Input events of wire contract v1 (orders, inventory, carrier-scans)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

EVENT_SCHEMA_VERSION = 1
_NUMBER = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?")


def _iso_string(value: Any) -> Any:
    # ISO-8601 strings in JSON only: pydantic would read a bare number, or a string of
    # digits, as epoch seconds or milliseconds (guessed by size)
    if isinstance(value, datetime):  # built in Python, not read from the wire
        return value
    if not isinstance(value, str) or _NUMBER.fullmatch(value):
        raise PydanticCustomError("datetime_type", "Input should be an ISO-8601 date-time")
    return value


def _not_a_bool(value: Any) -> Any:
    # a Literal[1] takes true for 1 (True == 1 in Python)
    if isinstance(value, bool):
        raise PydanticCustomError("literal_error", "Input should be 1")
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset that leaves the calendar in UTC
        raise PydanticCustomError(
            "datetime_out_of_range", "Input is outside the calendar once converted to UTC"
        ) from None


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_string), AfterValidator(_to_utc)]
"""An ISO-8601 timestamp that must carry an offset; stored in UTC."""

Id = Annotated[str, Field(min_length=1, max_length=128)]
Name = Annotated[str, Field(min_length=1, max_length=128)]
AttributeValue = Annotated[str, Field(max_length=256)] | float | int | bool


class _Event(BaseModel):
    # Unknown fields are tolerated and dropped (producers add fields before we do);
    # frozen because the core shares events between state snapshots. NaN and Infinity are
    # not JSON numbers (and would be stored as null, which the state could not read back).
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    # numbers must be JSON numbers, here and below (strict): true, "2" or "1.5" are wrong
    # types, not values to coerce
    schema_version: Annotated[Literal[1], BeforeValidator(_not_a_bool)] = 1
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
    quantity: int = Field(gt=0, le=100_000, strict=True)


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
    order_value: float | None = Field(default=None, ge=0, strict=True)
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
    quantity: int = Field(ge=-10_000_000, le=10_000_000, strict=True)
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
    that owns the order's shipment state. The topic also carries each stock partition's
    heartbeats (``{"kind": "heartbeat", "origin": q, "clock": epoch_s}``) to every partition.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    notice_id: Id
    order_id: Id
    warehouse_id: Name
    sku: Id
    shortfall: int
    occurred_at: UtcDatetime
    origin: int = Field(0, ge=0)  # the stock partition that decided it
