"""Admin alarms on delaywatch's own health (issue #8): a pure core with explicit time.

:class:`SystemAlarms` counts failure records per kind in a sliding window and says, when asked
at a time ``now`` (``check``), which alarms open or resolve. Each alarm is an
:class:`~delaywatch.schemas.alerts.Alert` of category ``system`` and audience admin, for
``alerts.system``:

* ``dlq_rate`` -- records the worker dead-lettered (``delaywatch.dlq``), any reason;
* ``retries_exhausted`` -- those of them whose transient failure outlived every retry tier;
* ``notifier_failures`` -- alert messages the notifier gave up on (``alerts.dlq``).

An alarm opens when the count in a window of ``window_s`` seconds ending at one of its
records reaches the threshold (record times, not reading times: a burst read late, after a
downtime, is still reported, at its own time), and resolves when ``check`` finds the count
in the window ending ``now`` at half the threshold or below (hysteresis: a rate hovering at
the threshold does not flap). Episodes are numbered per kind, so ``alert_id`` is
deterministic (``alert_id_for(source, kind, episode)``) like the detectors' alerts. Counts are
kept in ``window_s / 60`` buckets, pruned by ``check`` up to a window before the kind's
latest record (or ``now``, if earlier): the state is bounded whatever the rate (60 buckets
plus those filled since the last check).

>>> from delaywatch.config.thresholds import SystemThresholds
>>> alarms = SystemAlarms(SystemThresholds(window_s=60, dlq_records=2))
>>> alarms.on_record("dlq_rate", 10.0); alarms.check(11.0)
[]
>>> alarms.on_record("dlq_rate", 12.0); [(a.kind, a.status.value) for a in alarms.check(13.0)]
[('dlq_rate', 'open')]
>>> [(a.kind, a.status.value) for a in alarms.check(80.0)]
[('dlq_rate', 'resolved')]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from delaywatch.config.thresholds import SystemThresholds
from delaywatch.schemas.alerts import Alert, AlertStatus, Audience, Severity, alert_id_for

__all__ = ["SYSTEM_KINDS", "Alarm", "SystemAlarms"]

SYSTEM_KINDS = ("dlq_rate", "retries_exhausted", "notifier_failures")


@dataclass(slots=True)
class Alarm:
    """One kind's window and episode (a JSON-able row)."""

    kind: str
    buckets: dict[int, int] = field(default_factory=dict)  # bucket number -> records
    episode: int = 0
    open: bool = False
    latest: float | None = None  # the latest record time seen
    unsent: tuple[float, int] | None = None  # opened at (record time, count), not yet sent

    def to_row(self) -> dict[str, Any]:
        return {**asdict(self), "buckets": {str(k): v for k, v in self.buckets.items()}}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Alarm:
        unsent = row.get("unsent")
        return cls(**{**row, "buckets": {int(k): v for k, v in row["buckets"].items()},
                      "unsent": tuple(unsent) if unsent is not None else None})


class SystemAlarms:
    """Failure counts per kind and the alarms they raise; see the module docstring."""

    def __init__(self, thresholds: SystemThresholds, source: str = "delaywatch") -> None:
        self.thresholds, self.source = thresholds, source
        self.bucket_s = thresholds.window_s / 60
        self.alarms = {kind: Alarm(kind) for kind in SYSTEM_KINDS}
        self._changed: set[str] = set()

    def threshold(self, kind: str) -> int:
        th = self.thresholds
        return {"dlq_rate": th.dlq_records, "retries_exhausted": th.retries_exhausted,
                "notifier_failures": th.notifier_dead_letters}[kind]

    def _first(self, end: float) -> int:
        return int((end - self.thresholds.window_s) // self.bucket_s) + 1

    def on_record(self, kind: str, at: float, n: int = 1) -> None:
        """Count ``n`` failure records of ``kind`` at time ``at``; opens the alarm (sent by
        the next ``check``) when the window ending at ``at`` reaches the threshold."""
        alarm = self.alarms[kind]
        bucket = int(at // self.bucket_s)
        alarm.buckets[bucket] = alarm.buckets.get(bucket, 0) + n
        alarm.latest = at if alarm.latest is None else max(alarm.latest, at)
        if not alarm.open:
            count = self.count(kind, at)
            if count >= self.threshold(kind):
                alarm.open, alarm.episode, alarm.unsent = True, alarm.episode + 1, (at, count)
        self._changed.add(kind)

    def count(self, kind: str, end: float) -> int:
        """Records of ``kind`` in the window ending at ``end`` (to the bucket)."""
        first, last = self._first(end), int(end // self.bucket_s)
        return sum(n for b, n in self.alarms[kind].buckets.items() if first <= b <= last)

    def check(self, now: float) -> list[Alert]:
        """The alarms opened since the last check, and those resolved by ``now``."""
        out = []
        for kind, alarm in self.alarms.items():
            first = self._first(min(now, alarm.latest if alarm.latest is not None else now))
            old = [b for b in alarm.buckets if b < first]
            for b in old:
                del alarm.buckets[b]
            if old:
                self._changed.add(kind)
            if alarm.unsent is not None:
                at, count = alarm.unsent
                out.append(self._alert(alarm, AlertStatus.OPEN, count, at))
                alarm.unsent = None
                self._changed.add(kind)
            n = self.count(kind, now)
            if alarm.open and n <= self.threshold(kind) // 2:
                alarm.open = False
                out.append(self._alert(alarm, AlertStatus.RESOLVED, n, now))
                self._changed.add(kind)
        return out

    def _alert(self, alarm: Alarm, status: AlertStatus, n: int, now: float) -> Alert:
        return Alert(
            alert_id=alert_id_for(self.source, alarm.kind, alarm.episode), status=status,
            category="system", kind=alarm.kind, key=self.source, episode=alarm.episode,
            severity=Severity.HIGH, reason_codes=[f"{alarm.kind}_over_threshold"],
            evidence={"count": n, "window_s": self.thresholds.window_s,
                      "threshold": self.threshold(alarm.kind)},
            detected_at=datetime.fromtimestamp(now, tz=UTC), audience=Audience.ADMIN,
            message_en=f"{alarm.kind.replace('_', ' ')}: {n} in the last "
                       f"{self.thresholds.window_s:g} s (threshold {self.threshold(alarm.kind)})")

    # -- persistence -----------------------------------------------------------------------
    def take_changes(self) -> dict[str, Alarm]:
        changed = {kind: self.alarms[kind] for kind in self._changed}
        self._changed = set()
        return changed

    def restore(self, alarms: dict[str, Alarm]) -> SystemAlarms:
        self.alarms.update({k: v for k, v in alarms.items() if k in self.alarms})
        return self
