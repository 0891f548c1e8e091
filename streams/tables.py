"""Tables: the changelogged state behind each partition's engine.

``shipment_state_table`` [order_id] and ``stock_state_table`` [warehouse_id:sku] hold one
pickled :class:`~delaywatch.core.engine.KeyState` per key; ``partition_clock_table``
[``shipment:p`` / ``stock:p``] holds each partition's stream clocks. All are written from
the partition that owns the key, so their changelogs restore onto the worker that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TableT

from delaywatch.config.settings import Settings

__all__ = ["Tables", "define_tables"]


@dataclass(frozen=True)
class Tables:
    shipments: TableT
    stock: TableT
    clocks: TableT


def define_tables(app: faust.App, settings: Settings) -> Tables:
    n = settings.topics.partitions

    def table(name: str) -> TableT:
        # value_type=bytes is what makes Faust use the raw codec for the changelog (a
        # ``schema=`` argument is ignored for that, and pickles then fail JSON decoding
        # during recovery); keys are JSON strings.
        return app.Table(name, default=None, partitions=n, key_type=str, value_type=bytes)

    return Tables(
        shipments=table("shipment-state"),
        stock=table("stock-state"),
        clocks=table("partition-clock"),
    )
