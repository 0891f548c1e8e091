"""Features of an order at scoring time: only what is known then, learned generically.

Numbers stay numbers; strings become one-hot indicators ``name=value`` (so any carrier,
region, warehouse or free-form attribute a shop sends is learned without a schema change).
The stream's own online aggregates (recent late rate per carrier/lane/warehouse relative to
the overall one, a smoothed late rate per category value, warehouse backlog, order-rate
surge) live in :class:`Aggregates`, one per partition.
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
ALL = "all"  # the late-rate scope every order is in
# Late rate per category value (target statistics): counts decay by this per label learned
# (half-life ~700 labels), start from the overall rate worth PRIOR_N orders (Bayesian
# smoothing: a value seen 3 times is not 0 % or 100 % late), and at most MAX_CATEGORIES
# values are kept (a free-form attribute may carry ids).
CATEGORY_DECAY = 0.999
PRIOR_N = 20.0
MAX_CATEGORIES = 50_000
RATE_TAUS = (6 * H, 24 * H, 7 * 24 * H)


@dataclass(slots=True)
class Aggregates:
    """Online aggregates the stream keeps about itself (event time only)."""

    late_rate: dict[str, float] = field(default_factory=dict)  # "carrier:CJ" -> ewma
    backlog: dict[str, int] = field(default_factory=dict)  # warehouse -> paid, not picked up
    # order arrivals, exponentially decayed with time constants of 6 h, 24 h and 7 days
    rates: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    rate_at: float | None = None
    first_at: float | None = None
    # per category value ("dest=JEJ", "attr.category=books"): [orders, late, at label #]
    category: dict[str, list[float]] = field(default_factory=dict)
    labels: int = 0  # outcomes recorded: the clock of the category counts' decay
    all_n: float = 0.0  # decayed outcomes and late ones over all orders
    all_late: float = 0.0

    def scopes(self, s: ShipmentState) -> list[str]:
        """What an outcome updates: the recent late rate of the carrier, lane, warehouse and
        overall, and the late-rate counts of every category value of the order."""
        return [f"carrier:{s.carrier}", f"lane:{s.origin_region}>{s.destination_region}",
                f"warehouse:{s.warehouse_id}", ALL, *category_values(s)]

    def record_outcome(self, s: ShipmentState, late: bool) -> None:
        self.record_outcome_scopes(self.scopes(s), late)

    def record_outcome_scopes(self, scopes: list[str], late: bool) -> None:
        y = float(late)
        self.labels += 1
        self.all_n = self.all_n * CATEGORY_DECAY + 1.0
        self.all_late = self.all_late * CATEGORY_DECAY + y
        for scope in scopes:
            if "=" in scope:  # a category value
                c = self.category.get(scope)
                if c is None:
                    self.category[scope] = [1.0, y, self.labels]
                    continue
                keep = CATEGORY_DECAY ** (self.labels - c[2])
                c[0], c[1], c[2] = c[0] * keep + 1.0, c[1] * keep + y, self.labels
                continue
            old = self.late_rate.get(scope, PRIOR_LATE_RATE)
            self.late_rate[scope] = old + LATE_RATE_ALPHA * (y - old)
        if len(self.category) > MAX_CATEGORIES:  # forget the least recently seen half
            by_age = sorted(self.category, key=lambda k: self.category[k][2])
            for k in by_age[: len(by_age) // 2]:
                del self.category[k]

    def overall_rate(self) -> float:
        return (self.all_late + PRIOR_N * PRIOR_LATE_RATE) / (self.all_n + PRIOR_N)

    def category_excess(self, value: str, overall: float) -> float:
        """Smoothed late rate of orders with this category value minus the overall rate."""
        c = self.category.get(value)
        if c is None:
            return 0.0
        keep = CATEGORY_DECAY ** (self.labels - c[2])
        return (c[1] * keep + PRIOR_N * overall) / (c[0] * keep + PRIOR_N) - overall

    def record_order(self, at: float) -> None:
        if self.rate_at is not None and at > self.rate_at:
            dt = at - self.rate_at
            self.rates = [r * math.exp(-dt / tau)
                          for r, tau in zip(self.rates, RATE_TAUS, strict=True)]
        if self.first_at is None:
            self.first_at = at
        self.rate_at = at if self.rate_at is None else max(self.rate_at, at)
        self.rates = [r + 1.0 for r in self.rates]

    def _rate(self, i: int) -> float:
        """Orders per hour over time constant ``RATE_TAUS[i]``, corrected for a stream that
        started less than that long ago (else every start would look like a lull)."""
        if self.rate_at is None or self.first_at is None:
            return 0.0
        tau = RATE_TAUS[i]
        seen = max(self.rate_at - self.first_at, H)
        return self.rates[i] / (tau * (1.0 - math.exp(-seen / tau))) * H

    def load_ratio(self) -> float:
        """Orders of the last 6 h against the last week's rate (1 = normal, 3 = promotion)."""
        return self._rate(0) / max(self._rate(2), 1e-9) if self.rates[2] else 1.0

    def load_ratio_day(self) -> float:
        """Orders of the last 24 h against the last week's rate: no time-of-day swing."""
        return self._rate(1) / max(self._rate(2), 1e-9) if self.rates[2] else 1.0

    def backlog_change(self, warehouse: str | None, delta: int) -> None:
        if warehouse is not None:
            self.backlog[warehouse] = max(0, self.backlog.get(warehouse, 0) + delta)


