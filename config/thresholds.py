"""Detector thresholds: one validated YAML file, per carrier and service level."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from delaywatch.schemas.alerts import Severity

DEFAULT_THRESHOLDS_FILE = Path(__file__).with_name("thresholds.yaml")

STAGES_WITH_REMAINING = ("paid", "waybill", "picked_up", "out_for_delivery")


class LaneThresholds(BaseModel):
    """Thresholds for one (carrier, service level); every field in hours unless named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cutoff: time = time(18, 0)
    waybill_grace_h: float = Field(1.0, ge=0)
    handover_grace_h: float = Field(5.0, ge=0)
    stale_after_h: float = Field(20.0, gt=0)
    stale_escalate_h: float = Field(40.0, gt=0)
    remaining_h: dict[str, float] = Field(default_factory=dict)
    eta_margin_h: float = 0.0

    @field_validator("remaining_h")
    @classmethod
    def _known_stages(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(STAGES_WITH_REMAINING)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; use {STAGES_WITH_REMAINING}")
        return value


class StockThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mismatch_abs: int = Field(2, ge=0)
    mismatch_rel: float = Field(0.02, ge=0)
    snapshot_pair_window_h: float = Field(2.0, gt=0)
    # reservation_not_released: a cancelled order's OMS reservation still held this long
    # after the cancel (event time) opens the alert; one held give_up_h past that is dropped
    release_grace_h: float = Field(2.0, gt=0)
    release_give_up_h: float = Field(168.0, gt=0)


class EscalationThresholds(BaseModel):
    """When an unacknowledged open alert escalates (``delaywatch.core.escalation``).

    ``after_s``: seconds an alert may stay open at a severity, unacknowledged, before it
    escalates one step; a severity left out never escalates. ``max_level``: escalations per
    alert at most (a critical alert escalates to critical again: a re-page).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_s: dict[Severity, float] = Field(default_factory=lambda: {
        Severity.CRITICAL: 900.0, Severity.HIGH: 1800.0, Severity.MEDIUM: 7200.0})
    max_level: int = Field(3, ge=0)
    # an ack whose alert has not arrived is kept this long (the ack may come first)
    ack_keep_s: float = Field(86400.0, gt=0)
    # acked or resolved alerts are remembered this long (so a late or re-read message of
    # theirs is recognised), and open ones this long after their last message
    forget_closed_after_s: float = Field(2 * 86400.0, gt=0)
    forget_open_after_s: float = Field(14 * 86400.0, gt=0)

    @field_validator("after_s")
    @classmethod
    def _positive(cls, value: dict[Severity, float]) -> dict[Severity, float]:
        if any(v <= 0 for v in value.values()):
            raise ValueError("escalation times must be > 0 (leave a severity out for never)")
        return value


class SystemThresholds(BaseModel):
    """Admin alarms on alerts.system (``delaywatch.core.system``): records in the last
    ``window_s`` seconds at which an alarm opens (it resolves at half or below)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(300.0, gt=0)
    dlq_records: int = Field(20, ge=1)           # worker dead letters, any reason
    retries_exhausted: int = Field(1, ge=1)      # ... that outlived every retry tier
    notifier_dead_letters: int = Field(1, ge=1)  # alert messages the notifier gave up on


class MonitorThresholds(BaseModel):
    """Feed health and incidents (``delaywatch.core.monitor``); counts are learned online."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lateness_s: float = Field(900.0, ge=0)
    # feed health: buckets of bucket_min; silent = the last window_buckets together saw at
    # most silent_ratio of what this feed normally sees then (and that is >= min_expected)
    bucket_min: float = Field(10.0, gt=0)
    window_buckets: int = Field(3, ge=1)
    silent_ratio: float = Field(0.1, ge=0, lt=1)
    min_expected: float = Field(30.0, gt=0)
    recover_ratio: float = Field(0.5, gt=0)
    # judged only while all feeds together see at least this share of their normal: when
    # the whole shop is quiet (a holiday night, the end of a replayed file) silence says nothing
    alive_ratio: float = Field(0.5, gt=0, le=1)
    min_history_buckets: int = Field(144, ge=1)
    max_in_flight: int = Field(200_000, ge=100)
    # baselines: EWMA per bucket overall (alpha) and per hour of the day (slot_alpha), the
    # hour's own once it has min_slot_samples buckets
    alpha: float = Field(0.02, gt=0, le=1)
    slot_alpha: float = Field(0.3, gt=0, le=1)
    min_slot_samples: int = Field(2, ge=1)
    # incidents: a scope's lift (its share of the late/at-risk orders of its kind over
    # incident_window_buckets of incident_bucket_h, over its share of their traffic in the
    # last day) reaches incident_ratio x its normal lift, with >= incident_min_orders;
    # resolved after incident_calm_buckets at most incident_calm_ratio x the normal
    incident_bucket_h: float = Field(1.0, gt=0)
    incident_window_buckets: int = Field(6, ge=1)
    incident_min_orders: int = Field(30, ge=1)
    incident_ratio: float = Field(3.0, gt=1)
    incident_min_history_buckets: int = Field(24, ge=1)
    incident_calm_ratio: float = Field(1.5, gt=0)
    incident_calm_buckets: int = Field(3, ge=1)
    incident_max_listed: int = Field(5000, ge=0)
    # WMS progress (the OMS-to-WMS integration): orders paid after the latest-paid order a
    # warehouse has picked are waiting; each would normally have been picked by its age with
    # the share learned from that warehouse's payment-to-pick times for its hour of payment
    # (once wms_min_lags of them are known; halved above wms_max_lags so recent days weigh
    # most). Stalled when those shares sum to wms_missed_picks with >= wms_min_orders
    # waiting; caught up at wms_recover_ratio of that. Waiting orders are tracked up to
    # max_in_flight (the oldest forgotten first).
    wms_missed_picks: float = Field(8.0, gt=0)
    wms_recover_ratio: float = Field(0.25, gt=0, lt=1)
    wms_min_orders: int = Field(30, ge=1)
    wms_min_lags: int = Field(30, ge=1)
    wms_max_lags: int = Field(2000, ge=10)

class NoticeThresholds(BaseModel):
    """ETA-change notices (issue #8): an order with an open customer-facing alert is told
    again (``updated``, reason ``stage_changed`` / ``eta_changed``) when its stage changes or
    its ETA moves by ``eta_change_h``; at most ``max_per_day`` customer messages a day."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eta_change_h: float = Field(6.0, gt=0)
    max_per_day: int = Field(3, ge=0)


class FeedHoldThresholds(BaseModel):
    """Stale-tracking alerts a carrier's silent feed explains are held (``models.feeds``):
    a carrier is silent in a partition after ``silent_after_h`` without a scan once its
    share of the scans (learned over ``share_window_scans``) says ``min_expected`` of its own
    were due among the other carriers' since; held orders are looked at again every
    ``recheck_min``, alerted ``grace_h`` after the feed returns if still stale, and at most
    ``max_hold_h`` after their stale deadline. Only scans applied within
    ``backlog_after_min`` of happening count as a live feed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    silent_after_h: float = Field(1.0, gt=0)
    min_expected: float = Field(20.0, gt=0)
    share_window_scans: int = Field(1000, ge=10)
    backlog_after_min: float = Field(60.0, gt=0)  # older scans are backlog, not a live feed
    grace_h: float = Field(1.0, ge=0)
    recheck_min: float = Field(15.0, gt=0)
    max_hold_h: float = Field(24.0, ge=0)


class IntegrityThresholds(BaseModel):
    """Process-integrity checks (``models.rules.IntegrityRules``). Suspected misdelivery
    (``models.atlas``): a last-mile location seen ``misdelivery_min_seen`` times, at least
    ``misdelivery_min_top_share`` of them for one region, where the order's own region has
    under ``misdelivery_max_share``; at most ``max_locations`` places are remembered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    misdelivery_min_seen: int = Field(50, ge=1)
    misdelivery_min_top_share: float = Field(0.8, gt=0, le=1)
    misdelivery_max_share: float = Field(0.01, ge=0, lt=1)
    max_locations: int = Field(5000, ge=10)


NO_COMPENSATION = "none"


class CompensationRule(BaseModel):
    """One line of the compensation policy: a promise broken by at least ``late_h`` hours,
    for a customer of ``tier`` and a delay of one of ``causes`` (``*``: any), earns ``kind``
    worth ``amount_krw``, valid ``expires_days`` from the alert. ``kind: none`` is an explicit
    "no compensation" (e.g. the customer's own address problem)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    tier: str = "*"
    causes: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    late_h: float = Field(0.0, ge=0)
    kind: str
    amount_krw: int = Field(ge=0)
    expires_days: float = Field(30.0, gt=0)

    def matches(self, tier: str | None, late_h: float, cause: str | None) -> bool:
        return (self.tier in ("*", tier) and late_h >= self.late_h
                and ("*" in self.causes or cause in self.causes))


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "Asia/Seoul"
    defaults: LaneThresholds = LaneThresholds()
    service_levels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    carriers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    lanes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    stock: StockThresholds = StockThresholds()
    compensation: list[CompensationRule] = Field(default_factory=list)
    monitor: MonitorThresholds = MonitorThresholds()
    notices: NoticeThresholds = NoticeThresholds()
    feed_hold: FeedHoldThresholds = FeedHoldThresholds()
    integrity: IntegrityThresholds = IntegrityThresholds()
    escalation: EscalationThresholds = EscalationThresholds()
    system: SystemThresholds = SystemThresholds()

    @field_validator("compensation")
    @classmethod
    def _named_rules(cls, rules: list[CompensationRule]) -> list[CompensationRule]:
        # every rule gets a stable name (alerts carry it); unnamed ones their position
        named = [r if r.name else r.model_copy(update={"name": f"compensation[{i}]"})
                 for i, r in enumerate(rules)]
        names = [r.name for r in named]
        dup = sorted({n for n in names if names.count(n) > 1 and n is not None})
        if dup:
            raise ValueError(f"compensation rule names must be unique: {dup}")
        return named

    def model_post_init(self, __context: Any) -> None:
        # Validate every override eagerly so a typo fails at start-up, not at 3 a.m.
        for carrier in self.carriers:
            for sl in [*self.service_levels, "standard"]:
                self.for_lane(carrier, sl)
        for lane in self.lanes:
            carrier, _, sl = lane.partition("/")
            self.for_lane(carrier, sl)
        object.__setattr__(self, "_cache", {})

    def for_lane(self, carrier: str | None, service_level: str | None) -> LaneThresholds:
        cache: dict[tuple[str | None, str | None], LaneThresholds] = getattr(self, "_cache", {})
        hit = cache.get((carrier, service_level))
        if hit is not None:
            return hit
        merged = self.defaults.model_dump()
        for layer in (
            self.service_levels.get(service_level or "", {}),
            self.carriers.get(carrier or "", {}),
            self.lanes.get(f"{carrier}/{service_level}", {}),
        ):
            for name, value in layer.items():
                if name == "remaining_h":
                    merged["remaining_h"] = {**merged["remaining_h"], **value}
                else:
                    merged[name] = value
        result = LaneThresholds.model_validate(merged)
        cache[(carrier, service_level)] = result
        return result

    def compensation_for(self, tier: str | None, late_h: float,
                         cause: str | None = None) -> CompensationRule | None:
        """The first rule of the policy that matches (``kind`` may be ``none``), or None."""
        return next((r for r in self.compensation if r.matches(tier, late_h, cause)), None)


def load_thresholds(path: Path | None = None) -> Thresholds:
    raw = yaml.safe_load((path or DEFAULT_THRESHOLDS_FILE).read_text(encoding="utf-8")) or {}
    return Thresholds.model_validate(raw)
