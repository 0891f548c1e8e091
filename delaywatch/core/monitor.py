"""Ops monitor: feed health and incidents over all partitions (issue #8), in event time.

The shipment and stock tables judge one key at a time; some trouble is only visible across
keys: a carrier whose scan feed went silent, a hub where hundreds of parcels stall at once.
:class:`OpsMonitor` watches the *input* records (feed health) and the per-order *alerts*
(incidents) of every partition and emits ``category="system"`` alerts for the topic
``alerts.system``: one ``feed_outage`` per silent feed, one (``feed_outage:wms``) while
warehouses' WMS stop picking the orders they are given, one ``incident`` per scope whose
late or at-risk orders rise far above that scope's baseline.

It is pure, like the engine: no wall clock, no I/O. Each input stream (a topic partition)
keeps a clock; an item's effective time is ``max(its time, clock - lateness)``, so a record
the carrier re-sends hours later counts when it *arrived*, not in the hour it describes, and
depends only on its own stream's order (live and replay count alike). Time is cut into
buckets; a bucket is judged once the watermark (``min`` of the stream clocks, minus the
lateness) passes its end. A silent feed produces no records: the other feeds move the clock.
:meth:`OpsMonitor.advance_to` lets a live service move it from the wall clock when every
feed is silent.

Baselines are learned online per feed and hour of the day (per scope for incidents), so the
monitor assumes nothing about a shop's carriers, warehouses, hubs or volumes.

Per-order alerts are decided by the worker before the monitor sees them: they do not carry
the incident's id. The incident alert lists its orders instead (``evidence.orders``), so a
notifier can message them in one batch.
"""

from __future__ import annotations

import itertools
import math
import statistics
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from delaywatch.config.thresholds import (
    NO_COMPENSATION,
    CompensationRule,
    MonitorThresholds,
    Thresholds,
)
from delaywatch.core.alerts import AlertBook, Finding, Transition, ts_to_dt
from delaywatch.models.audience import audience_for
from delaywatch.schemas.alerts import Alert, Cause, Severity

__all__ = ["FeedHealth", "IncidentDetector", "OpsMonitor", "StreamClocks", "WmsProgress",
           "event_time", "feed_of", "stale_hours"]

H = 3600.0
NEG_INF = -math.inf
# per-order alert kinds that say "this order is late or at risk" (the incident signal)
INCIDENT_SIGNALS = frozenset({
    "tracking_stale", "promise_at_risk", "handover_missed", "waybill_missing",
    "carrier_exception", "stock_shortage", "delay_risk", "promise_broken"})
_WAREHOUSE_KINDS = frozenset({"handover_missed", "waybill_missing", "stock_shortage"})
_SCOPE_ORDER = ("hub", "warehouse", "carrier")  # narrowest first: it explains the broader


@dataclass(slots=True)
class StreamClocks:
    """Per-stream event clocks, effective times and the watermark."""

    lateness: float
    clocks: dict[str, float] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)  # silent streams the watermark skips

    def expect(self, streams: Iterable[str]) -> None:
        """Streams that will deliver: the watermark waits for each (a consumer reads its
        partitions in any order; a bucket must not be judged before all have reached it)."""
        for s in streams:
            self.clocks.setdefault(s, NEG_INF)

    def drop(self, stream: str) -> None:
        """Stop waiting for ``stream`` (a live service's partition silent for a while on the
        wall clock); a record of it later brings it back, counted from the judging point."""
        if stream in self.clocks:
            self.ignored.add(stream)

    def effective(self, stream: str, t: float) -> float:
        clock = self.clocks.get(stream, NEG_INF)
        if stream in self.ignored:  # back from silence: the buckets it missed are judged
            floor = self.watermark
            self.ignored.discard(stream)
            clock = max(clock, floor + self.lateness)
        self.clocks[stream] = max(clock, t)
        return max(t, clock - self.lateness)

    @property
    def watermark(self) -> float:
        return min((c for s, c in self.clocks.items() if s not in self.ignored),
                   default=NEG_INF) - self.lateness


def event_time(value: Any) -> float | None:
    """``occurred_at`` of a raw input record, or None when it has none the monitor can use
    (the worker dead-letters such records; the monitor only counts)."""
    if not isinstance(value, dict):
        return None
    raw = value.get("occurred_at")
    if not isinstance(raw, str):
        return None
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return dt.timestamp() if dt.tzinfo is not None else None


def feed_of(role: str, value: dict[str, Any]) -> str | None:
    """The feed an input record belongs to: scans per carrier, inventory per warehouse,
    orders overall."""
    if role == "scans":
        carrier = value.get("carrier")
        return f"scans:{carrier}" if isinstance(carrier, str) and carrier else None
    if role == "inventory":
        wh = value.get("warehouse_id")
        return f"inventory:{wh}" if isinstance(wh, str) and wh else None
    if role == "orders":
        return "orders"
    return None


