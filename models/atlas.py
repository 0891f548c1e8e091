"""Which destination regions each last-mile location serves, learned from the scans one
partition applies: a parcel out for delivery (or delivered) at a place that serves other
regions, never its own, is a suspected misdelivery (issue #8).

Locations are free text, and a shop's are not known in advance. Each ``out_for_delivery``
and ``delivered`` scan counts its (location, destination region) pair. A location is
*specific* once seen ``min_seen`` times with at least ``min_top_share`` of them for one
region (a delivery centre, a sub-terminal); a door step or a parcel locker that serves every
region is never specific and never suspicious. A scan at a specific location whose share for
the order's own region is below ``max_share`` is suspected. Counts are in event time, per
partition, written with the partition's clocks (live == replay, and across a restart).
"""

from __future__ import annotations

from typing import Any

from delaywatch.config.thresholds import IntegrityThresholds

__all__ = ["DeliveryAtlas"]


class DeliveryAtlas:
    def __init__(self, th: IntegrityThresholds) -> None:
        self.th = th
        self.seen: dict[str, dict[str, int]] = {}  # location -> region -> scans

    @staticmethod
    def _place(location: str) -> str:
        return " ".join(location.split()).casefold()

    def judge(self, location: str | None, region: str | None) -> dict[str, Any] | None:
        """Evidence when a last-mile scan at ``location`` for an order bound to ``region``
        is at a place that serves other regions; None when it is not (or not known)."""
        if not location or not region:
            return None
        counts = self.seen.get(self._place(location))
        if not counts:
            return None
        n = sum(counts.values())
        top_region, top = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        share = counts.get(region, 0) / n
        if n < self.th.misdelivery_min_seen or top / n < self.th.misdelivery_min_top_share:
            return None
        if share >= self.th.misdelivery_max_share:
            return None
        return {"location": location, "destination_region": region,
                "region_share": round(share, 4), "scans_seen_there": n,
                "usually_serves": {"region": top_region, "share": round(top / n, 3)}}

    def learn(self, location: str | None, region: str | None) -> None:
        if not location or not region:
            return
        place = self._place(location)
        counts = self.seen.get(place)
        if counts is None:
            if len(self.seen) >= self.th.max_locations:  # bound: forget the rarest half
                keep = sorted(self.seen, key=lambda p: -sum(self.seen[p].values()))
                self.seen = {p: self.seen[p] for p in keep[: len(keep) // 2]}
            counts = self.seen[place] = {}
        counts[region] = counts.get(region, 0) + 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {p: dict(c) for p, c in self.seen.items()}

    def restore(self, snap: dict[str, dict[str, int]] | None) -> None:
        self.seen = {p: dict(c) for p, c in (snap or {}).items()}
