"""One contract over every detector (river-style): kinds, empty state, pickling, determinism."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from delaywatch.config import Thresholds, load_thresholds
from delaywatch.core.alerts import Finding
from delaywatch.core.state import ShipmentState, Stage, StockState
from delaywatch.models.rules import DelayRules, StockRules, dispatch_deadlines

T0 = 1_714_957_200.0  # 2024-05-06 10:00 Asia/Seoul
H = 3600.0


def _busy_shipments(th: Thresholds) -> list[ShipmentState]:
    paid = ShipmentState("O-paid", placed_at=T0 - 300, paid_at=T0, promised_at=T0 + 36 * H,
                         customer_tier="vip", stage=Stage.PAID)
    paid.waybill_due, paid.handover_due = dispatch_deadlines(
        T0, th.for_lane(None, None), ZoneInfo(th.timezone))
    moving = ShipmentState("O-moving", paid_at=T0, promised_at=T0 + 36 * H,
                           stage=Stage.IN_TRANSIT, last_scan_at=T0 + 4 * H,
                           last_scan_type="exception", exception_open=True,
                           exception_type="exception", carrier_eta=T0 + 60 * H,
                           shortages=[{"warehouse_id": "W1", "sku": "S", "shortfall": 1}])
    done = ShipmentState("O-done", paid_at=T0, promised_at=T0 + 36 * H, stage=Stage.DELIVERED,
                         delivered_at=T0 + 40 * H, last_scan_at=T0 + 40 * H)
    return [paid, moving, done]


def _busy_stock(th: Thresholds) -> list[StockState]:
    short = StockState("W1:S", "W1", "S", wms_level=-2, demand={"O-1": 3, "O-2": 1})
    mismatched = StockState("W1:T", "W1", "T", wms_level=50, oms_level=60,
                            wms_snapshot=(50, T0), oms_snapshot=(60, T0 + 60))
    StockRules(th).update_mismatch(mismatched)
    return [short, mismatched]


@dataclass(frozen=True)
class Spec:
    make: Callable[[Thresholds], Any]
    empty: Callable[[], Any]
    busy: Callable[[Thresholds], list[Any]]


SPECS = {
    "DelayRules": Spec(DelayRules, lambda: ShipmentState("O-empty"), _busy_shipments),
    "StockRules": Spec(StockRules, lambda: StockState("W1:EMPTY", "W1", "EMPTY"), _busy_stock),
}
AT = [T0 - 1000 * H, T0, T0 + 10 * H, T0 + 100 * H, T0 + 10_000 * H]


@pytest.fixture(params=SPECS.values(), ids=SPECS.keys())
def spec(request) -> Spec:
    return request.param


@pytest.fixture(scope="module")
def th() -> Thresholds:
    return load_thresholds()


def states(spec: Spec, th: Thresholds) -> list[Any]:
    return [spec.empty(), *spec.busy(th)]


def evidence(f: Finding) -> dict[str, Any]:
    return f.evidence() if callable(f.evidence) else f.evidence


def resolved(findings: list[Finding]) -> list[tuple[Any, ...]]:
    """Findings as comparable values (evidence may be a lazy callable)."""
    return [(f.kind, f.active, f.severity, f.reason_codes, evidence(f), f.pulse)
            for f in findings]


def test_declares_its_kinds(spec, th) -> None:
    kinds = spec.make(th).kinds
    assert isinstance(kinds, tuple) and kinds
    assert all(isinstance(k, str) and k for k in kinds)
    assert len(set(kinds)) == len(kinds)


def test_reports_each_declared_kind_at_most_once_per_evaluation(spec, th) -> None:
    det = spec.make(th)
    for state in states(spec, th):
        for at in AT:
            findings = det.findings(state, at)
            assert all(isinstance(f, Finding) for f in findings)
            kinds = [f.kind for f in findings]
            assert set(kinds) <= set(det.kinds)
            assert len(kinds) == len(set(kinds))


def test_evidence_is_a_json_ready_dict(spec, th) -> None:
    det = spec.make(th)
    for state in states(spec, th):
        for at in AT:
            for f in det.findings(state, at):
                ev = evidence(f)
                assert isinstance(ev, dict)
                assert orjson.loads(orjson.dumps(ev)) == ev


def test_busy_states_do_raise_findings(spec, th) -> None:
    det = spec.make(th)
    active = {f.kind for s in spec.busy(th) for at in AT for f in det.findings(s, at) if f.active}
    assert len(active) >= 3  # the contract checks above are not vacuous


def test_fresh_empty_state_has_no_active_finding(spec, th) -> None:
    det = spec.make(th)
    for at in AT:
        findings = det.findings(spec.empty(), at)
        assert [f.kind for f in findings if f.active] == []


@pytest.mark.parametrize("name", ["DelayRules", "StockRules"])
def test_empty_state_has_no_deadlines(name, th) -> None:
    spec = SPECS[name]
    assert spec.make(th).deadlines(spec.empty()) == []


def test_findings_do_not_change_the_state(spec, th) -> None:
    det = spec.make(th)
    for state in states(spec, th):
        before = copy.deepcopy(state)
        for at in AT:
            resolved(det.findings(state, at))
        assert state == before


def test_detector_and_state_survive_pickling(spec, th) -> None:
    det = spec.make(th)
    det2 = pickle.loads(pickle.dumps(det))
    assert det2.kinds == det.kinds
    for state in states(spec, th):
        state2 = pickle.loads(pickle.dumps(state))
        assert state2 == state
        for at in AT:
            assert resolved(det2.findings(state2, at)) == resolved(det.findings(state, at))


def test_deterministic(spec, th) -> None:
    for state in states(spec, th):
        for at in AT:
            once = resolved(spec.make(th).findings(state, at))
            assert resolved(spec.make(load_thresholds()).findings(copy.deepcopy(state), at)) \
                == once
            assert resolved(spec.make(th).findings(state, at)) == once
