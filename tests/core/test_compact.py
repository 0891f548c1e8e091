"""Compact state pickling: the layout round-trips, older layouts and the dataclass default
are read by name, an unknown layout is refused."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from delaywatch.core.compact import compact_state, layout_of
from delaywatch.core.state import ShipmentState


@compact_state(("a", "b"))
@dataclass(slots=True)
class Thing:
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=list)  # added after ("a", "b")


def test_round_trip_and_smaller_than_the_dataclass_default() -> None:
    t = Thing(1, "y", [2])
    assert pickle.loads(pickle.dumps(t)) == t
    s = ShipmentState("O-1", placed_at=1.0, carrier="CJ")
    compact = pickle.dumps(s)
    # what the dataclass default pickled: the class and (None, {slot: value})
    default = pickle.dumps((ShipmentState, (None, {f.name: getattr(s, f.name)
                                                   for f in dataclasses.fields(s)})))
    assert pickle.loads(compact) == s
    assert len(compact) < len(default) / 2


def test_an_older_layout_is_read_by_name_with_defaults_for_new_fields() -> None:
    old = Thing.__new__(Thing)
    old.__setstate__((layout_of(Thing, ("a", "b")), (5, "z")))
    assert old == Thing(5, "z", [])


def test_the_dataclass_default_form_is_read_by_name() -> None:
    t = Thing.__new__(Thing)
    t.__setstate__((None, {"a": 3}))
    assert t == Thing(3, "x", [])


def test_an_unknown_layout_is_refused() -> None:
    t = Thing.__new__(Thing)
    with pytest.raises(ValueError, match="unknown layout"):
        t.__setstate__(("Thing/00000000", (1, "b", [])))
    with pytest.raises(ValueError, match="required field 'a'"):
        t.__setstate__((None, {"b": "q"}))


def test_shipment_state_written_before_the_feed_hold_still_reads() -> None:
    """Changelogs written by the version without ``stale_hold`` / ``stale_silence``."""
    from delaywatch.core.state import _SHIPMENT_V1

    old = ShipmentState("O-1", carrier="cj", scans=3)
    state = (layout_of(ShipmentState, _SHIPMENT_V1), tuple(getattr(old, n) for n in _SHIPMENT_V1))
    new = ShipmentState.__new__(ShipmentState)
    new.__setstate__(state)
    assert (new.order_id, new.carrier, new.scans) == ("O-1", "cj", 3)
    assert new.stale_hold is None and new.stale_silence is None


def test_states_written_before_the_reservation_watch_still_read() -> None:
    """Changelogs written by the version without the received lines (shipment) and the
    reservations and cancels (stock), issue #8."""
    from delaywatch.core.state import _SHIPMENT_V2, _STOCK_V1, StockState

    old = ShipmentState("O-1", carrier="cj", stale_hold=(1.0, 2.0))
    new = ShipmentState.__new__(ShipmentState)
    new.__setstate__((layout_of(ShipmentState, _SHIPMENT_V2),
                      tuple(getattr(old, n) for n in _SHIPMENT_V2)))
    assert (new.carrier, new.stale_hold) == ("cj", (1.0, 2.0))
    assert new.received_lines is None and new.release_owed is None

    stock = StockState("W1:SKU-1", "W1", "SKU-1", wms_level=5, demand={"O-1": 2})
    read = StockState.__new__(StockState)
    read.__setstate__((layout_of(StockState, _STOCK_V1),
                       tuple(getattr(stock, n) for n in _STOCK_V1)))
    assert (read.key, read.wms_level, read.demand) == ("W1:SKU-1", 5, {"O-1": 2})
    assert (read.reserved, read.cancels, read.unreleased_told, read.unreleased_notices) == (
        {}, {}, [], 0)
