"""Escalation of unacknowledged alerts (issue #8): a pure core with explicit time.

:class:`Escalator` follows every alert (``on_alert``) and acknowledgement (``on_ack``) and
says, when asked at a time ``now`` (``due``), which alerts escalate:

* An alert that is open (or updated) and neither acknowledged nor resolved escalates
  ``after_s[severity]`` seconds after it reached its current severity: one step up (capped at
  critical), as an :class:`Alert` copy with status ``updated`` and
  ``evidence.escalation = {level, after_s, from_severity, since}``. It then re-arms: the next
  level is due ``after_s`` of the new severity later, up to ``max_level`` escalations. A
  severity without a time (low, by default) never escalates.
* Escalation times are chained from the due time, not from when ``due`` was called, so the
  escalations (and their ``detected_at``, the due time) depend only on the inputs and their
  times, not on how often the caller ticks; after a long pause every level that came due is
  returned at once.
* A detector message that changes the alert's severity re-arms the clock at the new
  severity (the team was just told something new); the escalation level count is kept.
* Acknowledged or resolved alerts never escalate again; an ack covers the whole episode
  (alert_id). An ack for an alert not seen yet is kept ``ack_keep_s`` (it may overtake the
  alert); a resolve for an unknown alert closes it at once (a late ``open`` of it is ignored).
* Detector messages of one alert are ordered by (``detected_at``, status open < updated <
  resolved); one that is not newer than the last applied (a duplicate, or a record re-read
  after a restart) is ignored, so applying a message twice changes nothing. A ``resolved``
  always closes the alert, whatever its ``detected_at``.
* Bounded state: closed alerts are forgotten ``forget_closed_after_s`` after they closed, open
  ones ``forget_open_after_s`` after their last message, pending acks after ``ack_keep_s``.

Escalation copies keep the alert's ``alert_id``: consumers correlate them with the alert and
its later ``resolved``. A notifier that dedupes by (alert_id, status, severity) would drop a
copy whose severity the detector already sent as ``updated`` (or a re-page at critical), so
``DeliveredStore.key`` adds ``esc<level>`` for copies (``delaywatch.notify``).

Persistence is the caller's: :meth:`Escalator.take_changes` returns what changed since the
last call (to upsert or delete), :meth:`Escalator.restore` rebuilds from stored rows.

>>> from delaywatch.config.thresholds import EscalationThresholds
>>> esc = Escalator(EscalationThresholds(after_s={"high": 60.0}))
>>> alert = {"alert_id": "al-1", "status": "open", "category": "delay", "kind": "promise_broken",
...          "key": "O-1", "episode": 1, "severity": "high", "reason_codes": [],
...          "evidence": {}, "detected_at": "2024-05-06T10:00:00Z"}
>>> esc.on_alert(alert, now=1000.0)
>>> esc.next_due(), esc.due(1059.0)
(1060.0, [])
>>> [(a.severity.value, a.evidence["escalation"]["level"]) for a in esc.due(1060.0)]
[('critical', 1)]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from delaywatch.config.thresholds import EscalationThresholds
from delaywatch.models.audience import audience_for
from delaywatch.schemas.acks import Ack
from delaywatch.schemas.alerts import SEVERITY_RANK, Alert, AlertStatus, Severity

__all__ = ["Escalator", "Tracked", "escalated_copy", "step_up"]

_BY_RANK = {rank: severity for severity, rank in SEVERITY_RANK.items()}
_STATUS_RANK = {AlertStatus.OPEN: 0, AlertStatus.UPDATED: 1, AlertStatus.RESOLVED: 2}


def step_up(severity: Severity) -> Severity:
    """One severity step up, capped at critical."""
    return _BY_RANK[min(SEVERITY_RANK[severity] + 1, max(_BY_RANK))]


def _epoch(dt: datetime) -> float:
    return dt.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Tracked:
    """What the escalator knows of one alert_id (a JSON-able row)."""

    alert: dict[str, Any]       # the latest detector message applied, JSON form
    severity: str               # current severity, escalations included
    since: float                # when it reached that severity (the escalation clock)
    last_at: float              # when its latest detector message was applied
    order: tuple[float, int]    # (detected_at, status rank) of that message
    level: int = 0              # escalations so far
    closed: str | None = None   # "acked" | "resolved": never escalates again
    closed_at: float | None = None
    acked_by: str | None = None

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Tracked:
        return cls(**{**row, "order": tuple(row["order"])})


def escalated_copy(t: Tracked, to: Severity, level: int, after_s: float, since: float,
                   at: float) -> Alert:
    """The message an escalation sends: the alert's latest message, one step up, for the
    team: without the customer texts and coupon (an escalation is internal; a notifier that
    messages customers must not send the same apology twice)."""
    a = t.alert
    return Alert.model_validate({
        **a, "status": AlertStatus.UPDATED, "severity": to, "detected_at": _iso(at),
        "message_ko": None, "message_en": None, "compensation_suggested": None,
        "audience": a.get("audience") or audience_for(a["kind"], a.get("category")),
        "evidence": {**a.get("evidence", {}), "escalation": {
            "level": level, "after_s": after_s, "from_severity": t.severity,
            "since": _iso(since)}},
    })


class Escalator:
    """Alert and ack state, and the escalations it makes due; see the module docstring."""

    def __init__(self, thresholds: EscalationThresholds) -> None:
        self.thresholds = thresholds
        self.alerts: dict[str, Tracked] = {}
        self.pending_acks: dict[str, tuple[float, str]] = {}  # alert_id -> (expires, by)
        self._changed: set[str] = set()
        self._changed_acks: set[str] = set()

    # -- inputs ----------------------------------------------------------------------------
    def on_alert(self, alert: dict[str, Any] | Alert, now: float) -> None:
        """Apply one detector message (raises pydantic's ValidationError if not an Alert)."""
        msg = alert if isinstance(alert, Alert) else Alert.model_validate(alert)
        alert_id, order = msg.alert_id, (_epoch(msg.detected_at), _STATUS_RANK[msg.status])
        t = self.alerts.get(alert_id)
        resolved = msg.status is AlertStatus.RESOLVED
        if t is not None and (t.closed is not None or (order <= t.order and not resolved)):
            return  # closed for good, or not newer than what was applied (a duplicate)
        row = msg.model_dump(mode="json")
        if t is None:
            t = Tracked(alert=row, severity=msg.severity.value, since=now, last_at=now,
                        order=order)
            self.alerts[alert_id] = t
            ack = self.pending_acks.pop(alert_id, None)
            if ack is not None:
                self._changed_acks.add(alert_id)
                t.closed, t.closed_at, t.acked_by = "acked", now, ack[1]
        else:
            if msg.severity != t.alert["severity"]:  # the detector changed it: re-arm
                t.severity, t.since = msg.severity.value, now
            t.alert, t.last_at, t.order = row, now, max(order, t.order)
        if resolved:
            t.closed, t.closed_at = "resolved", now
        self._changed.add(alert_id)

    def on_ack(self, ack: Ack, now: float) -> None:
        t = self.alerts.get(ack.alert_id)
        if t is None:
            if ack.alert_id not in self.pending_acks:
                self.pending_acks[ack.alert_id] = (now + self.thresholds.ack_keep_s, ack.by)
                self._changed_acks.add(ack.alert_id)
        elif t.closed is None:
            t.closed, t.closed_at, t.acked_by = "acked", now, ack.by
            self._changed.add(ack.alert_id)

    # -- time ------------------------------------------------------------------------------
    def _due_at(self, t: Tracked) -> float | None:
        after = self.thresholds.after_s.get(Severity(t.severity))
        if t.closed is not None or after is None or t.level >= self.thresholds.max_level:
            return None
        return t.since + after

    def next_due(self) -> float | None:
        """The earliest time an escalation is due (None: none will be without new input)."""
        times = [d for d in map(self._due_at, self.alerts.values()) if d is not None]
        return min(times, default=None)

    def due(self, now: float) -> list[Alert]:
        """Escalate every alert due by ``now`` (each level once) and forget expired state;
        the escalation copies, in due-time order."""
        out: list[tuple[float, Alert]] = []
        for alert_id, t in self.alerts.items():
            while (at := self._due_at(t)) is not None and at <= now:
                after = at - t.since
                to = step_up(Severity(t.severity))
                t.level += 1
                out.append((at, escalated_copy(t, to, t.level, after, t.since, at)))
                t.severity, t.since = to.value, at
                self._changed.add(alert_id)
        self._forget(now)
        out.sort(key=lambda pair: pair[0])
        return [alert for _, alert in out]

    def _forget(self, now: float) -> None:
        th = self.thresholds
        gone = [i for i, t in self.alerts.items()
                if (t.closed_at is not None and t.closed_at + th.forget_closed_after_s <= now)
                or (t.closed is None and t.last_at + th.forget_open_after_s <= now)]
        for alert_id in gone:
            del self.alerts[alert_id]
        self._changed.update(gone)
        expired = [i for i, (until, _) in self.pending_acks.items() if until <= now]
        for alert_id in expired:
            del self.pending_acks[alert_id]
        self._changed_acks.update(expired)

    # -- persistence -----------------------------------------------------------------------
    def take_changes(self) -> tuple[dict[str, Tracked | None],
                                    dict[str, tuple[float, str] | None]]:
        """(alert_id -> row or None to delete) for alerts and for pending acks, changed since
        the last call."""
        alerts = {i: self.alerts.get(i) for i in self._changed}
        acks = {i: self.pending_acks.get(i) for i in self._changed_acks}
        self._changed, self._changed_acks = set(), set()
        return alerts, acks

    @classmethod
    def restore(cls, thresholds: EscalationThresholds, alerts: dict[str, Tracked],
                pending_acks: dict[str, tuple[float, str]]) -> Escalator:
        esc = cls(thresholds)
        esc.alerts, esc.pending_acks = dict(alerts), dict(pending_acks)
        return esc
