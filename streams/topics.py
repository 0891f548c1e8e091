"""Topic declarations. Values travel as raw bytes: the core's decoder validates them, so a bad
record becomes a dead letter instead of a Faust deserialisation crash."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from delaywatch.config.settings import Settings

__all__ = ["Topics", "define_topics"]


@dataclass(frozen=True)
class Topics:
    shipment_inputs: faust.TopicT  # orders + carrier-scans + stock-notices, keyed by order_id
    stock_inputs: faust.TopicT  # inventory + order-lines, keyed by warehouse_id:sku
    order_lines: faust.TopicT
    stock_notices: faust.TopicT
    alerts_delay: faust.TopicT
    alerts_stock: faust.TopicT
    dlq: faust.TopicT
    model: faust.TopicT  # model events (drift, checkpoint, restore), one partition
    retry_tiers: list[tuple[faust.TopicT, float]]  # (topic, delay s), in order
    retries: faust.TopicT | None  # every tier, consumed by the retry agent
    roles: dict[str, str]  # topic name -> role of the record in the core


def define_topics(app: faust.App, settings: Settings) -> Topics:
    t = settings.topics
    n = t.partitions

    def topic(*names: str, partitions: int | None = n) -> faust.TopicT:
        return app.topic(*names, key_type=str, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=partitions)

    return Topics(
        shipment_inputs=topic(t.orders, t.scans, t.stock_notices),
        stock_inputs=topic(t.inventory, t.order_lines),
        order_lines=topic(t.order_lines),
        stock_notices=topic(t.stock_notices),
        alerts_delay=topic(t.alerts_delay),
        alerts_stock=topic(t.alerts_stock),
        dlq=topic(t.dlq),
        model=topic(t.model, partitions=1),
        retry_tiers=[(topic(name), delay) for name, delay in t.retry_tiers],
        retries=topic(*(name for name, _ in t.retry_tiers)) if t.retry_tiers else None,
        roles={t.orders: "orders", t.scans: "scans", t.inventory: "inventory",
               t.order_lines: "order_lines", t.stock_notices: "stock_notices"},
    )
