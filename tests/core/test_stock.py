"""Stock logic through the in-process Topology: oversell, negative stock, WMS/OMS mismatch."""

from __future__ import annotations

import pytest

from delaywatch.schemas.alerts import AlertStatus, Severity
from tests.core.test_shipment import World, kst

KEY = "W1:SKU-1"


@pytest.fixture
def world(make_settings, thresholds) -> World:
    return World(make_settings(partitions=1), thresholds)


def test_order_beyond_the_wms_level_is_oversell_and_tells_the_order(world) -> None:
    world.inventory("W1", "SKU-1", "stock_snapshot", 1, kst(0, 8))
    world.place("O-1", kst(0, 9, 55), promised_at=kst(1, 22), lines=(("SKU-1", 3),))
    world.pay("O-1", kst(0, 10))
    world.advance(kst(0, 11))

    [oversell] = world.of(KEY)
    assert (oversell.kind, oversell.status, oversell.category) == (
        "oversell", AlertStatus.OPEN, "stock")
    assert oversell.detected_at == kst(0, 9, 55)
    assert oversell.evidence == {"on_hand": 1, "open_demand": 3, "short_by": 2,
                                 "orders_waiting": 1}
    assert (oversell.warehouse_id, oversell.sku) == ("W1", "SKU-1")

    [shortage] = world.of("O-1", "stock_shortage")
    assert (shortage.status, shortage.category, shortage.severity) == (
        AlertStatus.OPEN, "delay", Severity.HIGH)
    assert shortage.evidence["shortages"] == [
        {"warehouse_id": "W1", "sku": "SKU-1", "shortfall": 2}]

    # Restocking resolves the oversell; the waybill resolves the order's shortage.
    world.inventory("W1", "SKU-1", "stock_received", 5, kst(0, 11, 30))
    world.scan("O-1", "waybill_created", kst(0, 12))
    world.advance(kst(0, 13))
    assert world.of(KEY)[-1].status == AlertStatus.RESOLVED
    assert world.of("O-1", "stock_shortage")[-1].status == AlertStatus.RESOLVED


def test_order_within_the_wms_level_is_not_oversell(world) -> None:
    world.inventory("W1", "SKU-1", "stock_snapshot", 3, kst(0, 8))
    world.place("O-1", kst(0, 9, 55), promised_at=kst(1, 22), lines=(("SKU-1", 3),))
    world.advance(kst(0, 11))
    assert world.of(KEY) == [] and world.of("O-1") == []


def test_picking_below_zero_is_negative_stock(world) -> None:
    world.inventory("W1", "SKU-1", "stock_snapshot", 2, kst(0, 8))
    world.inventory("W1", "SKU-1", "stock_picked", 5, kst(0, 9))
    world.advance(kst(0, 10))
    [negative] = world.of(KEY)
    assert (negative.kind, negative.status, negative.detected_at) == (
        "negative_stock", AlertStatus.OPEN, kst(0, 9))
    assert negative.evidence == {"on_hand": -3}
    world.inventory("W1", "SKU-1", "stock_received", 10, kst(0, 10, 30))
    world.advance(kst(0, 11))
    assert world.of(KEY)[-1].status == AlertStatus.RESOLVED


@pytest.mark.parametrize("oms, opens", [(110, True), (102, False), (98, False), (97, True)])
def test_wms_vs_oms_snapshot_mismatch_beyond_tolerance(world, oms, opens) -> None:
    # tolerance = max(2 units, 2 % of the WMS count of 100)
    world.inventory("W1", "SKU-1", "stock_snapshot", 100, kst(0, 8))
    world.inventory("W1", "SKU-1", "stock_snapshot", oms, kst(0, 8, 10), source="oms")
    world.advance(kst(0, 9))
    kinds = [(a.kind, a.status) for a in world.of(KEY)]
    assert kinds == ([("stock_mismatch", AlertStatus.OPEN)] if opens else [])
    if opens:
        assert world.of(KEY)[0].evidence["oms_minus_wms"] == oms - 100


def test_a_matching_snapshot_pair_resolves_the_mismatch(world) -> None:
    world.inventory("W1", "SKU-1", "stock_snapshot", 100, kst(0, 8))
    world.inventory("W1", "SKU-1", "stock_snapshot", 110, kst(0, 8, 10), source="oms")
    world.inventory("W1", "SKU-1", "stock_snapshot", 110, kst(0, 12))
    world.inventory("W1", "SKU-1", "stock_snapshot", 110, kst(0, 12, 5), source="oms")
    world.advance(kst(0, 13))
    assert [(a.kind, a.status, a.detected_at) for a in world.of(KEY)] == [
        ("stock_mismatch", AlertStatus.OPEN, kst(0, 8, 10)),
        # at 12:00 the WMS count has no OMS partner within 2 h yet: the pair decides
        ("stock_mismatch", AlertStatus.RESOLVED, kst(0, 12, 5)),
    ]


def test_snapshots_too_far_apart_are_not_compared(world) -> None:
    world.inventory("W1", "SKU-1", "stock_snapshot", 100, kst(0, 8))
    world.inventory("W1", "SKU-1", "stock_snapshot", 150, kst(0, 11), source="oms")  # > 2 h
    world.advance(kst(0, 12))
    assert world.of(KEY) == []
