"""The event-time engine: watermark, ordering, lateness, deadlines, de-duplication, restore.

The engine is exercised with a tiny recording logic, so each test states exactly which
(key, what, event, effective time) the engine handed to the logic and in which order.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delaywatch.core.engine import Engine, KeyState, fingerprint

LATENESS = 10.0
END = 1e9  # a watermark past every event and deadline of these tests

Step = tuple[str, str, str, float]  # (stream, key, event_id, occurred_at)
Output = tuple[str, str, Any, float]  # (key, "event" | "due", event_id | None, at)


@dataclass
class Trace:
    """Toy per-key state: the deadlines asked for and when the key last saw an event."""

    key: str
    dues: list[float] = field(default_factory=list)
    last: float | None = None


class RecordingLogic:
    """Applies nothing, records everything; optionally asks for a deadline after each event."""

    def __init__(self, deadline_after_s: float | None = None,
                 expire_after_s: float | None = None) -> None:
        self.deadline_after_s = deadline_after_s
        self.expire_after_s = expire_after_s

    def new_state(self, key: str) -> Trace:
        return Trace(key)

    def on_receipt(self, state: Trace, stream: str, event: Any, clocks: dict) -> list[Any]:
        return []

    def apply(self, state: Trace, stream: str, event: Any, at: float) -> list[Any]:
        state.last = at
        if self.deadline_after_s is not None:
            state.dues.append(at + self.deadline_after_s)
        return [(state.key, "event", event, at)]

    def on_time(self, state: Trace, at: float) -> list[Any]:
        return [(state.key, "due", None, at)]

    def next_due(self, state: Trace, after: float) -> float | None:
        later = [d for d in state.dues if d > after]
        return min(later) if later else None

    def expired(self, state: Trace, watermark: float) -> bool:
        return (self.expire_after_s is not None and state.last is not None
                and watermark > state.last + self.expire_after_s)


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine() -> EngineFactory:
    def make(deadline_after_s: float | None = None, expire_after_s: float | None = None,
             lateness: float = LATENESS, **kw: Any) -> Engine:
        return Engine(RecordingLogic(deadline_after_s, expire_after_s),
                      gating_streams=("a", "b"), allowed_lateness_s=lateness, **kw)

    return make


def feed(engine: Engine, steps: Iterable[Step]) -> list[Any]:
    out: list[Any] = []
    for stream, key, event_id, occurred_at in steps:
        out.extend(engine.ingest(stream, key, event_id, event_id, occurred_at))
    return out


def drive(engine: Engine, watermark: float) -> list[Any]:
    """Heartbeats on both gating streams so that the watermark becomes ``watermark``."""
    out = engine.observe_clock("a", watermark + engine.allowed_lateness_s)
    out += engine.observe_clock("b", watermark + engine.allowed_lateness_s)
    return out


def by_key(outputs: Iterable[Output]) -> dict[str, list[Output]]:
    grouped: dict[str, list[Output]] = defaultdict(list)
    for out in outputs:
        grouped[out[0]].append(out)
    return dict(grouped)


def run_to_end(engine: Engine, steps: Iterable[Step]) -> list[Any]:
    return feed(engine, steps) + engine.advance_to(END)


# -- watermark ---------------------------------------------------------------------------------
def test_watermark_is_min_of_gating_clocks_minus_lateness(make_engine) -> None:
    engine = make_engine()
    assert engine.watermark == -math.inf
    feed(engine, [("a", "k", "a1", 100.0)])
    assert engine.watermark == -math.inf  # stream b has not spoken yet: nothing is final
    feed(engine, [("b", "k", "b1", 50.0)])
    assert engine.watermark == 50.0 - LATENESS
    feed(engine, [("b", "k", "b2", 300.0)])
    assert engine.watermark == 100.0 - LATENESS
    feed(engine, [("a", "k", "a2", 80.0)])  # an older event does not move a clock back
    assert engine.clocks["a"] == 100.0
    assert engine.watermark == 100.0 - LATENESS


def test_events_wait_for_the_watermark_and_apply_in_effective_time_order(make_engine) -> None:
    engine = make_engine()
    assert feed(engine, [("a", "k", "a1", 100.0), ("b", "k", "b1", 95.0)]) == []
    # Watermark 85: neither event is final yet.
    assert feed(engine, [("a", "other", "a2", 130.0)]) == []
    out = feed(engine, [("b", "other", "b2", 140.0)])  # watermark 120
    assert out == [("k", "event", "b1", 95.0), ("k", "event", "a1", 100.0)]


def test_late_event_is_ordered_at_its_own_stream_clock_minus_lateness(make_engine) -> None:
    engine = make_engine()
    feed(engine, [("a", "k", "a1", 100.0),
                  ("a", "k", "a2", 95.0),  # out of order but within the lateness: own time
                  ("a", "k", "a3", 50.0)])  # too late: ordered when stream a noticed it
    out = feed(engine, [("b", "f", "b1", 200.0)]) + engine.advance_to(END)
    assert by_key(out)["k"] == [
        ("k", "event", "a3", 100.0 - LATENESS),
        ("k", "event", "a2", 95.0),
        ("k", "event", "a1", 100.0),
    ]


# -- live == replay: any interleaving of the same per-stream sequences -------------------------
# Parity keeps effective times distinct across streams, the .5 lateness keeps late events off
# in-time ones, the .25 deadline step keeps deadlines off events; event ids follow arrival
# order within a stream. Exact ties are covered separately below.
PROP_LATENESS = 10.5
PROP_DEADLINE = 7.25


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[Step], list[Step], list[Step]]:
    streams: dict[str, list[Step]] = {}
    for name, parity in (("a", 0), ("b", 1)):
        times = draw(st.lists(st.integers(0, 60), max_size=14))
        keys = draw(st.lists(st.sampled_from(["k1", "k2", "k3"]),
                             min_size=len(times), max_size=len(times)))
        streams[name] = [(name, key, f"{name}{i:03d}", float(2 * t + parity))
                         for i, (t, key) in enumerate(zip(times, keys, strict=True))]
    order = draw(st.permutations(["a"] * len(streams["a"]) + ["b"] * len(streams["b"])))
    its = {name: iter(seq) for name, seq in streams.items()}
    mixed = [next(its[name]) for name in order]
    return streams["a"], streams["b"], mixed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleavings(), st.booleans())
def test_any_interleaving_of_the_streams_gives_the_same_outputs(case, with_deadlines) -> None:
    seq_a, seq_b, mixed = case
    deadline = PROP_DEADLINE if with_deadlines else None

    def run(steps: list[Step]) -> dict[str, list[Output]]:
        engine = Engine(RecordingLogic(deadline), gating_streams=("a", "b"),
                        allowed_lateness_s=PROP_LATENESS)
        return by_key(run_to_end(engine, steps))

    reference = run(seq_a + seq_b)
    assert run(mixed) == reference
    assert run(seq_b + seq_a) == reference
    for outputs in reference.values():
        ats = [at for *_, at in outputs]
        assert ats == sorted(ats), "a key's events and deadlines run in event-time order"
    applied = sorted(e for outs in reference.values() for _, what, e, _ in outs if what == "event")
    assert applied == sorted(step[2] for step in seq_a + seq_b), "each event applied once"


TIES = {
    # Two late events of stream a both get effective time clock_a - lateness == watermark.
    "late_events_at_the_watermark": (
        [("a", "k", "a1", 100.0), ("a", "k", "a9", 50.0), ("a", "k", "a2", 40.0)],
        [("b", "f", "b1", 200.0)],
        None,
    ),
    # A late event lands exactly on a deadline (k's event at 80 asks for one at 90).
    "late_event_on_a_deadline": (
        [("a", "k", "a1", 80.0), ("a", "f", "a2", 100.0), ("a", "k", "a3", 50.0)],
        [("b", "f", "b1", 200.0)],
        10.0,
    ),
}


@pytest.mark.parametrize("case", TIES.values(), ids=TIES.keys())
def test_ties_at_the_watermark_are_ordered_the_same_in_every_interleaving(case) -> None:
    seq_a, seq_b, deadline = case

    def run(steps: list[Step]) -> dict[str, list[Output]]:
        engine = Engine(RecordingLogic(deadline), gating_streams=("a", "b"),
                        allowed_lateness_s=LATENESS)
        return by_key(run_to_end(engine, steps))

    # b first: the watermark is already 90 when a's late events arrive.
    assert run(seq_a + seq_b)["k"] == run([seq_a[0], seq_a[1], *seq_b, seq_a[2]])["k"]


# -- deadlines ---------------------------------------------------------------------------------
def test_deadline_fires_as_soon_as_the_watermark_passes_it(make_engine) -> None:
    # Strictly past: an event of the slowest stream may still arrive at exactly the watermark.
    engine = make_engine(deadline_after_s=50.0)
    feed(engine, [("a", "k", "a1", 100.0)])
    assert drive(engine, 100.0) == []
    assert drive(engine, 100.001) == [("k", "event", "a1", 100.0)]
    assert drive(engine, 150.0) == []
    assert drive(engine, 150.001) == [("k", "due", None, 150.0)]
    assert drive(engine, 10_000.0) == []  # once


def test_deadline_is_timed_by_event_time_even_when_the_watermark_jumps(make_engine) -> None:
    engine = make_engine(deadline_after_s=50.0)
    feed(engine, [("a", "k", "a1", 100.0), ("a", "k", "a2", 170.0)])
    # One jump past both events and the deadline between them: all run, in event-time order.
    assert drive(engine, 500.0) == [
        ("k", "event", "a1", 100.0),
        ("k", "due", None, 150.0),
        ("k", "event", "a2", 170.0),
        ("k", "due", None, 220.0),
    ]


def test_advance_to_moves_the_watermark_for_idle_input_and_never_back(make_engine) -> None:
    engine = make_engine(deadline_after_s=50.0)
    feed(engine, [("a", "k", "a1", 100.0), ("b", "k", "b1", 100.0)])
    assert engine.advance_to(120.0) == [("k", "event", "a1", 100.0), ("k", "event", "b1", 100.0)]
    assert engine.watermark == 120.0
    assert engine.advance_to(60.0) == []
    assert engine.watermark == 120.0
    assert engine.advance_to(150.0) == []
    assert engine.advance_to(150.5) == [("k", "due", None, 150.0)]
    drive(engine, 400.0)  # the stream clocks overtake the forced watermark
    assert engine.watermark == 400.0


# -- input hygiene -----------------------------------------------------------------------------
def test_duplicate_event_id_is_absorbed_and_counted(make_engine) -> None:
    engine = make_engine()
    feed(engine, [("a", "k", "a1", 100.0)])
    assert feed(engine, [("a", "k", "a1", 100.0)]) == []
    assert feed(engine, [("b", "k", "a1", 101.0)]) == []  # same id on another stream too
    assert engine.duplicates == 2
    feed(engine, [("a", "other", "a1", 100.0)])  # ids are remembered per key
    assert engine.duplicates == 2
    out = drive(engine, 1000.0)
    assert sorted(o[:2] for o in out) == [("k", "event"), ("other", "event")]


def test_same_event_id_with_other_content_is_refused_and_the_first_counts(make_engine) -> None:
    engine = make_engine()
    assert engine.ingest("a", "k", "first", "a1", 100.0, content=1) == []
    assert engine.ingest("a", "k", "resent", "a1", 100.0, content=1) == []  # a re-send
    [refused] = engine.ingest("a", "k", "other", "a1", 100.0, content=2)
    assert (refused.reason, refused.event_id) == ("conflicting_duplicate", "a1")
    assert "already received with other content" in refused.error
    assert engine.ingest("a", "k", "unprinted", "a1", 100.0) == []  # no content: absorbed
    assert engine.duplicates == 2
    assert drive(engine, 1000.0) == [("k", "event", "first", 100.0)]


def test_a_refused_duplicate_does_not_move_its_streams_clock(make_engine) -> None:
    """Its occurred_at may be what differs (found by the fuzz test: a conflicting re-send
    of a snapshot dated an hour ahead moved the inventory clock, and another key's on-time
    snapshot was then ordered as late, its alert 36 min later). An exact re-send still
    moves it (after a crash it brings the clock where the first delivery had it)."""
    engine = make_engine()
    engine.ingest("a", "k", "first", "a1", 100.0, content=1)
    before = dict(engine.clocks)
    [refused] = engine.ingest("a", "k", "other", "a1", 5000.0, content=2)
    assert refused.reason == "conflicting_duplicate" and engine.clocks == before
    assert engine.ingest("a", "k", "resent", "a1", 100.0, content=1) == []
    assert engine.clocks == before


def test_state_pickled_before_fingerprints_is_restored_and_absorbs_resends(make_engine) -> None:
    before = make_engine()
    before.ingest("a", "k", "e", "a1", 100.0, content=1)
    changed, _ = before.take_changes()
    old = changed["k"]
    # what a worker without fingerprints wrote to the changelog: the slots dataclass
    # default pickle, (None, {slot: value}), without ``prints``
    legacy = (None, {f.name: getattr(old, f.name) for f in dataclasses.fields(old)
                     if f.name != "prints"})
    restored = KeyState.__new__(KeyState)
    restored.__setstate__(legacy)
    after = make_engine()
    after.restore([pickle.loads(pickle.dumps(restored))], dict(before.clocks))
    assert after.ingest("a", "k", "e", "a1", 100.0, content=2) == []  # nothing to compare
    assert after.duplicates == 1
    assert after.ingest("a", "k", "e2", "a2", 101.0, content=3) == []
    assert after.states["k"].prints == {"a2": 3}


def test_fingerprint_is_what_the_event_says_not_how_its_bytes_say_it() -> None:
    from delaywatch.schemas.events import OrderEvent

    def order(**changes: Any) -> OrderEvent:
        fields = {"event_id": "e1", "occurred_at": "2026-05-20T09:00:00+09:00",
                  "event_type": "order_placed", "order_id": "O-1",
                  "customer": {"name": "Hong Gildong"}, **changes}
        return OrderEvent.model_validate(fields)

    same = order(occurred_at="2026-05-20T00:00:00Z", customer={"name": "Other"}, extra=1)
    assert fingerprint(order()) == fingerprint(same)
    assert fingerprint(order()) != fingerprint(order(event_type="order_cancelled"))
    assert fingerprint(order()) != fingerprint(order(occurred_at="2026-05-20T09:00:01+09:00"))


def test_a_quiet_stream_is_never_stuck(make_engine) -> None:
    # A real gap (a shop closed for a week) must not make every later event "impossible":
    # the future bound is checked at the edge against the record's own timestamp instead.
    engine = make_engine()
    feed(engine, [("a", "k", "a1", 100.0)])
    assert feed(engine, [("a", "k", "a2", 100.0 + 30 * 86400.0)]) == []
    assert engine.clocks["a"] == 100.0 + 30 * 86400.0


def test_far_past_event_is_rejected_as_impossible_timestamp(make_engine) -> None:
    engine = make_engine(max_past_s=500.0)
    feed(engine, [("a", "k", "a1", 1000.0)])
    out = feed(engine, [("a", "k", "a2", 499.0)])
    assert [(r.reason, r.event_id) for r in out] == [("impossible_timestamp", "a2")]
    assert "behind the 'a' stream clock" in out[0].error
    assert feed(engine, [("a", "k", "a3", 500.0)]) == []


def test_a_stream_with_lateness_zero_gates_at_its_clock_and_keeps_event_times(
        make_engine) -> None:
    """Stock notices: a stream whose heartbeats carry its clock and whose events are never
    dated before it gates the watermark at the clock itself, and each event keeps its time
    however it interleaves with the other streams."""
    engine = Engine(RecordingLogic(), gating_streams=("a", "n"), allowed_lateness_s=LATENESS,
                    lateness={"n": 0.0})
    feed(engine, [("a", "k", "a1", 100.0), ("a", "k", "a2", 200.0)])
    assert engine.watermark == -math.inf  # nothing heard from "n" yet
    assert engine.observe_clock("n", 150.0) == [("k", "event", "a1", 100.0)]
    assert engine.watermark == 150.0
    # a notice at its stream's clock keeps its own time, between a1 and a2
    assert feed(engine, [("n", "k", "n1", 150.0)]) == []
    out = engine.observe_clock("n", 400.0)  # watermark min(200 - 10, 400) = 190
    assert out == [("k", "event", "n1", 150.0)]
    assert engine.watermark == 190.0


def test_items_apply_in_one_global_time_order_however_the_watermark_moves(make_engine) -> None:
    """Keys interleave by time (ties by key), not key after key: learned state shared by
    all keys sees the same sequence whether the watermark moves in one step or many."""
    steps: list[Step] = [(s, k, f"{s}{k}{i}", 10.0 * i + j)
                         for i in range(1, 8) for j, k in enumerate(("k2", "k1", "k3"))
                         for s in ("a",)]

    def run(increments: list[float]) -> list[Any]:
        engine = make_engine(deadline_after_s=15.0)
        feed(engine, steps)
        out: list[Any] = []
        for wm in increments:
            out += drive(engine, wm)
        return out + engine.advance_to(END)

    one_step = run([1000.0])
    assert [at for *_, at in one_step] == sorted(at for *_, at in one_step)
    assert run([12.0, 13.0, 40.0, 41.5, 77.0, 1000.0]) == one_step


# -- persistence -------------------------------------------------------------------------------
FIRST: list[Step] = [
    ("a", "k1", "a1", 100.0), ("b", "k2", "b1", 105.0), ("a", "k2", "a2", 130.0),
    ("b", "k1", "b2", 140.0), ("a", "k1", "a3", 60.0), ("b", "k3", "b3", 150.0),
]
SECOND: list[Step] = [
    ("a", "k3", "a4", 170.0), ("b", "k1", "b4", 175.0), ("a", "k1", "a3", 60.0),
    ("a", "k2", "a5", 260.0), ("b", "k2", "b5", 300.0),
]


def test_take_changes_and_restore_continue_like_an_uninterrupted_engine(make_engine) -> None:
    uninterrupted = make_engine(deadline_after_s=30.0)
    expected = feed(uninterrupted, FIRST + SECOND) + uninterrupted.advance_to(END)

    before = make_engine(deadline_after_s=30.0)
    out = feed(before, FIRST)
    changed, deleted = before.take_changes()
    assert set(changed) == {"k1", "k2", "k3"} and deleted == set()
    assert before.take_changes() == ({}, set())  # coalesced: nothing new since
    snapshot = pickle.dumps((list(changed.values()), dict(before.clocks)))
    del before

    states, clocks = pickle.loads(snapshot)
    assert all(isinstance(ks, KeyState) for ks in states)
    after = make_engine(deadline_after_s=30.0)
    after.restore(states, clocks)
    out += feed(after, SECOND) + after.advance_to(END)
    assert out == expected
    assert after.duplicates == 1  # a3 was seen before the restart


def test_a_re_delivered_event_moves_its_streams_clock_as_the_first_delivery_did(
        make_engine) -> None:
    """A crash after the keys' state was written but before the partition's clocks: the
    restarted engine has the event (a duplicate now) and an older clock. The re-delivery
    must move the clock all the same, or the next late event is ordered differently."""
    steps: list[Step] = [("a", "k1", "a1", 100.0), ("b", "k1", "b1", 100.0),
                         ("a", "k1", "a2", 200.0)]
    late: list[Step] = [("a", "k2", "a3", 150.0), ("b", "k2", "b2", 300.0)]
    uninterrupted = make_engine()
    expected = feed(uninterrupted, steps + late) + uninterrupted.advance_to(END)

    before = make_engine()
    feed(before, steps[:2])
    old_clocks = dict(before.clocks)  # the clocks record of the batch never landed
    feed(before, steps[2:])
    states = pickle.loads(pickle.dumps(list(before.take_changes()[0].values())))
    after = make_engine()
    after.restore(states, old_clocks)
    out = feed(after, steps[2:] + late) + after.advance_to(END)  # a2 comes again
    assert after.duplicates == 1
    # a3 is 50 s behind the "a" clock (lateness 10): ordered at 190 in both runs
    assert ("k2", "event", "a3", 190.0) in expected
    assert [o for o in out if o[0] == "k2"] == [o for o in expected if o[0] == "k2"]


def test_advance_to_infinity_drains_everything(make_engine) -> None:
    engine = make_engine()
    feed(engine, [("a", "k", "a1", 100.0)])
    assert engine.advance_to(math.inf) == [("k", "event", "a1", 100.0)]


def test_expired_keys_are_reported_as_deleted(make_engine) -> None:
    engine = make_engine(deadline_after_s=20.0, expire_after_s=10.0)
    feed(engine, [("a", "k", "a1", 100.0)])
    drive(engine, 100.0)
    assert engine.take_changes()[0].keys() == {"k"}
    drive(engine, 120.0)  # the deadline runs the key once more; it has expired by then
    changed, deleted = engine.take_changes()
    assert changed == {} and deleted == {"k"}
    assert "k" not in engine.states
