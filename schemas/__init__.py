"""Wire contract v1 of delaywatch: pure pydantic models, no I/O, no Faust.

Inputs (JSON values on Kafka topics, keys in brackets):
  ``orders`` [order_id]            -> :class:`OrderEvent`
  ``inventory`` [warehouse_id:sku] -> :class:`InventoryEvent`
  ``carrier-scans`` [order_id]     -> :class:`ScanEvent`
Outputs:
  ``alerts.delay`` [order_id], ``alerts.stock`` [warehouse_id:sku] -> :class:`Alert`
  ``delaywatch.dlq`` [source key]  -> :class:`DeadLetter`
  ``alerts.escalation`` [alert key] -> :class:`Alert` (escalation copies)
Operations input:
  ``alerts.ack`` [alert_id]        -> :class:`Ack`

Every timestamp is ISO-8601 with an offset and is normalised to UTC. Unknown fields are
ignored; unknown enum values, missing fields and wrong types fail validation (and go to the DLQ).
``delaywatch schemas --out schemas/json`` exports the JSON Schema of each model.
"""

from delaywatch.schemas.acks import ACK_SCHEMA_VERSION, Ack
from delaywatch.schemas.alerts import (
    ALERT_SCHEMA_VERSION,
    Alert,
    AlertStatus,
    Audience,
    Cause,
    Compensation,
    Severity,
    alert_id_for,
)
from delaywatch.schemas.dlq import DeadLetter, SourceRef
from delaywatch.schemas.events import (
    EVENT_SCHEMA_VERSION,
    Customer,
    InventoryEvent,
    InventoryEventType,
    OrderEvent,
    OrderEventType,
    OrderLine,
    ScanEvent,
    ScanType,
    StockNotice,
)

__all__ = [
    "ACK_SCHEMA_VERSION",
    "ALERT_SCHEMA_VERSION",
    "EVENT_SCHEMA_VERSION",
    "Ack",
    "Alert",
    "AlertStatus",
    "Audience",
    "Cause",
    "Compensation",
    "Customer",
    "DeadLetter",
    "InventoryEvent",
    "InventoryEventType",
    "OrderEvent",
    "OrderEventType",
    "OrderLine",
    "ScanEvent",
    "ScanType",
    "Severity",
    "SourceRef",
    "StockNotice",
    "alert_id_for",
]