BURST_CLIP = 4.0


@dataclass(slots=True)
class _Rate:
    """A feed's (or scope's) normal count per bucket: overall, and per bucket of the day
    (feeds have shapes: inventory snapshots at fixed hours, night-time hub scans)."""

    overall: float | None = None
    by_slot: dict[int, tuple[float, int]] = field(default_factory=dict)  # slot -> (ewma, n)
    n: int = 0

    def expected(self, slot: int, min_slot: int) -> float | None:
        """This time of day's normal, once seen ``min_slot`` times (the overall mean would
        call every daily lull an outage)."""
        seen = self.by_slot.get(slot)
        return seen[0] if seen is not None and seen[1] >= min_slot else None

    def learn(self, slot: int, count: float, alpha: float, slot_alpha: float) -> None:
        ewma, n = self.by_slot.get(slot, (count, 0))
        if n:
            # a burst (a feed's backlog re-sent at once when it returns from an outage) is
            # not its normal: learned as at most BURST_CLIP x the slot's, or the same hour
            # the next day would look silent against it
            count = min(count, BURST_CLIP * max(ewma, 1.0))
        self.n += 1
        self.overall = count if self.overall is None else (
            self.overall + alpha * (count - self.overall))
        self.by_slot[slot] = (ewma + slot_alpha * (count - ewma) if n else count, n + 1)


