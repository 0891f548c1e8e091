"""Features of an order at scoring time: only what is known then, learned generically.

Numbers stay numbers; strings become one-hot indicators ``name=value`` (so any carrier,
region, warehouse or free-form attribute a shop sends is learned without a schema change).
The stream's own online aggregates (recent late rate per carrier/lane/warehouse, warehouse
backlog, order-rate surge) live in :class:`Aggregates`, one per partition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from delaywatch.core.state import ShipmentState, Stage

__all__ = ["Aggregates", "order_features"]

H = 3600.0
LATE_RATE_ALPHA = 0.03  # weight of each new outcome in a late-rate average
PRIOR_LATE_RATE = 0.05


@dataclass(slots=True)
class Aggregates:
    """Online aggregates the stream keeps about itself (event time only)."""

    late_rate: dict[str, float] = field(default_factory=dict)  # "carrier:CJ" -> ewma
    backlog: dict[str, int] = field(default_factory=dict)  # warehouse -> paid, not picked up
    rate_fast: float = 0.0  # orders, decaying with a 1 h time constant
    rate_slow: float = 0.0  # orders, decaying with a 24 h time constant
    rate_at: float | None = None

    def scopes(self, s: ShipmentState) -> list[str]:
        return [f"carrier:{s.carrier}", f"lane:{s.origin_region}>{s.destination_region}",
                f"warehouse:{s.warehouse_id}"]

    def record_outcome(self, s: ShipmentState, late: bool) -> None:
        for scope in self.scopes(s):
            old = self.late_rate.get(scope, PRIOR_LATE_RATE)
            self.late_rate[scope] = old + LATE_RATE_ALPHA * (float(late) - old)

    def record_order(self, at: float) -> None:
        if self.rate_at is not None and at > self.rate_at:
            dt = at - self.rate_at
            self.rate_fast *= math.exp(-dt / H)
            self.rate_slow *= math.exp(-dt / (24 * H))
        self.rate_at = at if self.rate_at is None else max(self.rate_at, at)
        self.rate_fast += 1.0
        self.rate_slow += 1.0

    def load_ratio(self) -> float:
        """Order rate of the last hour against the last day's hourly average (1 = normal)."""
        return self.rate_fast / max(self.rate_slow / 24.0, 1.0)

    def backlog_change(self, warehouse: str | None, delta: int) -> None:
        if warehouse is not None:
            self.backlog[warehouse] = max(0, self.backlog.get(warehouse, 0) + delta)


def order_features(s: ShipmentState, at: float, agg: Aggregates, tz: ZoneInfo
                   ) -> dict[str, float]:
    """A flat numeric dict for river; deterministic for a given state and time."""
    x: dict[str, float] = {}
    placed = s.placed_at if s.placed_at is not None else at
    x["h_since_order"] = (at - placed) / H
    if s.promised_at is not None:
        x["h_to_promise"] = (s.promised_at - at) / H
        x["promise_span_h"] = (s.promised_at - placed) / H
    last = s.last_scan_at if s.last_scan_at is not None else (s.paid_at or placed)
    x["h_since_progress"] = (at - last) / H
    x["scans"] = float(s.scans)
    x["stage_rank"] = float(s.stage)
    x["basket_qty"] = float(sum(q for _, q in s.lines))
    x["lines"] = float(len(s.lines))
    if s.order_value is not None:
        x["log_value"] = math.log1p(s.order_value)
    x["stock_short"] = 1.0 if s.shortages else 0.0
    x["exception_open"] = 1.0 if s.exception_open else 0.0
    if s.carrier_eta is not None and s.promised_at is not None:
        x["eta_minus_promise_h"] = (s.carrier_eta - s.promised_at) / H
    local = datetime.fromtimestamp(placed, tz)
    x[f"order_hour={local.hour}"] = 1.0
    x[f"order_weekday={local.weekday()}"] = 1.0
    if s.paid_at is not None:
        x[f"paid_hour={datetime.fromtimestamp(s.paid_at, tz).hour}"] = 1.0
    for name, value in (("stage", s.stage.label), ("carrier", s.carrier),
                        ("service", s.service_level), ("warehouse", s.warehouse_id),
                        ("tier", s.customer_tier),
                        ("lane", f"{s.origin_region}>{s.destination_region}"),
                        ("dest", s.destination_region),
                        # carriers differ per destination: give the linear model the pair
                        ("carrier_dest", f"{s.carrier}>{s.destination_region}")):
        if value is not None:
            x[f"{name}={value}"] = 1.0
    for scope in agg.scopes(s):
        x[f"late_rate[{scope.split(':')[0]}]"] = agg.late_rate.get(scope, PRIOR_LATE_RATE)
    x["backlog_wh"] = float(agg.backlog.get(s.warehouse_id or "", 0))
    x["load_ratio"] = agg.load_ratio()
    for key, value in s.attributes.items():
        if isinstance(value, bool):
            x[f"attr.{key}"] = float(value)
        elif isinstance(value, int | float):
            if math.isfinite(value):
                x[f"attr.{key}"] = float(value)
        else:
            x[f"attr.{key}={value}"] = 1.0
    if s.stage >= Stage.DELIVERED:
        x["delivered"] = 1.0
    return x
