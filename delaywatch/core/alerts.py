"""Alert episodes: turn "condition holds / does not hold" into open, updated, resolved.

Detectors report a :class:`Finding` per kind each time they are evaluated. The
:class:`AlertBook` of one key keeps at most one open episode per kind and emits:
``open`` when a condition starts, ``updated`` only when its severity changes, ``resolved``
when it stops. A *pulse* finding (a fact reported once, e.g. "your stock notice arrived")
opens and immediately resolves if the condition no longer holds, so the result does not
depend on whether the notice arrived before or after the fact that clears it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from delaywatch.core.compact import compact_state
from delaywatch.schemas.alerts import SEVERITY_RANK, AlertStatus, Severity, alert_id_for

__all__ = ["AlertBook", "Episode", "Finding", "Transition", "ts_to_dt"]


def ts_to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass(slots=True, frozen=True)
class Finding:
    kind: str
    active: bool
    severity: Severity = Severity.MEDIUM
    reason_codes: tuple[str, ...] = ()
    # a dict, or a zero-argument callable returning one: detectors are evaluated on every
    # event, but evidence is only needed when an alert is emitted
    evidence: dict[str, Any] | Callable[[], dict[str, Any]] = field(default_factory=dict)
    pulse: bool = False


@compact_state()
@dataclass(slots=True)
class Episode:
    number: int
    severity: Severity
    open: bool


@dataclass(slots=True, frozen=True)
class Transition:
    """One alert message to build: the book decides, the caller adds key-specific context."""

    alert_id: str
    kind: str
    episode: int
    status: AlertStatus
    severity: Severity
    reason_codes: tuple[str, ...]
    evidence: dict[str, Any]
    at: float


@dataclass(slots=True)
class AlertBook:
    episodes: dict[str, Episode] = field(default_factory=dict)

    def is_open(self, kind: str) -> bool:
        ep = self.episodes.get(kind)
        return ep is not None and ep.open

    def open_kinds(self) -> list[str]:
        return [k for k, ep in self.episodes.items() if ep.open]

    def evaluate(self, key: str, findings: list[Finding], at: float) -> list[Transition]:
        out: list[Transition] = []
        for f in findings:
            ep = self.episodes.get(f.kind)
            is_open = ep is not None and ep.open
            if f.active or (f.pulse and not is_open):
                if not is_open:
                    number = ep.number + 1 if ep else 1
                    ep = Episode(number, f.severity, True)
                    self.episodes[f.kind] = ep
                    out.append(self._t(key, f, ep, AlertStatus.OPEN, at))
                    if f.active:
                        continue
                    # a pulse whose condition is already gone: open and resolve at once
                elif ep is not None and SEVERITY_RANK[f.severity] != SEVERITY_RANK[ep.severity]:
                    ep.severity = f.severity
                    out.append(self._t(key, f, ep, AlertStatus.UPDATED, at))
                    continue
                else:
                    continue
            if ep is not None and ep.open and not f.active:
                ep.open = False
                out.append(self._t(key, f, ep, AlertStatus.RESOLVED, at))
        return out

    @staticmethod
    def _t(key: str, f: Finding, ep: Episode, status: AlertStatus, at: float) -> Transition:
        return Transition(
            alert_id=alert_id_for(key, f.kind, ep.number),
            kind=f.kind,
            episode=ep.number,
            status=status,
            severity=ep.severity,
            reason_codes=f.reason_codes,
            evidence=f.evidence() if callable(f.evidence) else f.evidence,
            at=at,
        )
