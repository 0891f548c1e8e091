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


class CompensationRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: str = "*"
    late_h: float = Field(0.0, ge=0)
    kind: str
    amount_krw: int = Field(ge=0)


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "Asia/Seoul"
    defaults: LaneThresholds = LaneThresholds()
    service_levels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    carriers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    lanes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    stock: StockThresholds = StockThresholds()
    compensation: list[CompensationRule] = Field(default_factory=list)
    escalation: EscalationThresholds = EscalationThresholds()
    system: SystemThresholds = SystemThresholds()

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

    def compensation_for(self, tier: str | None, late_h: float) -> CompensationRule | None:
        for rule in self.compensation:
            if rule.tier in ("*", tier) and late_h >= rule.late_h:
                return rule
        return None


def load_thresholds(path: Path | None = None) -> Thresholds:
    raw = yaml.safe_load((path or DEFAULT_THRESHOLDS_FILE).read_text(encoding="utf-8")) or {}
    return Thresholds.model_validate(raw)
