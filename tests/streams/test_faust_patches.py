"""The patches to Faust's clients take effect on the app the worker builds (no broker)."""

from __future__ import annotations

from faust.types import TP

from delaywatch.config import Settings
from delaywatch.streams.app import create_app


def test_the_workers_producer_is_idempotent_with_acks_all(tmp_path):
    settings = Settings()
    settings.worker.data_dir = tmp_path / "faust-data"
    app = create_app(settings)
    conf = {**app.producer._settings_default(), **app.producer._settings_extra()}
    assert conf["enable_idempotence"] is True
    assert conf["acks"] == "all"


def test_the_commit_gap_fix_is_installed(tmp_path):
    from faust.transport.consumer import Consumer

    settings = Settings()
    settings.worker.data_dir = tmp_path / "faust-data"
    create_app(settings)
    assert getattr(Consumer, "_delaywatch_gap_fix", False)


def test_idempotence_can_be_turned_off_for_brokers_without_it(tmp_path):
    settings = Settings()
    settings.worker.data_dir = tmp_path / "faust-data"
    settings.kafka.idempotent_producer = False
    app = create_app(settings)
    assert "enable_idempotence" not in app.producer._settings_extra()
    assert app.producer._settings_extra()["acks"] == "all"


class _Bookkeeping:
    """The part of Faust's Consumer that decides the offset to commit."""

    def __init__(self, committed: int) -> None:
        from collections import defaultdict

        from intervaltree import IntervalTree

        self._acked: dict = defaultdict(list)
        self._acked_index: dict = defaultdict(set)
        self._gap: dict = defaultdict(IntervalTree)
        self._committed_offset: dict = defaultdict(lambda: None)
        self._committed_offset[TP("inventory", 2)] = committed


def _ack(book: _Bookkeeping, tp, offsets) -> None:  # what Consumer.ack records
    for o in offsets:
        book._acked_index[tp].add(o)
        book._acked[tp].append(o)


def test_offsets_the_state_holds_unblock_a_commit_faust_would_never_make_again():
    """The state measured in a kill -9 run: committed 3073, records 3073..3083 read by
    Faust's fetch loop but never delivered (no gap covers them), acks from 3084 on. Faust's
    own bookkeeping refuses to commit, at every commit, for good; with the offsets the
    worker's state holds counted as acked, the commit moves on -- also for a partition
    with no acks at all."""
    from faust.transport.consumer import Consumer

    from delaywatch.streams import faust_patches

    faust_patches.apply()

    class Book(_Bookkeeping):
        _new_offset = Consumer._new_offset
        _should_commit = Consumer._should_commit
        _filter_committable_offsets = Consumer._filter_committable_offsets

    tp, quiet = TP("inventory", 2), TP("inventory", 3)
    book = Book(committed=3073)
    book._committed_offset[quiet] = 500
    _ack(book, tp, range(3084, 3200))
    held = {tp: 3073, quiet: 500}  # what the state holds: nothing beyond the commits
    faust_patches.count_state_as_acked(lambda: held)
    try:
        assert book._filter_committable_offsets([tp]) == {}
        assert book._filter_committable_offsets([tp]) == {}  # stuck, not slow

        held.update({tp: 3150, quiet: 640})  # the state now holds 3073..3149 and 500..639
        committable = book._filter_committable_offsets([tp])
        assert committable == {tp: 3200, quiet: 640}
        book._committed_offset.update(committable)  # as Consumer._commit_offsets does
        assert book._filter_committable_offsets([tp]) == {}  # nothing new: nothing acked
        assert faust_patches.ack_offsets(book, tp, [3199, 3050]) == 0  # below the commit
    finally:
        faust_patches.count_state_as_acked(None)