def category_values(s: ShipmentState) -> list[str]:
    """The order's categorical facts as ``name=value``: its one-hot features, and the
    values whose late rates :class:`Aggregates` keeps (string attributes included)."""
    out = [f"{name}={value}" for name, value in (
        ("carrier", s.carrier), ("service", s.service_level), ("warehouse", s.warehouse_id),
        ("tier", s.customer_tier), ("lane", f"{s.origin_region}>{s.destination_region}"),
        ("dest", s.destination_region),
        # carriers differ per destination: give the linear model the pair
        ("carrier_dest", f"{s.carrier}>{s.destination_region}"))
        if value is not None]
    out.extend(f"attr.{key}={value}" for key, value in s.attributes.items()
               if not isinstance(value, bool | int | float))
    return out


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
    # a weekday recurs only weekly: as seven one-hots, the first weeks would teach the model
    # each day's particular events as if they were the weekday's
    x["weekend"] = 1.0 if local.weekday() >= 5 else 0.0
    # sites differ in how late in the day they still make the handover: site x hour pairs
    hour = datetime.fromtimestamp(s.paid_at, tz).hour if s.paid_at is not None else local.hour
    x[f"paid_hour={hour}"] = 1.0
    if s.warehouse_id is not None:
        x[f"warehouse_hour={s.warehouse_id}@{hour}"] = 1.0
    x[f"stage={s.stage.label}"] = 1.0
    categories = category_values(s)
    for value in categories:
        x[value] = 1.0
    # Recent late rates relative to the overall recent rate. Labels arrive at the promise,
    # days or weeks after an order is placed: the overall level they show is that of orders
    # placed a promise span ago, and as a feature it was wrong at every turn of the tide
    # (Olist: high in April after a late March, when April orders were on time). What a
    # carrier or lane does worse than the rest holds longer.
    overall = agg.late_rate.get(ALL, PRIOR_LATE_RATE)
    for scope in agg.scopes(s)[:3]:
        x[f"late_rate[{scope.split(':')[0]}]"] = (
            agg.late_rate.get(scope, PRIOR_LATE_RATE) - overall)
    # every category value's smoothed late rate beyond the overall one (target statistics):
    # one number per attribute however many values it has (cities, sellers, categories),
    # which a linear model learns from far fewer labels than one weight per one-hot
    overall = agg.overall_rate()
    for value in categories:
        x[f"late_rate_of[{value.split('=', 1)[0]}]"] = agg.category_excess(value, overall)
    x["backlog_wh"] = float(agg.backlog.get(s.warehouse_id or "", 0))
    load, load_day = agg.load_ratio(), agg.load_ratio_day()
    x["load_ratio"], x["load_ratio_day"] = load, load_day
    # load hurts some carriers' hubs more than others': the pair, as an indicator-scaled value
    if s.carrier is not None:
        x[f"load_day×carrier={s.carrier}"] = min(load_day, 5.0)
    for key, value in s.attributes.items():  # numbers and flags (strings: one-hots above)
        if isinstance(value, int | float) and math.isfinite(value):
            x[f"attr.{key}"] = float(value)
    if s.stage >= Stage.DELIVERED:
        x["delivered"] = 1.0
    return x