def _slot(bucket_start: float, bucket_s: float) -> int:
    return int((bucket_start % 86400.0) // bucket_s)


class FeedHealth:
    """One ``feed_outage`` alert per feed that goes silent against its own history."""

    def __init__(self, th: MonitorThresholds) -> None:
        self.th = th
        self.bucket_s = th.bucket_min * 60.0
        self.clocks = StreamClocks(th.lateness_s)
        self.counts: dict[str, dict[float, int]] = {}  # feed -> bucket start -> count
        self.rates: dict[str, _Rate] = {}
        self.history: dict[str, list[int]] = {}  # feed -> counts of the last closed buckets
        self.books: dict[str, AlertBook] = {}
        self.since: dict[str, float] = {}  # feed -> start of its open outage
        self.next_bucket: float | None = None  # start of the first bucket not yet judged
        # in-flight orders per carrier (picked up, not yet delivered): the outage's reach
        self.in_flight: dict[str, dict[str, float]] = {}
        # hours without a scan after which an order's tracking is stale, per carrier ("":
        # any other); while a carrier's feed is out, the worker holds those orders' alerts
        # and the outage counts them (the most at once: `orders_stale_held`)
        self.stale_after_h: dict[str, float] = {"": 20.0}
        self.stale_held: dict[str, int] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a monitor checkpointed before the stale count learns on, without it
        self.__dict__.update({"stale_after_h": {"": 20.0}, "stale_held": {}, **state})

    def observe(self, stream: str, role: str, value: dict[str, Any], t: float) -> None:
        feed = feed_of(role, value)
        if feed is None:
            return
        eff = self.clocks.effective(stream, t)
        start = eff - eff % self.bucket_s
        if self.next_bucket is None:
            self.next_bucket = start
        per = self.counts.setdefault(feed, {})
        per[start] = per.get(start, 0) + 1
        if role == "scans":
            self._track(value, t)

    def _track(self, value: dict[str, Any], t: float) -> None:
        carrier, order_id, kind = value.get("carrier"), value.get("order_id"), value.get(
            "scan_type")
        if not isinstance(carrier, str) or not isinstance(order_id, str):
            return
        flying = self.in_flight.setdefault(carrier, {})
        if kind == "waybill_created" and order_id not in flying:
            return  # not with the carrier yet (a missed handover is not its feed's)
        if kind in ("delivered", "returned"):
            flying.pop(order_id, None)
        else:
            flying[order_id] = t
        if len(flying) > self.th.max_in_flight:  # bound: forget the longest silent
            for oid in sorted(flying, key=flying.__getitem__)[: len(flying) // 10]:
                del flying[oid]

    def judge(self, until: float) -> list[Alert]:
        """Judge every bucket that ends at or before ``until``."""
        out: list[Alert] = []
        if self.next_bucket is None:
            return out
        while self.next_bucket + self.bucket_s <= until:
            start = self.next_bucket
            out.extend(self._judge_bucket(start))
            self.next_bucket = start + self.bucket_s
        return out

    def _judge_bucket(self, start: float) -> list[Alert]:
        th, end = self.th, start + self.bucket_s
        slots = [_slot(start - i * self.bucket_s, self.bucket_s)
                 for i in reversed(range(th.window_buckets))]
        counts = {feed: self.counts[feed].pop(start, 0) for feed in sorted(self.counts)}
        expect: dict[str, float | None] = {}
        for feed, count in counts.items():
            hist = self.history.setdefault(feed, [])
            hist.append(count)
            rate = self.rates.setdefault(feed, _Rate())
            if len(hist) > th.window_buckets:
                # a bucket leaves the window: only now is it the feed's normal (or part of
                # an outage, never learned): learning it earlier would teach the baseline
                # the very silence the window is judging
                old = hist.pop(0)
                if not self.books.get(feed, AlertBook()).is_open("feed_outage"):
                    rate.learn(_slot(start - th.window_buckets * self.bucket_s, self.bucket_s),
                               old, th.alpha, th.slot_alpha)
            per = [rate.expected(s, th.min_slot_samples) for s in slots[-len(hist):]]
            ready = rate.n >= th.min_history_buckets and all(e is not None for e in per)
            expect[feed] = sum(e for e in per if e is not None) if ready else None
        out: list[Alert] = []
        for feed, count in counts.items():
            # the shop as a whole is quiet (a night, the end of a file): silence says nothing.
            # Orders are the shop's pulse; the orders feed itself is judged by the others.
            pulse = ["orders"] if feed != "orders" and expect.get("orders") is not None else [
                f for f in counts if f != feed and expect[f] is not None]
            alive = bool(pulse) and sum(sum(self.history[f]) for f in pulse) >= (
                th.alive_ratio * sum(expect[f] or 0.0 for f in pulse))
            hist, rate, window = self.history[feed], self.rates[feed], expect[feed]
            book = self.books.setdefault(feed, AlertBook())
            outage = book.is_open("feed_outage")
            if window is not None and (alive or outage):
                last = rate.expected(slots[-1], th.min_slot_samples) or 0.0
                silent = (alive and len(hist) == th.window_buckets
                          and window >= th.min_expected
                          and sum(hist) <= th.silent_ratio * window)
                # back once it delivers again, at least recover_ratio of its normal over the
                # window (a quiet hour's normal may be ~0: silence then does not end an
                # outage, nor does a trickle of scans delayed from before it)
                back = (count > 0 and count >= th.recover_ratio * last
                        and sum(hist) >= th.recover_ratio * window)
                active = silent or (outage and not back)
                if active and not outage:
                    self.since[feed] = end - len(hist) * self.bucket_s
                out.extend(self._alerts(book, feed, active, end, count, last, sum(hist),
                                        window))
        return out

    def _alerts(self, book: AlertBook, feed: str, active: bool, at: float, count: int,
                expected: float, seen: int, window: float) -> list[Alert]:
        since = self.since.get(feed, at)
        scope_kind, _, name = feed.partition(":")
        affected = len(self.in_flight.get(name, {})) if scope_kind == "scans" else None
        held = None
        if scope_kind == "scans" and (active or feed in self.stale_held):
            held = max(self.stale_held.get(feed, 0), self._stale(name, since, at))
            self.stale_held[feed] = held

        def evidence() -> dict[str, Any]:
            return {"scope": f"feed:{feed}", "since": ts_to_dt(since).isoformat(),
                    "silent_minutes": round((at - since) / 60.0, 1),
                    "window_count": seen, "window_expected": round(window, 1),
                    "last_bucket_count": count, "last_bucket_expected": round(expected, 1),
                    "orders_in_flight": affected, "orders_stale_held": held}

        finding = Finding("feed_outage", active, Severity.HIGH, ("feed_silent",), evidence)
        out = [_system_alert(t, feed, f"feed:{feed}")
               for t in book.evaluate(f"feed:{feed}", [finding], at)]
        if not active:
            self.since.pop(feed, None)
            self.stale_held.pop(feed, None)
        return out

    def _stale(self, carrier: str, since: float, at: float) -> int:
        """In-flight orders of ``carrier`` whose tracking went stale since ``since``: their
        last scan passed the stale limit during the outage."""
        limit = self.stale_after_h.get(carrier, self.stale_after_h.get("", 20.0)) * H
        return sum(1 for t in self.in_flight.get(carrier, {}).values()
                   if since <= t + limit <= at)


class WmsProgress:
    """One ``feed_outage`` alert (scope ``feed:wms``) while warehouses' WMS stop progressing
    the orders they are given, though orders and the picks of older orders still flow.

    A WMS that no longer receives orders (the OMS-to-WMS integration is down) keeps picking
    what it already had, so its inventory feed does not go silent. What stops is its
    *frontier*: the payment time of the latest-paid order it has picked. Every order paid
    after it is still waiting, by definition, and none of them being picked is normal for a
    while (a pick takes time) and then not. How long is learned per warehouse and hour of
    payment, as the distribution of payment-to-first-pick times (evening orders wait for the
    morning). ``missed`` sums, over the orders waiting past the frontier, the chance that
    each would normally have been picked by its age: the picks that should have happened and
    did not. A warehouse is stalled at ``wms_missed_picks`` of them with at least
    ``wms_min_orders`` waiting, and has caught up at ``wms_recover_ratio`` of that. The alert
    is the WMS's (an integration serves every warehouse): it lists the stalled warehouses,
    opens once and resolves when all have caught up.
    """

    def __init__(self, th: MonitorThresholds) -> None:
        self.th = th
        self.bucket_s = th.bucket_min * 60.0
        self.bins = max(1, round(86400.0 / self.bucket_s))  # lags of up to a day, per bucket
        self.clocks = StreamClocks(th.lateness_s)
        self.placed: dict[str, str] = {}  # order -> warehouse, until paid
        self.waiting: dict[str, tuple[str, float]] = {}  # paid order -> (warehouse, paid at)
        self.paid: dict[str, list[float]] = {}  # warehouse -> sorted payment times > frontier
        self.picks: dict[float, list[tuple[str, float]]] = {}  # bucket -> (order, picked at)
        self.frontier: dict[str, float] = {}
        # (warehouse, hour of payment) -> histogram of payment-to-pick lags, in buckets
        self.lags: dict[tuple[str, int], list[float]] = {}
        self.unlearned: dict[str, tuple[float, float]] = {}  # warehouse -> stall [from, to)
        self.stalled: dict[str, dict[str, Any]] = {}  # warehouse -> its figures, while stalled
        self.book = AlertBook()
        self.since: float | None = None
        self.next_bucket: float | None = None

    def observe(self, stream: str, role: str, value: dict[str, Any], t: float) -> None:
        eff = self.clocks.effective(stream, t)
        kind, order = value.get("event_type"), value.get("order_id")
        if not isinstance(order, str) or not order:
            return
        if self.next_bucket is None:
            self.next_bucket = eff - eff % self.bucket_s
        if role == "orders":
            if kind == "order_placed":
                wh = value.get("warehouse_id")
                if isinstance(wh, str) and wh:
                    self._bounded(self.placed)[order] = wh
            elif kind == "payment_confirmed":
                wh = self.placed.pop(order, None)
                if wh is not None and order not in self.waiting:
                    self._bounded(self.waiting)[order] = (wh, eff)
                    insort(self.paid.setdefault(wh, []), eff)
            elif kind == "order_cancelled":
                self.placed.pop(order, None)
                gone = self.waiting.pop(order, None)
                if gone is not None:
                    self._forget_payment(*gone)
        elif role == "inventory" and kind == "stock_picked":
            # resolved when its bucket is judged: by then its payment has been read too (a
            # pick behind a clock moved from outside counts in the next bucket judged)
            bucket = max(eff - eff % self.bucket_s, self.next_bucket)
            self.picks.setdefault(bucket, []).append((order, eff))

    def _bounded(self, orders: dict[str, Any]) -> dict[str, Any]:
        if len(orders) >= self.th.max_in_flight:  # forget the oldest tenth (insertion order)
            for oid in list(itertools.islice(orders, len(orders) // 10)):
                gone = orders.pop(oid)
                if isinstance(gone, tuple):
                    self._forget_payment(*gone)
        return orders

    def _forget_payment(self, wh: str, at: float) -> None:
        paid = self.paid.get(wh, [])
        i = bisect_left(paid, at)
        if i < len(paid) and paid[i] == at:
            del paid[i]

    def _hour(self, t: float) -> int:
        return int((t % 86400.0) // H)

    def _learn(self, wh: str, paid: float, picked: float) -> None:
        lo, hi = self.unlearned.get(wh, (math.inf, math.inf))
        if lo <= paid < hi:  # a stalled order's wait is not the warehouse's normal
            return
        hist = self.lags.setdefault((wh, self._hour(paid)), [0.0] * (self.bins + 1))
        hist[min(self.bins, max(0, int((picked - paid) // self.bucket_s)))] += 1.0
        if sum(hist) > self.th.wms_max_lags:  # forget slowly: recent days weigh most
            hist[:] = [c / 2 for c in hist]

    def _picked_by(self, wh: str, hour: int) -> list[float] | None:
        """Share of the orders paid in ``hour`` normally picked within ``i`` buckets."""
        hist = self.lags.get((wh, hour))
        total = sum(hist) if hist else 0.0
        if hist is None or total < self.th.wms_min_lags:
            return None
        return [c / total for c in itertools.accumulate(hist)]

    def judge(self, until: float) -> list[Alert]:
        out: list[Alert] = []
        if self.next_bucket is None:
            return out
        while self.next_bucket + self.bucket_s <= until:
            out.extend(self._judge_bucket(self.next_bucket))
            self.next_bucket += self.bucket_s
        return out

    def _judge_bucket(self, start: float) -> list[Alert]:
        th, end = self.th, start + self.bucket_s
        for order, at in self.picks.pop(start, []):
            got = self.waiting.pop(order, None)
            if got is None:  # a second line, or an order not seen paid
                continue
            wh, paid_at = got
            self._learn(wh, paid_at, at)
            self.frontier[wh] = max(self.frontier.get(wh, paid_at), paid_at)
            paid = self.paid[wh]
            del paid[: bisect_right(paid, self.frontier[wh])]
        for wh in sorted(self.frontier):
            paid = self.paid.get(wh, [])
            behind = paid[: bisect_right(paid, end)]
            curves: dict[int, list[float] | None] = {}
            missed = 0.0
            for p in behind:
                hour = self._hour(p)
                if hour not in curves:
                    curves[hour] = self._picked_by(wh, hour)
                curve, whole = curves[hour], min(self.bins, int((end - p) // self.bucket_s))
                if curve is not None and whole > 0:  # share picked with a lag under its age
                    missed += curve[whole - 1]
            stalled = (missed >= th.wms_missed_picks and len(behind) >= th.wms_min_orders) or (
                wh in self.stalled and missed > th.wms_recover_ratio * th.wms_missed_picks)
            if stalled:
                if wh not in self.stalled:
                    self.unlearned[wh] = (self.frontier[wh], math.inf)
                self.stalled[wh] = {"since": self.frontier[wh],
                                    "behind_minutes": round((end - self.frontier[wh]) / 60, 1),
                                    "orders_waiting": len(behind),
                                    "missed_picks": round(missed, 1)}
            elif self.stalled.pop(wh, None) is not None:
                self.unlearned[wh] = (self.unlearned[wh][0], end)
        return self._alerts(end)

    def _alerts(self, at: float) -> list[Alert]:
        stalled = dict(self.stalled)
        active = bool(stalled)
        if active and self.since is None:
            self.since = min(s["since"] for s in stalled.values())
        since = self.since if self.since is not None else at

        def evidence() -> dict[str, Any]:
            return {"scope": "feed:wms", "since": ts_to_dt(since).isoformat(),
                    "stalled_minutes": round((at - since) / 60.0, 1),
                    "orders_affected": sum(s["orders_waiting"] for s in stalled.values()),
                    "warehouses": {wh: {**s, "since": ts_to_dt(s["since"]).isoformat()}
                                   for wh, s in sorted(stalled.items())}}

        finding = Finding("feed_outage", active, Severity.HIGH, ("wms_not_progressing",),
                          evidence)
        out = [_system_alert(t, "wms", "feed:wms")
               for t in self.book.evaluate("feed:wms", [finding], at)]
        if not active:
            self.since = None
        return out


@dataclass(slots=True)
class _Incident:
    scope: str
    since: float
    orders: dict[str, float] = field(default_factory=dict)  # order -> first alert time
    stuck_h: list[float] = field(default_factory=list)


class IncidentDetector:
    """One ``incident`` alert per scope (hub, warehouse, carrier) whose late or at-risk
    orders rise far above that scope's own baseline.

    Raw counts would cry wolf on every busy day (a promotion triples the late orders of
    every hub). What is compared is a scope's *lift*: its share of the late or at-risk
    orders of its kind of scope (all hubs, all carriers, all warehouses) in the window,
    divided by its share of their traffic over the last day (hub arrivals, carrier pickups,
    warehouse orders). A scope's normal lift is learned (some lanes are always slower); an
    incident opens when the lift reaches ``incident_ratio`` times that and the orders number
    at least ``incident_min_orders``. An order counts once, for the narrowest scope with an
    open incident, so one congested hub is one incident, not also one for its carrier.
    """

    def __init__(self, th: MonitorThresholds,
                 compensation: list[CompensationRule] | None = None) -> None:
        self.th = th
        # the compensation policy (config/thresholds.yaml), suggested per affected order
        self.policy = list(compensation or [])
        self.tiers: dict[str, str | None] = {}  # order -> customer tier (from its alerts)
        self.bucket_s = th.incident_bucket_h * H
        self.day_buckets = max(1, round(86400.0 / self.bucket_s))
        self.clocks = StreamClocks(th.lateness_s)  # alert streams
        self.traffic_clocks = StreamClocks(th.lateness_s)  # input streams
        # scope -> bucket start -> orders alerted in it (each order once per scope)
        self.buckets: dict[str, dict[float, dict[str, float]]] = {}
        self.traffic: dict[str, dict[float, int]] = {}  # scope -> bucket start -> count
        self.recent: dict[str, list[dict[str, float]]] = {}  # scope -> last closed buckets
        self.lift: dict[str, tuple[float, int]] = {}  # scope -> (normal lift EWMA, n)
        self.open: dict[str, _Incident] = {}
        self.counted: dict[str, str] = {}  # order -> scope of the open incident holding it
        self.books: dict[str, AlertBook] = {}
        self.next_bucket: float | None = None
        self.calm: dict[str, int] = {}  # scope -> quiet buckets in a row while open

    def observe_input(self, stream: str, role: str, value: dict[str, Any], t: float) -> None:
        eff = self.traffic_clocks.effective(stream, t)  # every input moves its clock
        scope = _traffic_scope(role, value)
        if scope is None:
            return
        start = eff - eff % self.bucket_s
        per = self.traffic.setdefault(scope, {})
        per[start] = per.get(start, 0) + 1

    def observe(self, stream: str, alert: Alert) -> None:
        if alert.status != "open" or alert.kind not in INCIDENT_SIGNALS or alert.order_id is None:
            return
        t = alert.detected_at.timestamp()
        eff = self.clocks.effective(stream, t)
        start = eff - eff % self.bucket_s
        if self.next_bucket is None:
            self.next_bucket = start
        stuck = _stuck_hours(alert)
        self.tiers[alert.order_id] = alert.customer_tier
        if len(self.tiers) > self.th.max_in_flight:  # bound: forget the oldest tenth
            for o in list(itertools.islice(self.tiers, len(self.tiers) // 10)):
                del self.tiers[o]
        for scope in _scopes(alert):
            orders = self.buckets.setdefault(scope, {}).setdefault(start, {})
            if alert.order_id not in orders:
                orders[alert.order_id] = stuck if stuck is not None else math.nan

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a monitor checkpointed before incidents suggested compensation
        self.__dict__.update({"policy": [], "tiers": {}, **state})

    def judge(self, until: float) -> list[Alert]:
        """Judge the buckets that end by ``until`` on both the alert and the input clocks
        (the traffic of a bucket must be complete before its lift is)."""
        out: list[Alert] = []
        if self.next_bucket is None:
            return out
        until = min(until, self.traffic_clocks.watermark)
        while self.next_bucket + self.bucket_s <= until:
            start = self.next_bucket
            out.extend(self._judge_bucket(start))
            self.next_bucket = start + self.bucket_s
        return out

    def _day_traffic(self, scope: str, end: float) -> int:
        per = self.traffic.get(scope, {})
        lo = end - self.day_buckets * self.bucket_s
        for b in [b for b in per if b < lo - self.bucket_s]:  # bounded: one day per scope
            del per[b]
        return sum(n for b, n in per.items() if lo <= b < end)

    def _judge_bucket(self, start: float) -> list[Alert]:
        th, end = self.th, start + self.bucket_s
        out: list[Alert] = []
        scopes = sorted({*self.buckets, *self.recent},
                        key=lambda s: (_SCOPE_ORDER.index(s.split(":")[0]), s))
        windows: dict[str, dict[str, float]] = {}
        for scope in scopes:
            orders = self.buckets.get(scope, {}).pop(start, {})
            recent = self.recent.setdefault(scope, [])
            recent.append(orders)
            del recent[: -th.incident_window_buckets]
        for scope in scopes:  # narrowest first: an order held by an incident counts there
            window: dict[str, float] = {}
            for b in self.recent[scope]:
                for o, v in b.items():
                    if self.counted.get(o, scope) == scope:
                        window.setdefault(o, v)
            windows[scope] = window
        kinds: dict[str, list[str]] = {}
        for scope in scopes:
            kinds.setdefault(scope.split(":")[0], []).append(scope)
        traffic = {s: self._day_traffic(s, end) for s in {*scopes, *self.traffic}}
        for kind, members in kinds.items():
            peers = [s for s in traffic if s.startswith(f"{kind}:")]
            all_traffic = sum(traffic[s] for s in peers)
            all_alerted = sum(len(windows[s]) for s in members)
            for scope in members:
                n = len(windows[scope])
                if all_traffic <= 0 or all_alerted <= 0 or traffic.get(scope, 0) <= 0:
                    lift = None
                else:
                    lift = (n / all_alerted) / (traffic[scope] / all_traffic)
                out.extend(self._decide(scope, windows[scope], self.recent[scope][-1], lift,
                                        end))
        return out

    def _decide(self, scope: str, window: dict[str, float], last: dict[str, float],
                lift: float | None, end: float) -> list[Alert]:
        th = self.th
        normal, seen = self.lift.get(scope, (1.0, 0))
        incident = self.open.get(scope)
        if incident is None:
            if (lift is not None and seen >= th.incident_min_history_buckets
                    and len(window) >= th.incident_min_orders
                    and lift >= th.incident_ratio * max(normal, 1.0)):
                incident = _Incident(scope, end - len(self.recent[scope]) * self.bucket_s)
                self.open[scope] = incident
                self.calm[scope] = 0
                self._absorb(incident, window)
                return self._alerts(incident, True, end)
            if lift is not None:  # learn the scope's normal lift
                self.lift[scope] = (lift if seen == 0 else normal + th.alpha * (lift - normal),
                                    seen + 1)
            return []
        fresh = {o: v for o, v in last.items() if self.counted.get(o, scope) == scope}
        self._absorb(incident, fresh)
        quiet = lift is None or lift <= th.incident_calm_ratio * max(normal, 1.0)
        self.calm[scope] = self.calm[scope] + 1 if quiet else 0
        if self.calm[scope] < th.incident_calm_buckets:
            return []
        out = self._alerts(incident, False, end)
        for o in incident.orders:
            self.counted.pop(o, None)
        del self.open[scope]
        return out

    def _absorb(self, incident: _Incident, orders: dict[str, float]) -> None:
        for o, stuck in orders.items():
            if o not in incident.orders:
                incident.orders[o] = stuck
                self.counted[o] = incident.scope
                if not math.isnan(stuck):
                    incident.stuck_h.append(stuck)

    def _alerts(self, inc: _Incident, active: bool, at: float) -> list[Alert]:
        kind, _, name = inc.scope.partition(":")
        alternatives = sorted(
            s.partition(":")[2] for s in self.lift
            if s.startswith(f"{kind}:") and s != inc.scope and s not in self.open
        ) if kind in ("carrier", "warehouse") else []

        def evidence() -> dict[str, Any]:
            ids = sorted(inc.orders)
            stuck = round(statistics.median(inc.stuck_h), 1) if inc.stuck_h else None
            return {
                "scope": inc.scope, "since": ts_to_dt(inc.since).isoformat(),
                "affected_orders": len(ids), "orders": ids[: self.th.incident_max_listed],
                "typical_stuck_hours": stuck,
                "alternatives": alternatives,
                "compensation": self._compensation(kind, ids, stuck or 0.0, at),
                "apology_ko": f"{name} 구간의 배송 지연으로 도착이 늦어지고 있습니다. "
                              "불편을 드려 죄송합니다.",
                "apology_en": f"Deliveries through {name} are delayed. "
                              "We are sorry for the inconvenience.",
            }

        finding = Finding("incident", active, Severity.HIGH, (f"{kind}_late_orders_surge",),
                          evidence)
        book = self.books.setdefault(inc.scope, AlertBook())
        return [_system_alert(t, inc.scope, inc.scope)
                for t in book.evaluate(f"incident:{inc.scope}", [finding], at)]


    def _compensation(self, kind: str, orders: list[str], late_h: float,
                      at: float) -> dict[str, Any] | None:
        """What the compensation policy suggests for the affected orders, per customer tier:
        the incident's cause, its typical hours stuck as the delay, the first matching rule
        (as ``promise_broken`` alerts choose theirs, ``shipment._compensation``)."""
        if not self.policy:
            return None
        cause = _SCOPE_CAUSE.get(kind, Cause.UNKNOWN).value
        counts: dict[str | None, int] = {}
        for o in orders:
            tier = self.tiers.get(o)
            counts[tier] = counts.get(tier, 0) + 1
        by_tier: dict[str, Any] = {}
        for tier in sorted(counts, key=lambda t: t or ""):
            rule = next((r for r in self.policy if r.matches(tier, late_h, cause)), None)
            entry: dict[str, Any] = {"orders": counts[tier], "rule": rule.name if rule else None}
            if rule is not None and rule.kind != NO_COMPENSATION:
                entry.update(kind=rule.kind, amount_krw=rule.amount_krw,
                             expires_at=ts_to_dt(at + rule.expires_days * 86400.0).isoformat())
            by_tier[tier or "-"] = entry
        return {"cause": cause, "late_h": late_h, "by_tier": by_tier}


# the cause an incident of each kind of scope stands for (its affected orders' compensation)
_SCOPE_CAUSE = {"hub": Cause.CARRIER_DELAY, "carrier": Cause.CARRIER_DELAY,
                "warehouse": Cause.PICKING_BACKLOG}


def _traffic_scope(role: str, value: dict[str, Any]) -> str | None:
    """What passes a scope: hub arrivals, carrier pickups, warehouse orders."""
    if role == "scans":
        kind = value.get("scan_type")
        if kind == "arrived_at_hub":
            loc = value.get("location")
            return f"hub:{loc}" if isinstance(loc, str) and loc else None
        if kind == "picked_up":
            carrier = value.get("carrier")
            return f"carrier:{carrier}" if isinstance(carrier, str) and carrier else None
    elif role == "orders" and value.get("event_type") == "order_placed":
        wh = value.get("warehouse_id")
        return f"warehouse:{wh}" if isinstance(wh, str) and wh else None
    return None


def _scopes(alert: Alert) -> list[str]:
    out = []
    where = _last_location(alert)
    if where:
        out.append(f"hub:{where}")
    if alert.warehouse_id and alert.kind in _WAREHOUSE_KINDS:
        out.append(f"warehouse:{alert.warehouse_id}")
    if alert.carrier and alert.kind not in _WAREHOUSE_KINDS:
        out.append(f"carrier:{alert.carrier}")
    return out


def _last_location(alert: Alert) -> str | None:
    scan = alert.evidence.get("last_scan") if isinstance(alert.evidence, dict) else None
    if isinstance(scan, dict) and scan.get("type") in ("arrived_at_hub", "departed_hub"):
        loc = scan.get("location")
        return loc if isinstance(loc, str) and loc else None
    return None


def _stuck_hours(alert: Alert) -> float | None:
    h = alert.evidence.get("silent_hours") if isinstance(alert.evidence, dict) else None
    return float(h) if isinstance(h, int | float) else None


def _system_alert(t: Transition, subject: str, scope: str) -> Alert:
    return Alert(
        alert_id=t.alert_id, status=t.status, category="system", kind=t.kind,
        key=f"{t.kind}:{subject}", episode=t.episode, severity=t.severity,
        reason_codes=list(t.reason_codes), evidence=t.evidence, detected_at=ts_to_dt(t.at),
        audience=audience_for(t.kind, "system"),
        carrier=scope.rpartition(":")[2] if scope.startswith(("carrier:", "feed:scans:")) else None,
        warehouse_id=scope.rpartition(":")[2] if scope.startswith(
            ("warehouse:", "feed:inventory:")) else None,
    )


def stale_hours(thresholds: Thresholds) -> dict[str, float]:
    """Per carrier (``""``: any other) the hours after which the rules call tracking stale."""
    return {"": thresholds.defaults.stale_after_h,
            **{c: thresholds.for_lane(c, None).stale_after_h for c in thresholds.carriers}}


class OpsMonitor:
    """Feed health and WMS progress over the input records plus incidents over the alerts."""

    def __init__(self, th: MonitorThresholds,
                 stale_after_h: dict[str, float] | None = None,
                 compensation: list[CompensationRule] | None = None) -> None:
        """``stale_after_h``: hours without a scan after which an order's tracking is stale,
        per carrier and ``""`` for the others (:func:`stale_hours` of the thresholds);
        ``compensation``: the policy whose suggestion an incident carries per tier."""
        self.feeds = FeedHealth(th)
        if stale_after_h:
            self.feeds.stale_after_h = dict(stale_after_h)
        self.wms = WmsProgress(th)
        self.incidents = IncidentDetector(th, compensation)

    @classmethod
    def of(cls, thresholds: Thresholds) -> OpsMonitor:
        """The monitor the thresholds describe (its own, the stale limits, the policy)."""
        return cls(thresholds.monitor, stale_hours(thresholds), thresholds.compensation)

    def expect(self, inputs: Iterable[str], alerts: Iterable[str]) -> None:
        """The input streams (topic partitions) and delay-alert streams there are."""
        inputs = list(inputs)
        self.feeds.clocks.expect(inputs)
        self.wms.clocks.expect(inputs)
        self.incidents.traffic_clocks.expect(inputs)
        self.incidents.clocks.expect(alerts)

    def streams(self) -> list[str]:
        """Every stream the monitor waits for now."""
        return sorted({*self.feeds.clocks.clocks, *self.incidents.clocks.clocks})

    def drop_stream(self, stream: str) -> None:
        """Judge without ``stream`` until it delivers again (see :meth:`StreamClocks.drop`):
        a whole topic gone silent (every carrier's scans: the TMS integration is down) would
        otherwise hold the watermark, and nothing would be judged at all."""
        for clocks in (self.feeds.clocks, self.wms.clocks, self.incidents.traffic_clocks,
                       self.incidents.clocks):
            clocks.drop(stream)

    def on_input(self, stream: str, role: str, value: dict[str, Any], t: float) -> list[Alert]:
        self.feeds.observe(stream, role, value, t)
        self.wms.observe(stream, role, value, t)
        self.incidents.observe_input(stream, role, value, t)
        return [*self.feeds.judge(self.feeds.clocks.watermark),
                *self.wms.judge(self.wms.clocks.watermark),
                *self.incidents.judge(self.incidents.clocks.watermark)]

    def on_alerts(self, stream: str, alerts: Iterable[Alert]) -> list[Alert]:
        """Per-order alerts of one stream (a partition of ``alerts.delay``)."""
        for a in alerts:
            self.incidents.observe(stream, a)
        return self.incidents.judge(self.incidents.clocks.watermark)

    def advance_to(self, at: float) -> list[Alert]:
        """An outside clock (end of a file; a live service's wall clock when input is idle)."""
        return [*self.feeds.judge(at), *self.wms.judge(at), *self.incidents.judge(at)]
