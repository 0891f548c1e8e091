"""Carrier feeds as one partition's scans see them: is a silent order silent on its own,
or is its carrier's whole feed silent? (issue #8)

A carrier feed that stops (the TMS integration breaks, the carrier's system is down) makes
every in-flight order of that carrier look stale: without this, ``tracking_stale`` would
fire once per order for one root cause, and thousands of customers would be told their
parcel is lost. The ops monitor opens one ``feed_outage`` alert on ``alerts.system``; the
shipment logic meanwhile *holds* the per-order ``tracking_stale`` alerts that the outage
explains (:meth:`CarrierFeeds.explains`) and looks again until the feed is back and a grace
period has passed: an order the returning feed still says nothing about gets its alert then.

Decided in event time from the scans this partition applies (every run of a partition sees
the same ones in the same order, so live and replay hold the same alerts):

* each carrier's **share** of the partition's scans is learned online (an EWMA over the
  last ``share_window_scans`` scans);
* its feed is **silent** when, since its last scan, the other carriers delivered so many
  scans that its share of them would be ``min_expected`` or more, and at least
  ``silent_after_h`` of event time passed. Measuring the silence in the *others'* scans, not
  in hours, keeps a quiet night, a slow tail of data or a shop winding down from looking
  like an outage (every carrier slows alike), and a carrier with few parcels here needs a
  long gap before it counts;
* a silence ends with the carrier's next scan; orders last scanned before that moment stay
  explained for ``grace_h`` more (the scans buffered by the carrier arrive in a burst);
* only fresh scans count, those applied less than ``backlog_after_min`` after they happened:
  a scan hours old says the carrier worked then, not that its feed works now (a trickle of
  delayed scans through a dead feed, the burst of buffered ones when it returns).

A whole scan feed gone at once (every carrier) is not judged here: its silence holds the
partition's event time itself (see the README's known limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from delaywatch.config.thresholds import FeedHoldThresholds
from delaywatch.core.alerts import ts_to_dt

__all__ = ["CarrierFeeds", "Silence"]

H = 3600.0


@dataclass(slots=True, frozen=True)
class Silence:
    carrier: str
    since: float  # the carrier's last scan before it
    returned: float | None  # its first scan after, None while silent

    def evidence(self) -> dict[str, Any]:
        return {"carrier": self.carrier, "since": ts_to_dt(self.since).isoformat(),
                "returned": ts_to_dt(self.returned).isoformat() if self.returned else None}


class CarrierFeeds:
    """Per carrier: last scan, share of the scans and the last silence, for one partition."""

    def __init__(self, th: FeedHoldThresholds) -> None:
        self.th = th
        self.alpha = 1.0 / th.share_window_scans
        self.total = 0  # scans applied in this partition
        self.last: dict[str, float] = {}  # carrier -> event time of its last scan
        self.at_total: dict[str, int] = {}  # ... and the partition's count then
        self.share: dict[str, float] = {}  # ... and its share then (EWMA over scans)
        self.silences: dict[str, Silence] = {}  # the latest silence that ended

    def seen(self, carrier: str | None, at: float, occurred: float) -> None:
        """A scan of ``carrier`` that happened at ``occurred``, applied at (effective) event
        time ``at``."""
        if carrier is None or at - occurred > self.th.backlog_after_min * 60.0:
            return
        self.total += 1
        last = self.last.get(carrier)
        if last is None:
            self.last[carrier], self.at_total[carrier] = at, self.total
            self.share[carrier] = self.alpha
            return
        if at > last and self._silent(carrier, at):
            self.silences[carrier] = Silence(carrier, last, at)
        others = self.total - self.at_total[carrier] - 1
        share = self.share[carrier] * (1.0 - self.alpha) ** others
        self.share[carrier] = share + self.alpha * (1.0 - share)
        self.last[carrier] = max(last, at)
        self.at_total[carrier] = self.total

    def expected(self, carrier: str) -> float:
        """Scans of ``carrier`` its share says were due among the others' since its last."""
        others = self.total - self.at_total[carrier]
        share = min(self.share[carrier], 0.99)
        return others * share / (1.0 - share)

    def _silent(self, carrier: str, at: float) -> bool:
        return (at - self.last[carrier] >= self.th.silent_after_h * H
                and self.expected(carrier) >= self.th.min_expected)

    def explains(self, carrier: str | None, last_scan_at: float | None,
                 at: float) -> Silence | None:
        """The silence of ``carrier``'s feed that explains an order last scanned at
        ``last_scan_at`` having no news at ``at``, if there is one."""
        if not self.th.enabled or carrier is None or last_scan_at is None:
            return None
        last = self.last.get(carrier)
        if last is None:
            return None
        if at > last and self._silent(carrier, at):
            return Silence(carrier, last, None)
        done = self.silences.get(carrier)
        if (done is not None and done.returned is not None and last_scan_at < done.returned
                and at < done.returned + self.th.grace_h * H):
            return done
        return None

    # -- persistence with the partition's clocks -----------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"total": self.total, "last": dict(self.last), "at_total": dict(self.at_total),
                "share": dict(self.share),
                "silences": {c: (s.since, s.returned) for c, s in self.silences.items()}}

    def restore(self, snap: dict[str, Any] | None) -> None:
        if not snap:
            return
        self.total = snap["total"]
        self.last, self.at_total = dict(snap["last"]), dict(snap["at_total"])
        self.share = dict(snap["share"])
        self.silences = {c: Silence(c, since, returned)
                         for c, (since, returned) in snap["silences"].items()}
