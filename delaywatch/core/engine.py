"""The event-time engine every delaywatch pipeline runs on (Faust worker, replay, tests).

One :class:`Engine` owns the keyed state of one partition. It is pure: no I/O, no wall clock.

Time model
----------
Each input *stream* (a topic partition, or an internal origin) keeps a clock: the largest
``occurred_at`` it has delivered. An event's **effective time** is
``max(occurred_at, clock_before_it - allowed_lateness)``: in-time events keep their own time,
an event later than the allowed lateness is ordered at the moment its own stream noticed it.
Because that depends only on the order *within* one stream, which Kafka preserves, every run
orders the events of a key the same way, however the streams are interleaved.

The **watermark** is ``min(clock - lateness)`` over the streams; the lateness is
``allowed_lateness`` unless a stream has its own (an internal stream whose events never run
behind its clock, e.g. stock notices, has 0). No event can arrive later with an effective
time below it, so everything up to the watermark is final: events wait in their key's
``pending`` list and are applied in (effective time, key, stream rank, event_id) order across
all keys, interleaved with the deadlines the logic asks for. A deadline therefore fires
exactly when the event clock passes it, and every item is applied in the same global order
however far each call moves the watermark -- in live mode, after a crash, and in a replay of
last month alike (which matters to learned models shared by all keys).

Items are applied strictly *before* the watermark: a late event of the slowest stream gets an
effective time equal to it and must still be sorted among its ties. Only an outside clock
(:meth:`Engine.advance_to`: idle input, end of a file) can move the watermark past a stream's
clock; an event that arrives behind it then is applied just under it, after what was applied.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from delaywatch.core.compact import compact_state

__all__ = [
    "Engine",
    "Forward",
    "KeyState",
    "KeyedLogic",
    "Pending",
    "Rejected",
    "fingerprint",
]

S = TypeVar("S")
NEG_INF = -math.inf
SEEN_LIMIT = 64  # past this many ids per key, ids beyond the max_past horizon are forgotten


@dataclass(slots=True, frozen=True)
class Forward:
    """A record for another topic: ``role`` names it (``order_lines``, ``stock_notices``)."""

    role: str
    key: str | None
    value: dict[str, Any]
    partition: int | None = None


@dataclass(slots=True, frozen=True)
class Rejected:
    """A valid-looking event the core refuses; the caller turns it into a DLQ record."""

    reason: str
    error: str
    event_id: str | None = None
    # set by the engine when the refusal comes at ordering time, long after the record's own
    # arrival: where the record came from (opaque to the core) and the refused event itself
    origin: Any = None
    event: Any = None


@dataclass(slots=True, order=True)
class Pending:
    eff: float
    rank: int
    event_id: str
    stream: str = field(compare=False)
    event: Any = field(compare=False)
    origin: Any = field(default=None, compare=False)
    # the event's JSON, made once: a pending event is pickled with its key's state at every
    # write-back until it is released, and re-dumping it each time was 8 % of the worker's
    # time (py-spy). Events are frozen models, so the JSON cannot go stale.
    dump: str | None = field(default=None, compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled into the changelog with the key's state: a validated event is stored as
        # its JSON (what the schema dumps: raw PII such as ``customer`` is excluded, and it
        # is several times smaller and faster than pickling the model object).
        ev = self.event
        if isinstance(ev, BaseModel):
            if self.dump is None:
                self.dump = ev.model_dump_json()
            cls = type(ev)
            payload: Any = (f"{cls.__module__}:{cls.__qualname__}", self.dump)
        else:
            payload = (None, ev)
        return (_restore_pending,
                (self.eff, self.rank, self.event_id, self.stream, payload, self.origin))


def _restore_pending(eff: float, rank: int, event_id: str, stream: str,
                     payload: tuple[str | None, Any], origin: Any) -> Pending:
    kind, data = payload
    if kind is None:
        return Pending(eff, rank, event_id, stream, data, origin)
    module, _, name = kind.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return Pending(eff, rank, event_id, stream, cls.model_validate_json(data), origin, data)


@compact_state()
@dataclass(slots=True)
class KeyState(Generic[S]):
    key: str
    data: S
    pending: list[Pending] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)  # event_id -> occurred_at
    due: float | None = None  # next deadline the logic asked for
    # event_id -> fingerprint of its content, for ids ingested with one (input events)
    prints: dict[str, int] = field(default_factory=dict)


def fingerprint(event: BaseModel) -> int:
    """What a validated event says (not how its bytes said it: key order, offsets of its
    timestamps, ignored fields and the excluded PII do not count), stable across processes."""
    digest = hashlib.blake2b(event.model_dump_json().encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class KeyedLogic(Protocol[S]):
    """What an engine needs from the detector logic of one kind of key."""

    def new_state(self, key: str) -> S: ...

    def on_receipt(self, state: S, stream: str, event: Any, clocks: dict[str, float]) -> list[Any]:
        """Act at arrival, before ordering (e.g. forward order lines to the stock table)."""
        ...

    def apply(self, state: S, stream: str, event: Any, at: float) -> list[Any]: ...

    def on_time(self, state: S, at: float) -> list[Any]: ...

    def next_due(self, state: S, after: float) -> float | None: ...

    def expired(self, state: S, watermark: float) -> bool: ...


class Engine(Generic[S]):
    """Keyed state of one partition, ordered and timed by event time."""

    def __init__(
        self,
        logic: KeyedLogic[S],
        *,
        gating_streams: Sequence[str],
        allowed_lateness_s: float = 1800.0,
        max_past_s: float = 2 * 86400.0,
        lateness: Mapping[str, float] | None = None,
    ) -> None:
        self.logic = logic
        self.gating_streams = tuple(gating_streams)
        self.allowed_lateness_s = allowed_lateness_s
        self.max_past_s = max_past_s
        # per stream: how far behind its clock an event may be and keep its own time
        self.lateness = {s: allowed_lateness_s for s in self.gating_streams}
        self.lateness.update(lateness or {})
        self.rank = {s: i for i, s in enumerate(self.gating_streams)}
        self.clocks: dict[str, float] = {}
        self.states: dict[str, KeyState[S]] = {}
        self.dirty: set[str] = set()
        self.deleted: set[str] = set()
        self.duplicates = 0
        self._heap: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._forced_watermark = NEG_INF
        self._watermark: float | None = None  # cached; None after any clock moved

    # -- time -------------------------------------------------------------------------
    @property
    def watermark(self) -> float:
        if self._watermark is not None:
            return self._watermark
        clocks = self.clocks
        low = math.inf
        for stream, lateness in self.lateness.items():
            clock = clocks.get(stream)
            if clock is None:
                low = NEG_INF
                break
            low = min(low, clock - lateness)
        self._watermark = max(low, self._forced_watermark)
        return self._watermark

    def advance_to(self, watermark: float) -> list[Any]:
        """Let the watermark follow an outside clock (live mode, idle input only)."""
        self._forced_watermark = max(self._forced_watermark, watermark)
        self._watermark = None
        return self._run(self.watermark)

    # -- input ------------------------------------------------------------------------
    def ingest(
        self, stream: str, key: str, event: Any, event_id: str, occurred_at: float,
        origin: Any = None, content: int | None = None,
    ) -> list[Any]:
        """``content``: the event's :func:`fingerprint`. A re-sent event (same id, same
        content) is absorbed; the same id with other content is refused."""
        # No "too far ahead" check here: a stream with a real gap would reject everything
        # after it. The edge checks occurred_at against the record's own timestamp.
        clock = self.clocks.get(stream, NEG_INF)
        if clock > NEG_INF and occurred_at < clock - self.max_past_s:
            return [
                Rejected(
                    "impossible_timestamp",
                    f"occurred_at is {(clock - occurred_at) / 3600:.1f} h behind the "
                    f"{stream!r} stream clock (limit {self.max_past_s / 3600:.0f} h): too old "
                    "to order against state that may already be gone",
                    event_id,
                )
            ]
        ks = self.states.get(key)
        if ks is not None and event_id in ks.seen:
            first = ks.prints.get(event_id)
            if content is not None and first is not None and first != content:
                # refused, and its clock not believed: its occurred_at may be the very thing
                # that differs, and a clock moved by it would re-time other keys' events
                return [Rejected("conflicting_duplicate", f"event_id {event_id!r} was already "
                                 "received with other content: the first one counts",
                                 event_id), *self._run(self.watermark)]
        # The stream's clock moves with every record it delivers, exact re-sends too: after a
        # crash, state may already hold events whose partition clock was not yet written,
        # and their re-delivery must bring the clock where the first delivery had it.
        if occurred_at > clock:
            self.clocks[stream] = occurred_at
            self._watermark = None
        if ks is None:
            ks = KeyState(key, self.logic.new_state(key))
            self.states[key] = ks
        seen = ks.seen
        if event_id in seen:
            self.duplicates += 1
            return self._run(self.watermark)
        seen[event_id] = occurred_at
        if content is not None:
            ks.prints[event_id] = content
        if len(seen) % SEEN_LIMIT == 0:
            # Forget ids older than the max_past horizon: their duplicates are rejected above.
            horizon = max(seen.values()) - self.max_past_s
            for old in [e for e, t in seen.items() if t < horizon]:
                del seen[old]
                ks.prints.pop(old, None)

        eff = max(occurred_at, clock - self.lateness.get(stream, self.allowed_lateness_s))
        if self._forced_watermark > eff:
            # behind an outside clock: just under the watermark, after what was applied
            eff = max(eff, math.nextafter(self.watermark, NEG_INF))
        outputs = self.logic.on_receipt(ks.data, stream, event, self.clocks)
        bisect.insort(ks.pending,
                      Pending(eff, self.rank.get(stream, 99), event_id, stream, event, origin))
        self.dirty.add(key)
        self._schedule(ks)
        outputs.extend(self._run(self.watermark))
        return outputs

    def observe_clock(self, stream: str, clock: float) -> list[Any]:
        """A heartbeat: the stream's clock reached ``clock`` without an event for us."""
        if clock > self.clocks.get(stream, NEG_INF):
            self.clocks[stream] = clock
            self._watermark = None
        return self._run(self.watermark)

    # -- ordering and deadlines ----------------------------------------------------------
    def _schedule(self, ks: KeyState[S]) -> None:
        nxt = math.inf
        if ks.pending:
            nxt = ks.pending[0].eff
        if ks.due is not None and ks.due < nxt:
            nxt = ks.due
        if nxt == math.inf:
            self._scheduled.pop(ks.key, None)
            return
        if self._scheduled.get(ks.key) != nxt:
            self._scheduled[ks.key] = nxt
            heapq.heappush(self._heap, (nxt, ks.key))

    def _run(self, wm: float) -> list[Any]:
        """Apply everything before ``wm``, in (time, key) order across keys: one item per
        turn, then the key goes back into the heap at its next item's time."""
        outputs: list[Any] = []
        heap = self._heap
        while heap and heap[0][0] < wm:
            t, key = heapq.heappop(heap)
            if self._scheduled.get(key) != t:
                continue  # superseded entry
            del self._scheduled[key]
            ks = self.states[key]
            outputs.extend(self._step_key(ks, wm))
            if (not ks.pending and (ks.due is None or ks.due >= wm)
                    and self.logic.expired(ks.data, wm)):
                del self.states[key]
                self.dirty.discard(key)
                self.deleted.add(key)
                continue
            self._schedule(ks)
        return outputs

    def _step_key(self, ks: KeyState[S], wm: float) -> list[Any]:
        """Apply the key's next item (event or deadline) if it lies before ``wm``."""
        outputs: list[Any] = []
        logic = self.logic
        next_ev = ks.pending[0].eff if ks.pending else math.inf
        next_due = ks.due if ks.due is not None else math.inf
        at = min(next_ev, next_due)
        # Strictly before the watermark: a late event of the slowest stream gets an
        # effective time *equal* to the watermark, and must still be sorted among its ties.
        if at >= wm:
            return outputs
        if next_ev <= next_due:
            p = ks.pending.pop(0)
            for out in logic.apply(ks.data, p.stream, p.event, p.eff):
                if isinstance(out, Rejected):
                    out = replace(out, origin=p.origin, event=p.event)
                outputs.append(out)
            # a deadline at exactly this time is still due (events at t go first)
            ks.due = logic.next_due(ks.data, math.nextafter(at, NEG_INF))
        else:
            outputs.extend(logic.on_time(ks.data, next_due))
            ks.due = logic.next_due(ks.data, at)
        self.dirty.add(ks.key)
        return outputs

    # -- persistence helpers (used by the Faust layer) -----------------------------------------
    def restore(self, states: Iterable[KeyState[S]], clocks: dict[str, float]) -> None:
        """Rebuild the in-memory indexes from recovered state."""
        for stream, clock in clocks.items():
            if clock > self.clocks.get(stream, NEG_INF):
                self.clocks[stream] = clock
                self._watermark = None
        for ks in states:
            if not hasattr(ks, "prints"):  # pickled by a worker that kept no fingerprints
                ks.prints = {}
            self.states[ks.key] = ks
            self._schedule(ks)

    def take_changes(self) -> tuple[dict[str, KeyState[S]], set[str]]:
        """Keys changed and deleted since the last call (for coalesced table writes)."""
        changed = {k: self.states[k] for k in self.dirty if k in self.states}
        deleted = self.deleted
        self.dirty, self.deleted = set(), set()
        return changed, deleted
