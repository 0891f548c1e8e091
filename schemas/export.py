"""JSON Schema of every published message (pure: returns dicts, the CLI writes the files)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from delaywatch.schemas.acks import Ack
from delaywatch.schemas.alerts import Alert
from delaywatch.schemas.dlq import DeadLetter
from delaywatch.schemas.events import InventoryEvent, OrderEvent, ScanEvent

__all__ = ["SCHEMA_FILES", "json_schemas"]

SCHEMA_FILES: dict[str, type[BaseModel]] = {
    "orders.v1.json": OrderEvent,
    "inventory.v1.json": InventoryEvent,
    "carrier-scans.v1.json": ScanEvent,
    "alerts.v1.json": Alert,
    "dlq.v1.json": DeadLetter,
    "alerts.ack.v1.json": Ack,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema. ``customer`` (raw PII) is input-only and documented so."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in SCHEMA_FILES.items():
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://delaywatch.dev/schemas/{name}"
        out[name] = schema
    return out
