"""Who acts on an alert: one pure mapping from an alert's kind to its :class:`Audience`.

* **cs** (customer service) -- the customer feels it: ``promise_at_risk``,
  ``promise_broken``, ``delay_risk``, ``tracking_stale``;
* **logistics** -- a step of the warehouse/carrier process or the stock books overran:
  ``waybill_missing``, ``handover_missed``, ``stock_shortage``, ``carrier_exception``,
  ``oversell``, ``negative_stock``, ``stock_mismatch``, ``stock_anomaly``,
  ``stockout_forecast``; the process-integrity kinds ``scan_after_cancel``,
  ``address_after_pickup``, ``status_backwards``, ``misdelivery_suspected``,
  ``reservation_not_released``; and the ops monitor's ``feed_outage`` and ``incident`` (on
  ``alerts.system``: a carrier's feed or a congested hub is logistics' to chase, and an
  incident lists its orders for customer service to message in one batch);
* **admin** -- delaywatch itself is unwell (category ``system``, topic ``alerts.system``):
  ``dlq_rate``, ``retries_exhausted``, ``notifier_failures``.

A kind not listed falls back on its category (delay -> cs, stock -> logistics, system ->
admin, anything else -> logistics), so a detector added later is routed somewhere sensible
before it is listed here.

>>> audience_for("promise_broken"), audience_for("oversell"), audience_for("dlq_rate")
(<Audience.CS: 'cs'>, <Audience.LOGISTICS: 'logistics'>, <Audience.ADMIN: 'admin'>)
>>> audience_for("a_new_stock_rule", "stock")
<Audience.LOGISTICS: 'logistics'>
"""

from __future__ import annotations

from delaywatch.schemas.alerts import Audience

__all__ = ["AUDIENCE_BY_KIND", "audience_for"]

AUDIENCE_BY_KIND: dict[str, Audience] = {
    **dict.fromkeys(("promise_at_risk", "promise_broken", "delay_risk", "tracking_stale"),
                    Audience.CS),
    **dict.fromkeys(("waybill_missing", "handover_missed", "stock_shortage",
                     "carrier_exception", "oversell", "negative_stock", "stock_mismatch",
                     "stock_anomaly", "stockout_forecast", "scan_after_cancel",
                     "address_after_pickup", "status_backwards", "misdelivery_suspected",
                     "reservation_not_released",
                     "feed_outage", "incident"),
                    Audience.LOGISTICS),
    **dict.fromkeys(("dlq_rate", "retries_exhausted", "notifier_failures"),
                    Audience.ADMIN),
}
_BY_CATEGORY = {"delay": Audience.CS, "stock": Audience.LOGISTICS, "system": Audience.ADMIN}


def audience_for(kind: str, category: str | None = None) -> Audience:
    """The team that acts on an alert of ``kind`` (``category`` decides unknown kinds)."""
    found = AUDIENCE_BY_KIND.get(kind)
    if found is not None:
        return found
    return _BY_CATEGORY.get(category or "", Audience.LOGISTICS)
