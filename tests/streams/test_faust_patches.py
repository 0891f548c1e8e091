"""The patches to Faust's clients take effect on the app the worker builds (no broker)."""

from __future__ import annotations

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
