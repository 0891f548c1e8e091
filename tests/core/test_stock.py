"""Stock logic through the in-process Topology: oversell, negative stock, WMS/OMS mismatch,
a cancelled order's reservation never released."""

from __future__ import annotations

from datetime import UTC, datetime

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


# -- reservation_not_released (issue #8) ---------------------------------------------------------
UNRELEASED = "reservation_not_released"


def reserved_then_cancelled(w: World, order_id: str = "O-1", *, qty: int = 2,
                            cancel_at: datetime | None = None) -> None:
    """The OMS reserves the order's units at payment; the customer cancels 15 min later.
    Every record arrives at once: the cancel is received while its order_placed still waits
    for the watermark (30 min), the case whose release used to be lost."""
    w.inventory("W1", "SKU-1", "stock_snapshot", 50, kst(0, 8))
    w.place(order_id, kst(0, 9, 55), promised_at=kst(1, 22), lines=(("SKU-1", qty),))
    w.pay(order_id, kst(0, 10))
    w.inventory("W1", "SKU-1", "stock_reserved", qty, kst(0, 10), source="oms",
                order_id=order_id)
    w.cancel(order_id, cancel_at or kst(0, 10, 15))


def test_a_reservation_held_past_the_grace_after_a_cancel_opens_an_alert(world) -> None:
    reserved_then_cancelled(world)
    world.advance(kst(0, 12, 14))
    assert world.of(KEY, UNRELEASED) == []  # within the 2 h grace
    world.advance(kst(0, 13))
    [held] = world.of(KEY, UNRELEASED)
    assert (held.status, held.category, held.severity, held.audience) == (
        AlertStatus.OPEN, "stock", Severity.MEDIUM, "logistics")
    assert held.detected_at == kst(0, 12, 15)  # cancel + grace, in event time
    since = kst(0, 12, 15).astimezone(UTC).isoformat()
    assert held.evidence == {
        "order_id": "O-1", "cancelled_at": kst(0, 10, 15).astimezone(UTC).isoformat(),
        "quantity": 2, "since": since,
        "orders": [{"order_id": "O-1",
                    "cancelled_at": kst(0, 10, 15).astimezone(UTC).isoformat(),
                    "quantity": 2, "since": since}],
        "orders_held": 1, "units_held": 2}


def test_a_reservation_released_in_time_raises_nothing(world) -> None:
    reserved_then_cancelled(world)
    world.inventory("W1", "SKU-1", "reservation_released", 2, kst(0, 10, 20), source="oms",
                    order_id="O-1")
    world.advance(kst(1, 12))
    assert world.of(KEY) == []


def test_a_release_before_the_cancel_reaches_the_stock_table_raises_nothing(world) -> None:
    world.inventory("W1", "SKU-1", "stock_snapshot", 50, kst(0, 8))
    world.place("O-1", kst(0, 9, 55), promised_at=kst(1, 22), lines=(("SKU-1", 2),))
    world.inventory("W1", "SKU-1", "stock_reserved", 2, kst(0, 10), source="oms",
                    order_id="O-1")
    world.inventory("W1", "SKU-1", "reservation_released", 2, kst(0, 10, 14), source="oms",
                    order_id="O-1")
    world.cancel("O-1", kst(0, 10, 15))
    world.advance(kst(1, 12))
    assert world.of(KEY) == []


def test_a_late_release_resolves_the_alert(world) -> None:
    reserved_then_cancelled(world)
    world.advance(kst(0, 13))
    world.inventory("W1", "SKU-1", "reservation_released", 2, kst(0, 14), source="oms",
                    order_id="O-1")
    world.advance(kst(0, 15))
    assert [(a.status, a.detected_at) for a in world.of(KEY, UNRELEASED)] == [
        (AlertStatus.OPEN, kst(0, 12, 15)), (AlertStatus.RESOLVED, kst(0, 14))]


def test_picking_the_cancelled_order_ends_the_alert(world) -> None:
    reserved_then_cancelled(world)
    world.advance(kst(0, 13))
    world.inventory("W1", "SKU-1", "stock_picked", 2, kst(0, 14), order_id="O-1")
    world.advance(kst(0, 15))
    assert [a.status for a in world.of(KEY, UNRELEASED)] == [
        AlertStatus.OPEN, AlertStatus.RESOLVED]


def test_a_reservation_never_released_is_given_up_after_a_week(world) -> None:
    reserved_then_cancelled(world)
    world.advance(kst(7, 12, 14))
    assert [a.status for a in world.of(KEY, UNRELEASED)] == [AlertStatus.OPEN]
    world.advance(kst(7, 13))
    assert [(a.status, a.detected_at) for a in world.of(KEY, UNRELEASED)] == [
        (AlertStatus.OPEN, kst(0, 12, 15)), (AlertStatus.RESOLVED, kst(7, 12, 15))]


def test_another_held_order_updates_the_open_alert(world) -> None:
    reserved_then_cancelled(world, "O-1")
    reserved_then_cancelled(world, "O-2", qty=1, cancel_at=kst(0, 11))
    world.inventory("W1", "SKU-1", "reservation_released", 2, kst(0, 15), source="oms",
                    order_id="O-1")
    world.advance(kst(0, 16))
    got = [(a.status, a.detected_at, [o["order_id"] for o in a.evidence["orders"]],
            a.evidence.get("notice")) for a in world.of(KEY, UNRELEASED)]
    assert got == [
        (AlertStatus.OPEN, kst(0, 12, 15), ["O-1"], None),
        (AlertStatus.UPDATED, kst(0, 13), ["O-1", "O-2"], 1),
        (AlertStatus.UPDATED, kst(0, 15), ["O-2"], 2),  # O-1 released, O-2 still held
    ]
    assert len({a.alert_id for a in world.of(KEY, UNRELEASED)}) == 1


def test_a_cancel_received_before_its_order_is_applied_releases_the_stock(world) -> None:
    """The release line used to be built only from lines already applied: a cancel received
    within the allowed lateness of its order_placed released nothing, and the order's
    demand stayed on the SKU (an oversell that never resolved)."""
    world.inventory("W1", "SKU-1", "stock_snapshot", 1, kst(0, 8))
    world.place("O-1", kst(0, 9, 55), promised_at=kst(1, 22), lines=(("SKU-1", 3),))
    world.cancel("O-1", kst(0, 10, 15))  # the order_placed is not applied yet
    world.advance(kst(0, 11))
    assert [(a.kind, a.status, a.detected_at) for a in world.of(KEY)] == [
        ("oversell", AlertStatus.OPEN, kst(0, 9, 55)),
        ("oversell", AlertStatus.RESOLVED, kst(0, 10, 15))]


def test_a_cancel_received_before_its_order_placed_releases_when_that_arrives(world) -> None:
    world.inventory("W1", "SKU-1", "stock_snapshot", 1, kst(0, 8))
    world.cancel("O-1", kst(0, 10, 15))  # the OMS's records arrive out of order
    world.place("O-1", kst(0, 9, 55), promised_at=kst(1, 22), lines=(("SKU-1", 3),))
    world.advance(kst(0, 11))
    assert [(a.kind, a.status, a.detected_at) for a in world.of(KEY)] == [
        ("oversell", AlertStatus.OPEN, kst(0, 9, 55)),
        ("oversell", AlertStatus.RESOLVED, kst(0, 10, 15))]
