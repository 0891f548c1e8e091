"""Deterministic event simulator: a small Korean e-commerce world with labelled incidents.

``simulate(orders, seed)`` returns ``(records, truth)``:

* ``records`` - what goes onto the input topics, in arrival order (sorted by ``ts``, stable).
  Each is ``{"topic", "key", "ts", "value"}``. Malformed extras (~0.3 %) carry ``"raw"``
  (text) or ``"raw_b64"`` (undecodable bytes) instead of ``"value"``, or a ``"value"`` that
  breaks the contract, plus ``"malformed": <kind>``: a label for tests and reports that
  producers must not send.
* ``truth`` - a meta record, one record per order and one per ``warehouse:sku`` with incidents.

``profile`` picks the world's rates (:data:`PROFILES`): ``"field"`` (default) at the field's
4-6 % late, ``"stress"`` the 16 %-late world the tests and earlier figures were measured on.

Everything is driven by one ``random.Random(seed)``; there is no wall clock and no global
random state, so the same arguments give identical output. Times are epoch milliseconds
internally and ISO-8601 with the ``+09:00`` offset (Asia/Seoul) on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import math
import random
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson

__all__ = ["DEFAULT_PROFILE", "DEFAULT_START", "PROFILES", "Profile", "simulate", "write_jsonl"]

KST = timezone(timedelta(hours=9))
DEFAULT_START = datetime(2026, 5, 20, tzinfo=KST)

SEC = 1_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
_OFFSET = 9 * HOUR  # Korea has no DST
SNAPSHOT_EVERY = 6 * HOUR
STALE_AFTER = 20 * HOUR  # detectable_at of tracking_stale = last scan + 20 h
# share of cancelled orders whose OMS never releases the reservation (reservation_not_released,
# detectable at the cancel + the detector's 2 h grace)
UNRELEASED_RATE = 0.03
RELEASE_GRACE = 2 * HOUR
_MAX_NORMAL_GAP = 13 * HOUR  # scans after pickup are never further apart outside incidents

# --- world -----------------------------------------------------------------------------------

WAREHOUSES = ("ICN-1", "PYT-2", "CHA-3")
_WH_WEIGHTS = (0.40, 0.35, 0.25)
_WH_NAME = {"ICN-1": "인천 풀필먼트센터", "PYT-2": "평택 물류센터", "CHA-3": "천안 물류센터"}
_WH_REGION = {"ICN-1": "ICN", "PYT-2": "GGI", "CHA-3": "CCN"}
SKUS_PER_WAREHOUSE = 150

CARRIERS = ("CJ", "HANJIN", "LOTTE")
_CARRIER_WEIGHTS = (0.50, 0.25, 0.25)
_CARRIER_PREFIX = {"CJ": "6", "HANJIN": "4", "LOTTE": "2"}
_HUBS = {
    "CJ": ("곤지암 메가허브", "대전 허브", "옥천 허브"),
    "HANJIN": ("대전 HUB", "군포 HUB"),
    "LOTTE": ("진천 메가허브", "청원 허브"),
}

REGIONS = ("SEL", "GGI", "ICN", "BSN", "DGU", "GWJ", "DJN", "ULS", "CCN", "JEJ")
_REGION_WEIGHTS = (0.25, 0.25, 0.08, 0.10, 0.07, 0.06, 0.06, 0.04, 0.05, 0.04)
_REGION_KO = {
    "SEL": "서울",
    "GGI": "경기",
    "ICN": "인천",
    "BSN": "부산",
    "DGU": "대구",
    "GWJ": "광주",
    "DJN": "대전",
    "ULS": "울산",
    "CCN": "충남",
    "JEJ": "제주",
}
_ADDRESS = {
    "SEL": (
        "서울특별시",
        ("강남구 테헤란로", "마포구 월드컵북로", "송파구 올림픽로", "노원구 동일로"),
    ),
    "GGI": ("경기도", ("성남시 분당구 판교역로", "수원시 영통구 광교로", "고양시 일산동구 중앙로")),
    "ICN": ("인천광역시", ("연수구 송도과학로", "남동구 예술로", "부평구 부평대로")),
    "BSN": ("부산광역시", ("해운대구 센텀중앙로", "부산진구 중앙대로", "수영구 광안해변로")),
    "DGU": ("대구광역시", ("수성구 달구벌대로", "중구 동성로")),
    "GWJ": ("광주광역시", ("서구 상무중앙로", "북구 용봉로")),
    "DJN": ("대전광역시", ("유성구 대학로", "서구 둔산로")),
    "ULS": ("울산광역시", ("남구 삼산로", "중구 성남로")),
    "CCN": ("충청남도", ("천안시 서북구 불당대로", "아산시 배방읍 희망로")),
    "JEJ": ("제주특별자치도", ("제주시 노형로", "서귀포시 중앙로")),
}
_SURNAMES = "김이박최정강조윤장임한오서신권황안송류홍"
_GIVEN = (
    "민준",
    "서준",
    "도윤",
    "예준",
    "시우",
    "하준",
    "지호",
    "현우",
    "서연",
    "서윤",
    "지우",
    "하은",
    "민서",
    "지유",
    "윤서",
    "채원",
    "수아",
    "지민",
    "은서",
    "예린",
)
_DROP_SPOTS = ("문 앞", "경비실", "무인택배함", "직접 수령")
# Orders per hour of the local day: heavier 09-23 h.
_HOUR_WEIGHTS = (
    0.6,
    0.4,
    0.3,
    0.2,
    0.2,
    0.3,
    0.5,
    0.8,
    1.2,
    1.8,
    2.0,
    2.1,
    2.2,
    2.0,
    1.9,
    1.9,
    1.8,
    1.9,
    2.1,
    2.4,
    2.6,
    2.7,
    2.4,
    1.5,
)

# Per-order incident probabilities (normal day, promotion day); mutually exclusive. These and
# the learnable causes below are the ``stress`` profile's (see PROFILES).
_ORDER_INCIDENTS = (
    ("waybill_missing", 0.010, 0.015),
    ("handover_missed", 0.015, 0.030),
    ("tracking_stale", 0.015, 0.020),
    ("carrier_exception", 0.007, 0.010),
)
CANCEL_RATE = 0.01
ADDRESS_CHANGE_RATE = 0.015
# Learnable delay causes: facts known when the order is placed that raise its chance of being
# late, as real networks have them (issue #4). A model can only warn early about these; the
# incidents above stay random. Each is drawn per order, so outcomes remain noisy.
# - slow lanes: a carrier's weak destinations (islands, regions served by a partner)
SLOW_LANES = {  # (carrier, destination) -> share of parcels with +14..30 h in transit
    ("HANJIN", "JEJ"): 0.75,
    ("HANJIN", "GWJ"): 0.60,
    ("LOTTE", "JEJ"): 0.65,
    ("LOTTE", "ULS"): 0.50,
    ("CJ", "JEJ"): 0.35,
}
# - hub congestion under promotion load: one carrier's hubs run out of capacity
CONGESTION = {"LOTTE": (0.40, 10, 24), "CJ": (0.12, 0, 10), "HANJIN": (0.12, 0, 10)}
# - cut-off rush: paid in the two hours before the 18:00 cut-off, the warehouse may not make
#   the day's handover; CHA-3 has no evening shift
CUTOFF_RUSH_FROM = 16  # local hour
CUTOFF_RUSH = {"ICN-1": 0.10, "PYT-2": 0.20, "CHA-3": 0.60}


@dataclass(frozen=True)
class Profile:
    """How often things go wrong in a simulated world (issue #8).

    ``incidents``: (kind, p normal day, p promotion day), mutually exclusive per order;
    ``cutoff_rush``: per warehouse, the chance an order paid 16:00-18:00 misses the handover;
    ``slow_lanes``: (carrier, destination) -> share of parcels slow in transit;
    ``congestion``: per carrier, (share of promotion-day parcels held, min h, max h);
    ``oversell``: (earliest, spread) of where in the promotion day a deal SKU runs out, as a
    share of the day (later: fewer orders wait for its restock).
    The same causes in both profiles, so detectors and models meet the same kinds of delay;
    only their rates differ.
    """

    name: str
    incidents: tuple[tuple[str, float, float], ...]
    cutoff_rush: dict[str, float]
    slow_lanes: dict[tuple[str, str], float]
    congestion: dict[str, tuple[float, int, int]]
    oversell: tuple[float, float]


# ``stress``: the world every test threshold and README figure before issue #8's field rates
# was measured on (16 % of due orders late). ``field``: the rates the field reports, the
# default: 4-6 % late, tracking not updated for 1-2 % of orders and ~5 % on a promotion day
# (carriers' scanning falls behind under the surge), everything else scaled down to fit.
PROFILES = {
    "field": Profile(
        "field",
        incidents=(
            ("waybill_missing", 0.003, 0.003),
            ("handover_missed", 0.004, 0.004),
            ("tracking_stale", 0.015, 0.050),
            ("carrier_exception", 0.002, 0.002),
        ),
        cutoff_rush={"ICN-1": 0.01, "PYT-2": 0.02, "CHA-3": 0.06},
        slow_lanes={lane: p / 5 for lane, p in SLOW_LANES.items()},
        congestion={"LOTTE": (0.01, 10, 24), "CJ": (0.003, 0, 10), "HANJIN": (0.003, 0, 10)},
        oversell=(0.92, 0.06),
    ),
    "stress": Profile("stress", _ORDER_INCIDENTS, CUTOFF_RUSH, SLOW_LANES, CONGESTION,
                      oversell=(0.75, 0.2)),
}
DEFAULT_PROFILE = "field"
# Scenarios (issue #8), on the promotion day (the second day without one); each leaves every
# other order as it is and labels what it did: a ``scenario`` entry in the meta record and an
# incident of its name on each order it affected.
SCENARIOS = {
    "carrier_outage": "CJ's scan feed is silent 10:00-14:00; the scans of those hours arrive "
                      "in a burst when it returns",
    "hub_congestion": "옥천 허브 (CJ) holds every parcel arriving from 00:00 to 12:00 the next "
                      "day for an extra day",
    "integration_failure": "orders paid 12:00-16:00 reach the WMS only at 16:00: no pick, "
                           "no waybill before",
}
OUTAGE_CARRIER, CONGESTED_HUB = "CJ", "옥천 허브"
_SCENARIO_HOURS = {"carrier_outage": (10, 14), "hub_congestion": (0, 36),
                   "integration_failure": (12, 16)}
MISDELIVERY_RATE = 0.003  # parcels sent out from another region's delivery centre
OVERSELL_SHARE = 0.01
NEGATIVE_SHARE = 0.002

# Noise rates.
DUPLICATE_RATE = 0.01
OUT_OF_ORDER_RATE = 0.02
LATE_RATE = 0.01
MALFORMED_RATE = 0.003
MALFORMED_KINDS = (
    "invalid_json",
    "undecodable",
    "unknown_enum",
    "missing_field",
    "future_timestamp",
    "naive_timestamp",
)

# --- time helpers ----------------------------------------------------------------------------

_EPOCH_DATE = date(1970, 1, 1)
_DATE_STR: dict[int, str] = {}


def _day0(ms: int) -> int:
    """Local (KST) midnight of the day containing ``ms``."""
    return (ms + _OFFSET) // DAY * DAY - _OFFSET


def _tod(ms: int) -> int:
    """Local time of day in ms."""
    return (ms + _OFFSET) % DAY


def _iso(ms: int) -> str:
    """ISO-8601 with millisecond precision and the +09:00 offset."""
    secs, frac = divmod(ms + _OFFSET, 1000)
    days, sod = divmod(secs, 86_400)
    ds = _DATE_STR.get(days)
    if ds is None:
        ds = _DATE_STR[days] = (_EPOCH_DATE + timedelta(days=days)).isoformat()
    hh, rem = divmod(sod, 3600)
    mm, ss = divmod(rem, 60)
    return f"{ds}T{hh:02d}:{mm:02d}:{ss:02d}.{frac:03d}+09:00"


def _to_ms(value: datetime) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    return round(value.timestamp() * 1000)


# --- model objects ---------------------------------------------------------------------------


class _Sku:
    __slots__ = (
        "avail",
        "backlog",
        "backlog_qty",
        "deal_p",
        "demand",
        "frozen",
        "inbound",
        "initial",
        "key",
        "mismatch",
        "price",
        "receipts",
        "resolution",
        "rop",
        "short",
        "sku",
        "wh",
        "wms",
    )

    def __init__(self, wh: str, sku: str, price: int) -> None:
        self.wh = wh
        self.sku = sku
        self.key = f"{wh}:{sku}"
        self.price = price
        self.demand: list[tuple[int, int]] = []  # (order time, qty), oracle for the planner
        self.initial = 0
        self.avail = 0  # on hand minus open demand (may go negative = oversold)
        self.inbound = 0  # ordered restock not yet received
        self.rop = 0
        self.frozen = False  # oversell: no restock until resolution
        self.resolution: list[Any] | None = None
        self.receipts: list[list[Any]] = []  # pending restock entries [qty, void, resolution]
        self.backlog: deque[tuple[_Order, int]] = deque()
        self.backlog_qty = 0
        self.short = False
        self.deal_p = 0.0
        self.wms: list[tuple[int, int]] = []  # (occurred ms, signed delta) of the WMS ledger
        self.mismatch: tuple[int, int] | None = None  # (from ms, units OMS still believes in)


class _Order:
    __slots__ = (
        "cancelled",
        "carrier",
        "congestion",
        "cust",
        "idx",
        "incident",
        "lines",
        "oid",
        "pay",
        "pending",
        "promo",
        "ready",
        "region",
        "service",
        "slow",
        "t0",
        "wh",
    )

    def __init__(self, idx: int, t0: int) -> None:
        self.idx = idx
        self.oid = ""
        self.t0 = t0
        self.pay = 0
        self.wh = ""
        self.carrier = ""
        self.region = ""
        self.service = "standard"
        self.cust: tuple[str, str, str, str, str] = ("", "", "", "", "")
        self.lines: list[tuple[_Sku, int]] = []
        self.cancelled = False
        self.incident: str | None = None
        self.slow = 0
        self.congestion = 0
        self.promo = False
        self.pending = 0  # lines waiting for restock
        self.ready: int | None = None  # stock-ready time of a shortage order


# --- simulator -------------------------------------------------------------------------------


class _Sim:
    def __init__(self, orders: int, seed: int, start: datetime, promo: bool, noise: bool,
                 scenario: str | None = None, scenario_hours: float | None = None,
                 profile: str = DEFAULT_PROFILE):
        self.n_orders = orders
        self.profile = PROFILES[profile]
        self.seed = seed
        self.rng = random.Random(seed)
        self.rnd = self.rng.random
        self.start = _to_ms(start)
        self.promo_enabled = promo
        self.noise = noise
        self.days = max(3, orders // 4000)
        self.promo_day = self.days // 2 if promo else None
        base = _day0(self.start)
        self.promo_start = base + self.promo_day * DAY if self.promo_day is not None else None
        self.scenario, self.scenario_hours = scenario, scenario_hours
        self.window = (0, 0)  # the scenario's [start, end), epoch ms
        if scenario is not None:
            day = self.promo_start if self.promo_start is not None else base + DAY
            lo, end = _SCENARIO_HOURS[scenario]
            hi = float(end if scenario_hours is None else lo + scenario_hours)
            self.window = (day + lo * HOUR, day + int(hi * HOUR))
        # the scenario's own draws: every other order stays as the same seed makes it
        self.srng = random.Random(f"{seed}:{scenario}")
        # misdelivered parcels: their own draws, so every other record stays as it was
        self.mrng = random.Random(f"{seed}:misdelivery")
        # which cancels lose their reservation release: drawn apart from self.rng, and the
        # records are still made (event numbers, latencies, noise draws) and dropped at the
        # end, so the rest of the world is byte for byte what it was before they were
        self.release_rng = random.Random(f"{seed}:release")
        self.dropped: set[str] = set()
        self.affected = 0
        self.records: list[dict[str, Any]] = []
        self.scan_idx: list[int] = []
        self.order_idx: list[int] = []
        self.event_no = 0
        self.stock_incidents: dict[str, list[dict[str, Any]]] = {}
        self.receipts: list[tuple[int, _Sku, int]] = []
        self.accidental_shortages = 0

    # random helpers
    def span(self, lo: int, hi: int) -> int:
        return lo + int((hi - lo) * self.rnd())

    def _eid(self) -> str:
        self.event_no += 1
        return f"e-{self.event_no}"

    def _lat(self) -> int:
        return self.span(200, 5 * SEC)

    def _emit(self, topic: str, key: str, arrival: int, value: dict[str, Any]) -> None:
        self.records.append({"topic": topic, "key": key, "ts": arrival, "value": value})

    # ---- world -----------------------------------------------------------------------------
    def build_world(self) -> None:
        rng = self.rng
        self.skus: dict[str, list[_Sku]] = {}
        self.sku_cum: dict[str, list[float]] = {}
        for wh in WAREHOUSES:
            items = []
            for i in range(1, SKUS_PER_WAREHOUSE + 1):
                items.append(_Sku(wh, f"SKU-{i:04d}", rng.randrange(50, 1200) * 100))
            weights = [rng.lognormvariate(0.0, 0.6) for _ in items]
            self.skus[wh] = items
            self.sku_cum[wh] = list(accumulate(weights))
        self.all_skus = [s for wh in WAREHOUSES for s in self.skus[wh]]
        self.customers: dict[int, tuple[str, str, str, str, str]] = {}
        self.n_customers = max(20, int(self.n_orders * 0.6))

    def _customer(self, idx: int) -> tuple[str, str, str, str, str]:
        """(ref, tier, region, name, phone+address packed) -- PII generated once per customer."""
        cust = self.customers.get(idx)
        if cust is None:
            rng = self.rng
            ref = "c-" + hashlib.blake2b(f"{self.seed}/{idx}".encode(), digest_size=6).hexdigest()
            tier = "vip" if self.rnd() < 0.08 else "standard"
            region = rng.choices(REGIONS, _REGION_WEIGHTS)[0]
            name = rng.choice(_SURNAMES) + rng.choice(_GIVEN)
            phone = f"010-{rng.randrange(1000, 10000)}-{rng.randrange(10000):04d}"
            prov, streets = _ADDRESS[region]
            address = (
                f"{prov} {rng.choice(streets)} {rng.randrange(1, 400)}, "
                f"{rng.randrange(101, 120)}동 {rng.randrange(1, 25)}{rng.randrange(1, 5):02d}호"
            )
            cust = self.customers[idx] = (ref, tier, region, name, f"{phone}|{address}")
        return cust

    def _promo_at(self, t: int) -> bool:
        ps = self.promo_start
        return ps is not None and ps <= t < ps + DAY

    # ---- orders ----------------------------------------------------------------------------
    def generate_orders(self) -> None:
        rng, rnd = self.rng, self.rnd
        base = _day0(self.start)
        day_w = [3.0 if d == self.promo_day else 1.0 for d in range(self.days)]
        day_cum = list(accumulate(day_w))
        hour_cum = list(accumulate(_HOUR_WEIGHTS))
        times = []
        for _ in range(self.n_orders):
            d = bisect_right(day_cum, rnd() * day_cum[-1])
            h = bisect_right(hour_cum, rnd() * hour_cum[-1])
            t = base + min(d, self.days - 1) * DAY + min(h, 23) * HOUR + int(rnd() * HOUR)
            if t < self.start + MIN:
                t = self.start + MIN + int(rnd() * HOUR)
            times.append(t)
        times.sort()
        self.orders: list[_Order] = []
        prof = self.profile
        incidents = prof.incidents
        for i, t0 in enumerate(times):
            o = _Order(i, t0)
            o.oid = f"ORD-{_iso(t0)[:10].replace('-', '')}-{i + 1:06d}"
            o.promo = self._promo_at(t0)
            o.pay = t0 + self.span(MIN, 20 * MIN)
            o.wh = rng.choices(WAREHOUSES, _WH_WEIGHTS)[0]
            o.carrier = rng.choices(CARRIERS, _CARRIER_WEIGHTS)[0]
            o.service = "express" if rnd() < 0.10 else "standard"
            o.cust = self._customer(rng.randrange(self.n_customers))
            o.region = o.cust[2]
            n_lines = 1 if (u := rnd()) < 0.6 else (2 if u < 0.9 else 3)
            cum, items = self.sku_cum[o.wh], self.skus[o.wh]
            chosen: list[_Sku] = []
            for _ in range(n_lines * 3):
                s = items[min(bisect_right(cum, rnd() * cum[-1]), len(items) - 1)]
                if s not in chosen:
                    chosen.append(s)
                if len(chosen) == n_lines:
                    break
            o.lines = [(s, 1 if rnd() < 0.8 else 2) for s in chosen]
            if rnd() < CANCEL_RATE:
                o.cancelled = True
            else:
                u = rnd()
                acc = 0.0
                for kind, p_norm, p_promo in incidents:
                    acc += p_promo if o.promo else p_norm
                    if u < acc:
                        o.incident = kind
                        break
                if o.incident is None and (
                    CUTOFF_RUSH_FROM * HOUR <= _tod(o.pay) < 18 * HOUR
                    and rnd() < prof.cutoff_rush[o.wh]
                ):
                    o.incident = "handover_missed"
                p_slow = prof.slow_lanes.get((o.carrier, o.region), 0.0)
                if p_slow and rnd() < p_slow:
                    o.slow = self.span(14 * HOUR, 30 * HOUR)
                p_jam, lo_h, hi_h = prof.congestion[o.carrier]
                if o.promo and rnd() < p_jam:
                    o.congestion = self.span(lo_h * HOUR, hi_h * HOUR)
                for s, q in o.lines:
                    s.demand.append((t0, q))
            self.orders.append(o)

    # ---- inventory planning ----------------------------------------------------------------
    def plan_inventory(self) -> None:
        rng, span = self.rng, self.span
        for s in self.all_skus:
            dem = s.demand
            peak = window = j = 0
            for t, q in dem:
                window += q
                while dem[j][0] <= t - 36 * HOUR:
                    window -= dem[j][1]
                    j += 1
                peak = max(peak, window)
            s.rop = math.ceil(peak * 1.25) + 10
            s.initial = max(rng.randint(80, 400), s.rop + rng.randint(10, 60))
            s.avail = s.initial
        deal: list[_Sku] = []
        if self.promo_start is not None:
            n_deal = max(1, round(OVERSELL_SHARE * len(self.all_skus)))
            deal = rng.sample(self.all_skus, n_deal)
        self.deal = deal
        deal_by_wh = {wh: [s for s in deal if s.wh == wh] for wh in WAREHOUSES}
        promo_orders = {wh: 0 for wh in WAREHOUSES}
        for o in self.orders:
            if o.promo and not o.cancelled:
                promo_orders[o.wh] += 1

        heap: list[tuple[int, int, str, _Sku, Any]] = []
        seq = 0

        def push(t: int, kind: str, s: _Sku, payload: Any) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (t, seq, kind, s, payload))

        def release(s: _Sku, t: int) -> None:
            deficit = max(0, -s.avail)
            while s.backlog and s.backlog_qty - s.backlog[0][1] >= deficit:
                o, q = s.backlog.popleft()
                s.backlog_qty -= q
                o.pending -= 1
                o.ready = t if o.ready is None else max(o.ready, t)
            if not s.backlog:
                s.short = False

        def apply(t: int, kind: str, s: _Sku, entry: list[Any]) -> None:
            qty, void, resolution = entry
            if void:
                return
            if resolution:
                qty = max(0, -s.avail) + span(100, 301)
                s.frozen = False
                s.resolution = None
            else:
                s.inbound -= qty
                s.receipts[:] = [e for e in s.receipts if e is not entry]
            self.receipts.append((t, s, qty))
            s.avail += qty
            release(s, t)

        freeze_at = self.promo_start
        for o in self.orders:
            t = o.t0
            while heap and heap[0][0] <= t:
                et, _, kind, s, entry = heapq.heappop(heap)
                apply(et, kind, s, entry)
            if freeze_at is not None and t >= freeze_at:
                freeze_at = None
                for s in deal:
                    for entry in s.receipts:
                        entry[1] = True
                    s.receipts.clear()
                    s.inbound = 0
                    s.frozen = True
                    normal = sum(q for dt, q in s.demand if t <= dt < t + DAY)
                    first, spread = self.profile.oversell  # share of the promotion day
                    frac = first + spread * self.rnd()
                    extra = max(5.0, s.avail / frac - normal)
                    s.deal_p = min(0.5, extra / (1.5 * max(1, promo_orders[s.wh])))
            if o.cancelled:
                continue
            if o.promo:
                for s in deal_by_wh[o.wh]:
                    if self.rnd() < s.deal_p and all(s is not ls for ls, _ in o.lines):
                        o.lines.append((s, self.rng.choice((1, 2))))
            for s, q in o.lines:
                s.avail -= q
                if s.avail < 0:
                    s.backlog.append((o, q))
                    s.backlog_qty += q
                    o.pending += 1
                    if not s.short:
                        s.short = True
                        self.stock_incidents.setdefault(s.key, []).append(
                            {"kind": "oversell", "detectable_at": _iso(t)}
                        )
                        if not s.frozen:
                            self.accidental_shortages += 1
                    if s.frozen and s.resolution is None:
                        s.resolution = [0, False, True]
                        push(t + span(24 * HOUR, 48 * HOUR), "recv", s, s.resolution)
                if not s.frozen:
                    while s.avail + s.inbound < s.rop:
                        qty = span(100, 301)
                        entry = [qty, False, False]
                        s.receipts.append(entry)
                        s.inbound += qty
                        push(t + span(12 * HOUR, 36 * HOUR), "recv", s, entry)
        while heap:
            et, _, kind, s, entry = heapq.heappop(heap)
            apply(et, kind, s, entry)

    # ---- per-order flows -------------------------------------------------------------------
    def _next_slot(self, t: int) -> int:
        """Out-for-delivery wave not before ``t``: 07:00-10:00 or (delayed parcels) 13:00-15:00."""
        d = _day0(t)
        for lo_h, hi_h in ((7, 10), (13, 15), (31, 34)):
            lo, hi = max(t, d + lo_h * HOUR), d + hi_h * HOUR
            if lo <= hi:
                return lo + self.span(0, hi - lo)
        raise AssertionError("unreachable")

    def _deliver_after(self, ofd: int) -> int:
        """Delivered 1-9 h after out-for-delivery, always before 21:30 local."""
        hi = min(9 * HOUR, _day0(ofd) + 21 * HOUR + 30 * MIN - ofd)
        return ofd + self.span(min(HOUR, hi), hi)

    def _daytime(self, t: int) -> int:
        tod = _tod(t)
        if tod < 9 * HOUR:
            return _day0(t) + 9 * HOUR + self.span(0, 3 * HOUR)
        if tod > 21 * HOUR:
            return _day0(t) + DAY + 9 * HOUR + self.span(0, 3 * HOUR)
        return t

    def run_order(self, o: _Order) -> dict[str, Any]:
        span, rnd = self.span, self.rnd
        p = o.pay
        d0 = _day0(p) if _tod(p) < 18 * HOUR else _day0(p) + DAY  # dispatch day (local)
        promised = d0 + DAY + 22 * HOUR
        self._emit_order_events(o, promised)
        truth: dict[str, Any] = {
            "type": "order",
            "order_id": o.oid,
            "promised_at": _iso(promised),
            "delivered_at": None,
            "cancelled": o.cancelled,
            "late": False,
            "carrier": o.carrier,
            "warehouse_id": o.wh,
            "incidents": [],
        }
        if o.cancelled:
            c = p + span(10 * MIN, 25 * MIN)
            self._emit_order(
                o, "order_cancelled", c, {"attributes": {"reason": "customer_request"}}
            )
            # a few cancels never release their reservation (the OMS drops it): their own
            # draw, so every other record of the world stays as this seed makes it
            kept = self.release_rng.random() >= UNRELEASED_RATE
            for s, q in o.lines:
                self._emit_inv(s, "reservation_released", c, q, "oms", o.oid)
                if not kept:
                    self.dropped.add(self.records[-1]["value"]["event_id"])
            if not kept and o.lines:
                truth["incidents"].append({"kind": "reservation_not_released",
                                           "detectable_at": _iso(c + RELEASE_GRACE)})
            return truth
        incidents: list[dict[str, Any]] = truth["incidents"]
        kind = o.incident
        if o.ready is not None or o.pending:
            incidents.append({"kind": "stock_shortage", "detectable_at": _iso(o.t0)})
            if kind in ("waybill_missing", "handover_missed"):
                kind = None
        if o.pending:  # never restocked (should not happen): nothing ships
            truth["late"] = True
            return truth
        late_cut = 18 * HOUR + 30 * MIN
        if o.ready is not None:
            w = max(o.ready, p) + span(30 * MIN, 4 * HOUR)
            pu_day = max(d0, _day0(w) if _tod(w) <= late_cut else _day0(w) + DAY)
        elif kind == "waybill_missing":
            deadline = d0 + 19 * HOUR
            incidents.append({"kind": kind, "detectable_at": _iso(deadline)})
            w = deadline + span(8 * HOUR, 30 * HOUR)
            pu_day = _day0(w) if _tod(w) <= late_cut else _day0(w) + DAY
        else:
            if _tod(p) < 18 * HOUR:
                room = min(4 * HOUR, d0 + late_cut - p)
                w = p + span(30 * MIN, max(30 * MIN, room))
            else:
                w = d0 + span(8 * HOUR, 16 * HOUR)
            pu_day = d0
            if self._in_window("integration_failure", p):
                # the WMS learns of the order when the integration is back
                w = max(w, self.window[1] + int(self.srng.uniform(30 * MIN, 3 * HOUR)))
                pu_day = max(d0, _day0(w) if _tod(w) <= late_cut else _day0(w) + DAY)
                self._affect(incidents, "integration_failure", p)
            if kind == "handover_missed":
                pu_day += DAY
                incidents.append({"kind": kind, "detectable_at": _iso(d0 + 23 * HOUR)})
        pick = w - span(0, 10 * MIN)
        for s, q in o.lines:
            self._emit_inv(s, "stock_picked", pick, q, "wms", o.oid)
            s.wms.append((pick, -q))
        if rnd() < ADDRESS_CHANGE_RATE:
            self._emit_address_change(o, min(p + span(5 * MIN, 2 * HOUR), w))
        pu = pu_day + span(19 * HOUR, 22 * HOUR)

        wh_loc = _WH_NAME[o.wh]
        hub1 = self.rng.choice(_HUBS[o.carrier])
        hub2 = f"{_REGION_KO[o.region]} 서브터미널"
        gaps = [
            span(HOUR, 4 * HOUR),
            span(HOUR, 5 * HOUR),
            span(2 * HOUR, 6 * HOUR),
            span(30 * MIN, 2 * HOUR),
        ]
        ofd = _day0(pu) + DAY + span(7 * HOUR, 10 * HOUR)
        room = ofd - pu - span(15 * MIN, 60 * MIN)
        total = sum(gaps)
        if total > room:
            gaps = [g * room // total for g in gaps]
        if o.congestion:
            gaps[1] += o.congestion
        if o.slow:
            gaps[2] += o.slow
        if o.congestion or o.slow:
            incidents.append({"kind": "transit_slow", "detectable_at": None})
        chain: list[list[Any]] = []
        t = pu
        for g, st, loc in zip(
            gaps,
            ("arrived_at_hub", "departed_hub", "arrived_at_hub", "departed_hub"),
            (hub1, hub1, hub2, hub2),
            strict=True,
        ):
            t += g
            chain.append([t, st, loc])
        scans: list[list[Any]] = [[w, "waybill_created", wh_loc], [pu, "picked_up", wh_loc]]
        stale_from: int | None = None
        tail: list[list[Any]] | None = None  # scans after the hub chain, if not the normal tail
        if kind == "carrier_exception" and rnd() < 0.5:
            k = self.rng.randrange(3)
            ex = chain[k][0] + span(30 * MIN, 3 * HOUR)
            incidents.append({"kind": kind, "detectable_at": _iso(ex)})
            for hop in chain[k + 1 :]:
                hop[0] += DAY
            chain.insert(k + 1, [ex, "exception", chain[k][2]])
        elif kind == "tracking_stale":
            k = self.rng.randrange(5)  # 0 = pickup, 1..4 = hub scans
            last = pu if k == 0 else chain[k - 1][0]
            silence = span(30 * HOUR, 60 * HOUR)
            incidents.append({"kind": kind, "detectable_at": _iso(last + STALE_AFTER)})
            stale_from = last
            rest = chain[k:]
            chain = chain[:k]
            if rnd() < 0.4 or not rest:
                delivered = self._daytime(last + silence)
                tail = [[delivered, "delivered", self.rng.choice(_DROP_SPOTS)]]
            else:
                shift = last + silence - rest[0][0]
                for hop in rest:
                    hop[0] += shift
                chain.extend(rest)
        scans.extend(chain)
        if tail is None:
            end = scans[-1][0]
            if end + 10 * MIN > ofd:
                ofd = self._next_slot(end + 30 * MIN)
            out_loc = f"{_REGION_KO[o.region]} 배송센터"
            delivered = self._deliver_after(ofd)
            tail = [[ofd, "out_for_delivery", out_loc]]
            if kind == "carrier_exception" and not any(sc[1] == "exception" for sc in scans):
                incidents.append({"kind": kind, "detectable_at": _iso(delivered)})
                tail.append([delivered, "delivery_failed", out_loc])
                ofd = _day0(delivered) + DAY + span(7 * HOUR, 10 * HOUR)
                delivered = self._deliver_after(ofd)
                tail.append([ofd, "out_for_delivery", out_loc])
            if rnd() < 0.6:
                tail[-1].append(delivered + span(-HOUR, HOUR))  # carrier_eta
            tail.append([delivered, "delivered", self.rng.choice(_DROP_SPOTS)])
        if self.mrng.random() < MISDELIVERY_RATE:
            self._misroute(o, tail, incidents)
        scans.extend(tail)
        scans = self._fill_gaps(scans, stale_from, o.region)
        self._hold(scans, hub1, incidents)
        delivered = scans[-1][0]
        if (self.scenario == "carrier_outage" and o.carrier == OUTAGE_CARRIER
                and pu < self.window[1] and delivered > self.window[0]):
            self._affect(incidents, "carrier_outage", self.window[0])  # in flight, unheard
        truth["delivered_at"] = _iso(delivered)
        truth["late"] = delivered > promised
        self._emit_scans(o, scans)
        return truth

    def _misroute(self, o: _Order, tail: list[list[Any]],
                  incidents: list[dict[str, Any]]) -> None:
        """The parcel goes out for delivery from another region's delivery centre."""
        wrong = self.mrng.choice([r for r in REGIONS if r != o.region])
        hops = [sc for sc in tail if sc[1] == "out_for_delivery"]
        for sc in hops:
            sc[2] = f"{_REGION_KO[wrong]} 배송센터"
        if hops:
            incidents.append({"kind": "misdelivery", "detectable_at": _iso(hops[0][0])})

    def _in_window(self, scenario: str, t: int) -> bool:
        return self.scenario == scenario and self.window[0] <= t < self.window[1]

    def _affect(self, incidents: list[dict[str, Any]], kind: str, t: int) -> None:
        self.affected += 1
        incidents.append({"kind": kind, "detectable_at": _iso(t)})

    def _hold(self, scans: list[list[Any]], hub: str, incidents: list[dict[str, Any]]) -> None:
        """hub_congestion: a parcel arriving at the congested hub in the window leaves it a day
        later, and every scan after moves with it (times of day kept; the hub scans nothing
        while it holds; no new draw, so the orders after it stay the same)."""
        if hub != CONGESTED_HUB:
            return
        arrive = next((sc[0] for sc in scans if sc[1] == "arrived_at_hub" and sc[2] == hub),
                      None)
        if arrive is None or not self._in_window("hub_congestion", arrive):
            return
        for sc in scans:
            if sc[0] > arrive:
                sc[0] += DAY
                if len(sc) > 3:
                    sc[3] += DAY  # the carrier's ETA knows
        self._affect(incidents, "hub_congestion", arrive)

    def _fill_gaps(
        self, scans: list[list[Any]], stale_from: int | None, region: str
    ) -> list[list[Any]]:
        """Insert hub scans so that no gap after pickup reaches 13 h (except the stale one)."""
        out = scans[:2]
        loc = f"{_REGION_KO[region]} 환적센터"
        for nxt in scans[2:]:
            prev = out[-1][0]
            gap = nxt[0] - prev
            if gap >= _MAX_NORMAL_GAP and prev != stale_from:
                n = math.ceil(gap / (12 * HOUR)) - 1
                for i in range(1, n + 1):
                    st = "arrived_at_hub" if i % 2 else "departed_hub"
                    out.append([prev + gap * i // (n + 1), st, loc])
            out.append(nxt)
        return out

    # ---- emission --------------------------------------------------------------------------
    def _order_value(self, o: _Order, kind: str, t: int, extra: dict[str, Any]) -> dict[str, Any]:
        value = {
            "schema_version": 1,
            "event_id": self._eid(),
            "event_type": kind,
            "occurred_at": _iso(t),
            "order_id": o.oid,
        }
        value.update(extra)
        return value

    def _emit_order(self, o: _Order, kind: str, t: int, extra: dict[str, Any]) -> None:
        self.order_idx.append(len(self.records))
        self._emit("orders", o.oid, t + self._lat(), self._order_value(o, kind, t, extra))

    def _emit_order_events(self, o: _Order, promised: int) -> None:
        ref, tier, region, name, packed = o.cust
        phone, address = packed.split("|", 1)
        lines = [{"sku": s.sku, "quantity": q} for s, q in o.lines]
        weight = sum(q for _, q in o.lines) * (0.3 + 2.5 * self.rnd())
        deal = any(s in self.deal for s, _ in o.lines) if self.deal else False
        self._emit_order(
            o,
            "order_placed",
            o.t0,
            {
                "promised_at": _iso(promised),
                "customer_ref": ref,
                "customer_tier": tier,
                "warehouse_id": o.wh,
                "carrier": o.carrier,
                "service_level": o.service,
                "origin_region": _WH_REGION[o.wh],
                "destination_region": region,
                "lines": lines,
                "order_value": float(sum(s.price * q for s, q in o.lines)),
                "attributes": {
                    "channel": "app" if self.rnd() < 0.7 else "web",
                    "promo": o.promo or deal,
                    "gift_wrap": self.rnd() < 0.05,
                    "weight_kg": round(weight, 2),
                },
                "customer": {"name": name, "phone": phone, "address": address},
            },
        )
        self._emit_order(o, "payment_confirmed", o.pay, {})
        for s, q in o.lines:
            self._emit_inv(s, "stock_reserved", o.pay, q, "oms", o.oid)

    def _emit_address_change(self, o: _Order, t: int) -> None:
        prov, streets = _ADDRESS[o.region]
        address = f"{prov} {self.rng.choice(streets)} {self.rng.randrange(1, 400)}"
        self._emit_order(
            o,
            "address_changed",
            t,
            {
                "destination_region": o.region,
                "customer": {"name": o.cust[3], "address": address},
            },
        )

    def _emit_inv(
        self,
        s: _Sku,
        kind: str,
        t: int,
        qty: int,
        source: str,
        order_id: str | None = None,
        arrival: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        value: dict[str, Any] = {
            "schema_version": 1,
            "event_id": self._eid(),
            "event_type": kind,
            "occurred_at": _iso(t),
            "warehouse_id": s.wh,
            "sku": s.sku,
            "quantity": qty,
            "source": source,
        }
        if order_id is not None:
            value["order_id"] = order_id
        if extra:
            value.update(extra)
        self._emit("inventory", s.key, (t if arrival is None else arrival) + self._lat(), value)

    def _emit_scans(self, o: _Order, scans: list[list[Any]]) -> None:
        rnd, span = self.rnd, self.span
        tracking = f"{_CARRIER_PREFIX[o.carrier]}{self.rng.randrange(1000, 10000)}{o.idx:07d}"
        arrivals = []
        for sc in scans:
            arr = sc[0] + self._lat()
            if self.noise and rnd() < LATE_RATE:
                arr = sc[0] + span(HOUR, 6 * HOUR)
            arrivals.append(arr)
        if self.noise:
            for i in range(len(arrivals) - 1):
                if rnd() < OUT_OF_ORDER_RATE:
                    arrivals[i] = max(arrivals[i], arrivals[i + 1] + span(SEC, 10 * MIN))
        if self.scenario == "carrier_outage" and o.carrier == OUTAGE_CARRIER:
            lo, hi = self.window
            for i, sc in enumerate(scans):
                if lo <= sc[0] < hi:  # buffered by the carrier, re-sent when the feed is back
                    arrivals[i] = max(arrivals[i], hi + int(self.srng.uniform(0, 20 * MIN)))
        for sc, arr in zip(scans, arrivals, strict=True):
            value: dict[str, Any] = {
                "schema_version": 1,
                "event_id": self._eid(),
                "occurred_at": _iso(sc[0]),
                "tracking_number": tracking,
                "order_id": o.oid,
                "carrier": o.carrier,
                "scan_type": sc[1],
                "location": sc[2],
            }
            if len(sc) > 3:
                value["carrier_eta"] = _iso(sc[3])
            self.scan_idx.append(len(self.records))
            self._emit("carrier-scans", o.oid, arr, value)

    # ---- stock incidents and snapshots -----------------------------------------------------
    @staticmethod
    def _levels(s: _Sku) -> list[int]:
        """Level after each event of the (sorted) WMS ledger."""
        return list(accumulate((d for _, d in s.wms), initial=s.initial))[1:]

    def stock_incidents_and_snapshots(self, horizon: int) -> None:
        rng, span = self.rng, self.span
        for t, s, qty in self.receipts:
            self._emit_inv(s, "stock_received", t, qty, "wms")
            s.wms.append((t, qty))
        for s in self.all_skus:
            s.wms.sort(key=lambda e: e[0])
        taken = {s.key for s in self.deal}
        last_order = self.orders[-1].t0 if self.orders else self.start
        snap0 = self.start
        adjustments: list[tuple[_Sku, int, int, str]] = []
        if self.promo_start is not None:
            n_mis = max(1, round((0.02 + 0.02 * self.rnd()) * len(self.all_skus)))
            for s in rng.sample(self.all_skus, len(self.all_skus)):
                if n_mis == 0:
                    break
                if s.key in taken:
                    continue
                t = self.promo_start + span(HOUR, 23 * HOUR)
                levels = self._levels(s)
                i = bisect_right([e[0] for e in s.wms], t)
                before = levels[i - 1] if i else s.initial
                floor = min([before, *levels[i:]])
                units = min(rng.randint(3, 20), floor - 1)
                if units < 3:
                    continue
                n_mis -= 1
                taken.add(s.key)
                s.mismatch = (t, units)
                adjustments.append((s, t, -units, "damaged"))
                first_pair = snap0 + ((t - snap0) // SNAPSHOT_EVERY + 1) * SNAPSHOT_EVERY
                self.stock_incidents.setdefault(s.key, []).append(
                    {"kind": "stock_mismatch", "detectable_at": _iso(first_pair)}
                )
        n_neg = max(1, round(NEGATIVE_SHARE * len(self.all_skus)))
        for s in rng.sample(self.all_skus, len(self.all_skus)):
            if n_neg == 0:
                break
            if s.key in taken:
                continue
            levels = self._levels(s)
            best = None
            for i, (t, d) in enumerate(s.wms):
                if d >= 0 or not (self.start + 12 * HOUR <= t <= last_order) or i == 0:
                    continue
                if s.wms[i - 1][0] >= t - 2 * SEC:
                    continue
                before = levels[i - 1]
                if best is None or before < best[0]:
                    best = (before, i)
            if best is None:
                continue
            before, i = best
            pick_t = s.wms[i][0]
            n_neg -= 1
            taken.add(s.key)
            if before > 0:
                t_adj = max(s.wms[i - 1][0] + SEC, pick_t - span(5 * MIN, 30 * MIN))
                adjustments.append((s, t_adj, -before, "cycle_count"))
            self.stock_incidents.setdefault(s.key, []).append(
                {"kind": "negative_stock", "detectable_at": _iso(pick_t)}
            )
        for s, t, delta, reason in adjustments:
            self._emit_inv(s, "stock_adjusted", t, delta, "wms", extra={"reason": reason})
            s.wms.append((t, delta))
            s.wms.sort(key=lambda e: e[0])

        # Snapshot pairs: same occurred_at, the OMS copy arrives a minute later.
        snaps = []
        t = snap0
        while t <= horizon + SNAPSHOT_EVERY:
            snaps.append(t)
            if t > horizon:
                break
            t += SNAPSHOT_EVERY
        for s in self.all_skus:
            level, j, ledger = s.initial, 0, s.wms
            for t in snaps:
                while j < len(ledger) and ledger[j][0] <= t:
                    level += ledger[j][1]
                    j += 1
                oms = level
                if s.mismatch is not None and t >= s.mismatch[0]:
                    oms = level + s.mismatch[1]
                self._emit_inv(s, "stock_snapshot", t, level, "wms")
                self._emit_inv(s, "stock_snapshot", t, oms, "oms", arrival=t + MIN)

    # ---- noise -----------------------------------------------------------------------------
    def add_noise(self) -> int:
        rnd, span, rng = self.rnd, self.span, self.rng
        real = self.records
        dups = []
        for orig in real:
            if rnd() < DUPLICATE_RATE:
                dups.append(
                    {**orig, "ts": orig["ts"] + span(0, 30 * MIN), "value": dict(orig["value"])}
                )
        n_bad = round(MALFORMED_RATE * len(real))
        bad = []
        for n in range(1, n_bad + 1):
            kind = MALFORMED_KINDS[rng.randrange(len(MALFORMED_KINDS))]
            pool = self.scan_idx if kind != "missing_field" or rnd() < 0.5 else self.order_idx
            if not pool:
                break
            tmpl = real[pool[rng.randrange(len(pool))]]
            value = dict(tmpl["value"])
            value["event_id"] = f"m-{n}"
            rec: dict[str, Any] = {
                "topic": tmpl["topic"],
                "key": tmpl["key"],
                "ts": tmpl["ts"] + span(0, HOUR),
                "malformed": kind,
            }
            if kind == "invalid_json":
                text = orjson.dumps(value).decode()
                rec["raw"] = text[: max(5, len(text) // 2)]
            elif kind == "undecodable":
                rec["raw_b64"] = base64.b64encode(b"\xff\xfe\xc3(" + rng.randbytes(24)).decode()
            else:
                if kind == "unknown_enum":
                    value["scan_type"] = "teleported"
                elif kind == "missing_field":
                    del value["order_id"]
                elif kind == "future_timestamp":
                    value["occurred_at"] = "2099" + value["occurred_at"][4:]
                else:  # naive_timestamp
                    value["occurred_at"] = value["occurred_at"][:-6]
                rec["value"] = value
            bad.append(rec)
        real.extend(dups)
        real.extend(bad)
        return len(bad)

    # ---- driver ----------------------------------------------------------------------------
    def run(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.build_world()
        self.generate_orders()
        self.plan_inventory()
        order_truth = [self.run_order(o) for o in self.orders]
        horizon = max(self._occurred_max(), self.start + self.days * DAY)
        self.stock_incidents_and_snapshots(horizon)
        n_bad = self.add_noise() if self.noise else 0
        dropped = self.dropped
        records = sorted((r for r in self.records
                          if not dropped or r.get("value", {}).get("event_id") not in dropped
                          or r["topic"] != "inventory"),
                         key=lambda r: r["ts"])
        end = records[-1]["ts"] if records else self.start
        meta = {
            "type": "meta",
            "seed": self.seed,
            "orders": self.n_orders,
            "start": _iso(self.start),
            "end": _iso(end),
            "events": len(records),
            "malformed": n_bad,
            "days": self.days,
            "promo_day": (_iso(self.promo_start)[:10] if self.promo_start is not None else None),
            "profile": self.profile.name,
        }
        if self.scenario is not None:
            meta["scenario"] = {
                "name": self.scenario, "what": SCENARIOS[self.scenario] + (
                    f" (this run: {self.scenario_hours:g} h instead, see start and end)"
                    if self.scenario_hours else ""),
                "scope": {"carrier_outage": f"carrier:{OUTAGE_CARRIER}",
                          "hub_congestion": f"hub:{CONGESTED_HUB}",
                          "integration_failure": "feed:wms"}[self.scenario],
                "start": _iso(self.window[0]), "end": _iso(self.window[1]),
                "affected_orders": self.affected}
        stock_truth = [
            {"type": "stock", "key": key, "incidents": self.stock_incidents[key]}
            for key in sorted(self.stock_incidents)
        ]
        return records, [meta, *order_truth, *stock_truth]

    def _occurred_max(self) -> int:
        latest = self.start
        for rec in self.records:
            latest = max(latest, rec["ts"])
        for t, _, _ in self.receipts:
            latest = max(latest, t)
        return latest


def simulate(
    orders: int,
    seed: int,
    start: datetime | None = None,
    promo: bool = True,
    noise: bool = True,
    scenario: str | None = None,
    scenario_hours: float | None = None,
    profile: str = DEFAULT_PROFILE,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return ``(records, truth)`` for ``orders`` orders; deterministic per ``seed``.

    ``records`` are sorted by arrival ``ts`` (epoch ms); ``truth[0]`` is the meta record.
    ``promo=False`` drops the promotion day (surge, hub congestion, oversell and
    stock-mismatch incidents); ``noise=False`` drops duplicates, reordering, late and
    malformed records. ``scenario`` (a key of :data:`SCENARIOS`) adds one operational failure
    on the promotion day and leaves every other order as the same seed makes it;
    ``scenario_hours`` makes it last that long from its usual start (e.g. a carrier feed
    down for a day: long enough for in-flight orders to go stale). ``profile`` (a key of
    :data:`PROFILES`) sets how often orders go wrong: ``"field"`` (default) at the field's
    rates, ``"stress"`` the harder world of the figures measured before it (same records and
    truth as before profiles existed, but for the meta record's ``profile``).
    """
    if orders < 0:
        raise ValueError("orders must be >= 0")
    if scenario is not None and scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")
    if scenario_hours is not None and (scenario is None or scenario_hours <= 0):
        raise ValueError("scenario_hours needs a scenario and must be > 0")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
    sim = _Sim(orders, seed, DEFAULT_START if start is None else start, promo, noise, scenario,
               scenario_hours, profile)
    return sim.run()


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON Lines (orjson, one object per line)."""
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    with Path(path).open("wb") as fh:
        for row in rows:
            fh.write(dumps(row, option=opt))
