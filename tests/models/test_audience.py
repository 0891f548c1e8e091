"""Every detector kind has a team, by the mapping in models/audience.py."""

from __future__ import annotations

import pytest

from delaywatch.models.audience import AUDIENCE_BY_KIND, audience_for
from delaywatch.models.risk import RiskDetector
from delaywatch.models.rules import DELAY_KINDS, INTEGRITY_KINDS, STOCK_KINDS
from delaywatch.models.stock_risk import STOCK_MODEL_KINDS
from delaywatch.schemas.alerts import Audience


def test_every_detector_kind_is_mapped_explicitly() -> None:
    kinds = {*DELAY_KINDS, *INTEGRITY_KINDS, *STOCK_KINDS, *STOCK_MODEL_KINDS, "delay_risk"}
    assert RiskDetector.kinds == ("delay_risk",)
    assert kinds <= set(AUDIENCE_BY_KIND)


@pytest.mark.parametrize("kind, audience", [
    ("promise_at_risk", Audience.CS), ("promise_broken", Audience.CS),
    ("delay_risk", Audience.CS), ("tracking_stale", Audience.CS),
    ("waybill_missing", Audience.LOGISTICS), ("handover_missed", Audience.LOGISTICS),
    ("stock_shortage", Audience.LOGISTICS), ("carrier_exception", Audience.LOGISTICS),
    ("oversell", Audience.LOGISTICS), ("negative_stock", Audience.LOGISTICS),
    ("stock_mismatch", Audience.LOGISTICS), ("reservation_not_released", Audience.LOGISTICS),
    ("dlq_rate", Audience.ADMIN),
])
def test_mapping(kind, audience) -> None:
    assert audience_for(kind) is audience


def test_unknown_kinds_fall_back_on_their_category() -> None:
    assert audience_for("x", "delay") is Audience.CS
    assert audience_for("x", "stock") is Audience.LOGISTICS
    assert audience_for("x", "system") is Audience.ADMIN
    assert audience_for("x") is Audience.LOGISTICS
