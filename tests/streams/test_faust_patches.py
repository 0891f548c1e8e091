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


def test_records_read_back_unblock_a_commit_faust_would_never_make_again():
    """The state measured in a kill -9 run: committed 3073, records 3073..3083 read by
    Faust's fetch loop but never delivered (no gap covers them), acks from 3084 on. Faust's
    own ``_new_offset`` refuses to commit, at every commit, for good; once the worker acks
    the records it read back itself, the commit moves to the end."""
    from faust.transport.consumer import Consumer

    from delaywatch.streams.faust_patches import ack_offsets

    tp = TP("inventory", 2)
    book = _Bookkeeping(committed=3073)
    _ack(book, tp, range(3084, 3200))
    assert Consumer._new_offset(book, tp) is None
    assert Consumer._new_offset(book, tp) is None  # stuck, not slow

    assert ack_offsets(book, tp, range(3073, 3084)) == 11
    assert ack_offsets(book, tp, [3073, 3050]) == 0  # already acked / below the commit
    assert Consumer._new_offset(book, tp) == 3200
