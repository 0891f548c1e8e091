"""Learned models on a real broker (issue #4, acceptance items 3 and 5).

The worker holds one :class:`~delaywatch.models.checkpoint.ModelSet` per process, shared by
all its partitions, warm-started from its checkpoint file and re-written every
``checkpoint_interval_s``; it announces ``cold_start`` / ``restored`` / ``checkpoint`` on the
model topic with the score of a fixed probe order (equal probe = same model).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from delaywatch.config import Settings
from delaywatch.core.pipeline import make_models
from delaywatch.kafka_io import consume, create_all_topics, produce_records, read_all
from delaywatch.replay import replay, replay_file
from delaywatch.simulate import KST, simulate, write_jsonl
from tests.streams.helpers import (
    alert_signature,
    is_rule_alert,
    model_kinds,
    models_env,
    p_late_of,
    split_model_kinds,
    wait_for_outputs,
)

pytestmark = pytest.mark.broker

# A week of history before the default world (2026-05-20), enough labelled orders for the
# alert threshold to hold its precision from the world's first day. 1,500 orders were enough
# for the 500-label warm-up, but a model that separates late orders well only after ~3,000
# (measured on this world, replay: 1,500 -> threshold at its edge, 30 delay_risk alerts with
# one partition and 1 with four; 3,000 -> 118 and 86, precision 0.81, recall 0.82).
TRAIN_ORDERS, TRAIN_SEED = 3000, 5


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``delaywatch train`` writes: the models after replaying a week of history."""
    d = tmp_path_factory.mktemp("train")
    history, _ = simulate(TRAIN_ORDERS, seed=TRAIN_SEED, start=datetime(2026, 5, 13, tzinfo=KST),
                          profile="stress")
    write_jsonl(d / "history.jsonl", history)
    settings = Settings()
    settings.topics.partitions = 1
    settings.models.enabled = True
    replay_file(d / "history.jsonl", None, settings, checkpoint_out=d / "trained.ckpt")
    return d / "trained.ckpt"


@pytest.fixture(scope="module")
def world(small_world: tuple[list[dict[str, Any]], list[dict[str, Any]]]
          ) -> list[dict[str, Any]]:
    """small_world up to its last order event. Without a flush nothing is applied past it
    (the orders clock gates every shipment watermark, and through the order lines every stock
    one): the 16k records after it change no alert and would only double the live run."""
    records, orders = small_world[0], Settings().topics.orders
    last = max(i for i, r in enumerate(records) if r["topic"] == orders)
    return records[:last + 1]


def _with_models(settings: Settings, checkpoint: Path | None) -> Settings:
    settings.models.enabled = True
    settings.models.checkpoint_path = checkpoint
    return settings


def _replay_with_models(records, settings, thresholds):
    """What a live worker emits (no flush), and the model set the replay ended with."""
    topologies: list[Any] = []
    result = replay(records, settings, thresholds, flush=False, configure=topologies.append)
    return result, topologies[0].models


def _run_live(broker, records, settings, worker_env, start_worker, checkpoint, expected_alerts,
              expected_dlq, counted=None):
    env = {**worker_env(broker, settings), **models_env(checkpoint, interval_s=2.0)}
    create_all_topics(settings)
    produce_records(settings, records)
    worker = start_worker(env)
    return worker, wait_for_outputs(settings, worker, expected_alerts, expected_dlq,
                                    counted=counted)


def _model_events(settings: Settings) -> list[dict[str, Any]]:
    """The model topic in order (one partition)."""
    return [r["value"] for r in read_all(settings, settings.topics.model, idle_s=1.0)]


def _wait_for_checkpoint(settings: Settings, worker: Any, want: dict[str, Any],
                         timeout_s: float = 30.0) -> tuple[bool, dict[str, Any] | None]:
    """(True, the first checkpoint event whose fields equal ``want``), or (False, the last
    checkpoint) on timeout. The counts of labels learned reach their end before the online
    aggregates the probe also reads (scans after the last label still move them), so the
    end state is the one where both agree."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        assert worker.alive(), f"worker died:\n{worker.log_tail()}"
        for ev in _model_events(settings):
            if ev["kind"] == "checkpoint":
                last = ev
                if all(ev.get(k) == v for k, v in want.items()):
                    return True, ev
        time.sleep(1.0)
    return False, last


def _by_alert(p_late: set[tuple[str, str, str, float]]) -> dict[tuple[str, str], float]:
    return {(a, s): p for a, _, s, p in p_late}


def _jaccard(a: set[Any], b: set[Any]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def test_live_equals_replay_with_models_one_partition(
        kafka, world, make_settings, thresholds, worker_env, start_worker, trained_checkpoint,
        tmp_path):
    """One partition: the shared models see the same events in the same event-time order live
    and in replay, so every alert -- model kinds included -- and every p_late is equal, and
    the worker ends with the model replay ends with."""
    t0 = time.monotonic()
    settings = _with_models(make_settings(partitions=1), tmp_path / "replay.ckpt")
    shutil.copy(trained_checkpoint, tmp_path / "replay.ckpt")
    shutil.copy(trained_checkpoint, tmp_path / "worker.ckpt")  # the worker rewrites its own
    expected, models = _replay_with_models(world, settings, thresholds)
    want_alerts = [a.model_dump(mode="json") for a in expected.alerts]
    want = alert_signature(want_alerts)
    by_kind = {k: sum(1 for s in want if s[1] == k) for k in sorted(model_kinds())}
    assert by_kind["delay_risk"] >= 10, f"the trained models should raise delay_risk: {by_kind}"

    worker, live = _run_live(kafka, world, settings, worker_env, start_worker,
                             tmp_path / "worker.ckpt", len(want), len(expected.dead_letters))
    got = alert_signature(live["alerts"])
    missing, extra = set(want) - set(got), set(got) - set(want)
    assert not missing and not extra, (
        f"missing {len(missing)}: {sorted(missing)[:4]} extra {len(extra)}: {sorted(extra)[:4]}")
    p_want = _by_alert(p_late_of(want_alerts))
    p_got = _by_alert(p_late_of(live["alerts"]))
    differ = {k for k in p_want.keys() | p_got.keys() if p_want.get(k) != p_got.get(k)}
    assert not differ, f"p_late differs on {len(differ)} of {len(p_want)} delay alerts"

    events = _model_events(settings)
    assert events[0]["kind"] == "restored", events[:2]
    trained = _with_models(make_settings(partitions=1), trained_checkpoint)
    assert events[0]["probe_p_late"] == make_models(trained, thresholds).probe()
    want_end = {"learned": models.learned(), "probe_p_late": models.probe()}
    ended, last = _wait_for_checkpoint(settings, worker, want_end)
    assert ended and last is not None, (
        f"no checkpoint with replay's end state {want_end}; the last: "
        f"{ {k: last.get(k) for k in want_end} if last else None}")
    print(f"\nmodels on, 1 partition: {len(want)} alerts == replay (model kinds {by_kind}), "
          f"{len(p_want)} equal p_late; probe restored {events[0]['probe_p_late']} -> "
          f"{last['probe_p_late']} == replay's, learned {last['learned']}; "
          f"{time.monotonic() - t0:.0f} s")


def test_live_vs_replay_with_models_four_partitions(
        kafka, world, make_settings, thresholds, worker_env, start_worker, trained_checkpoint,
        tmp_path):
    """Four partitions: rule alerts are still identical; model alerts are close, not equal.

    The worker's one model set learns from all four partitions' orders, each label when its
    own partition's event clock passes the promise. Replay feeds the partitions in file order;
    the live worker takes them batch by batch, in whatever order the four partitions are
    fetched. The models see the same labels in another interleaving, so their weights -- and
    every p_late after the first label -- differ a little, and a score near the alert
    threshold can fall on the other side of it. That is acceptable: the rules stay an exact,
    replayable ledger; the models promise precision at their threshold over time (issue #4),
    not bit-equal scores, and one model per process learns n times faster than one per
    partition would (``delaywatch.core.pipeline.make_models``).
    """
    t0 = time.monotonic()
    settings = _with_models(make_settings(partitions=4), tmp_path / "replay.ckpt")
    shutil.copy(trained_checkpoint, tmp_path / "replay.ckpt")
    shutil.copy(trained_checkpoint, tmp_path / "worker.ckpt")
    expected, _ = _replay_with_models(world, settings, thresholds)
    want_alerts = [a.model_dump(mode="json") for a in expected.alerts]
    want_rules, want_models = split_model_kinds(alert_signature(want_alerts))

    # the number of model alerts differs: wait for the rule alerts (the stock side lags)
    _, live = _run_live(kafka, world, settings, worker_env, start_worker,
                        tmp_path / "worker.ckpt", len(want_rules), len(expected.dead_letters),
                        counted=is_rule_alert)
    got_rules, got_models = split_model_kinds(alert_signature(live["alerts"]))
    assert set(got_rules) == set(want_rules), (
        f"missing {sorted(set(want_rules) - set(got_rules))[:5]} "
        f"extra {sorted(set(got_rules) - set(want_rules))[:5]}")

    jaccard: dict[str, float] = {}
    for kind in sorted(model_kinds()):
        ids_want = {s[0] for s in want_models if s[1] == kind}
        ids_got = {s[0] for s in got_models if s[1] == kind}
        jaccard[kind] = _jaccard(ids_want, ids_got)
        print(f"\n{kind}: replay {len(ids_want)} ids, live {len(ids_got)}, "
              f"Jaccard {jaccard[kind]:.3f}", end="")
    p_want = _by_alert(p_late_of(want_alerts))
    p_got = _by_alert(p_late_of(live["alerts"]))
    both = p_want.keys() & p_got.keys()
    dp = [abs(p_want[k] - p_got[k]) for k in both]
    mean_dp = sum(dp) / len(dp)
    print(f"\np_late of {len(both)} delay alerts in both: mean |dp| {mean_dp:.4f}, "
          f"max {max(dp):.4f}; {len(set(got_rules))} rule alerts == replay; "
          f"{time.monotonic() - t0:.0f} s")
    # Measured: two live runs gave delay_risk Jaccard 0.72 / 0.80 and mean |dp| 0.041 /
    # 0.030 (replay 86 alerts, live 99-107; the stock models' alerts were equal). With the
    # model before the per-value late rates (trained on 1,500 orders): live 0.905-0.909 and
    # 0.036-0.037; replays of the same records re-interleaved at random (chunks of 1-500
    # records per topic partition, harsher than a live fetch) 0.52-0.65 and 0.07-0.13; a
    # worker that ignored its checkpoint (cold model) Jaccard 0 and 0.26. The bounds admit
    # any interleaving and catch a model that is not the trained, shared one.
    assert jaccard["delay_risk"] >= 0.5
    assert mean_dp <= 0.15
    assert jaccard["stock_anomaly"] >= 0.5 and jaccard["stockout_forecast"] >= 0.5


def _tail_until_checkpoint(settings: Settings, worker: Any, timeout_s: float = 90.0
                           ) -> dict[str, Any]:
    """Follow the model topic and return the first checkpoint with learned labels as soon as
    it arrives: a kill right after lands mid-interval, not between the file's rename and its
    announcement (the only window where the file is newer than the topic)."""
    deadline = time.monotonic() + timeout_s
    stream: Iterator[Any] = consume(settings, [settings.topics.model], poll_s=0.1)
    try:
        for msg in stream:
            assert time.monotonic() < deadline, "no checkpoint with learned labels in time"
            assert worker.alive(), f"worker died:\n{worker.log_tail()}"
            if msg is None:
                continue
            ev = orjson.loads(msg.value())
            if ev["kind"] == "checkpoint" and ev["learned"].get("delay_risk", 0) > 0:
                return ev
    finally:
        stream.close()
    raise AssertionError("unreachable")


def test_kill_9_restores_last_checkpoint(kafka, small_world, make_settings, thresholds,
                                         worker_env, start_worker, tmp_path):
    """kill -9 with models on: the restarted worker restores exactly the last checkpoint it
    announced (not a cold start), and no rule alert is lost or invented (duplicates only as
    identical alert ids). Model alerts are not compared: what the dead worker learned after
    its last checkpoint is lost by design (``delaywatch.models.checkpoint``)."""
    t0 = time.monotonic()
    records = small_world[0]
    settings = _with_models(make_settings(partitions=4), None)  # a cold start, like the worker
    expected = replay(records, settings, thresholds, flush=False)
    want_rules, _ = split_model_kinds(alert_signature(
        [a.model_dump(mode="json") for a in expected.alerts]))

    env = {**worker_env(kafka, settings), **models_env(tmp_path / "worker.ckpt", 2.0)}
    create_all_topics(settings)
    half = len(records) // 2
    produce_records(settings, records[:half])  # the second half arrives after the crash
    worker = start_worker(env)
    announced = _tail_until_checkpoint(settings, worker)
    worker.kill9()
    before = _model_events(settings)
    assert before[0]["kind"] == "cold_start", before[:1]
    last = [e for e in before if e["kind"] == "checkpoint"][-1]
    assert last["at"] >= announced["at"]

    produce_records(settings, records[half:])
    restarted = start_worker(env)
    live = wait_for_outputs(settings, restarted, len(want_rules), len(expected.dead_letters),
                            counted=is_rule_alert)
    after = _model_events(settings)[len(before):]
    restored = after[0]
    assert restored["kind"] == "restored", after[:2]
    assert restored["worker_pid"] != last["worker_pid"]
    assert (restored["probe_p_late"], restored["learned"]) == (
        last["probe_p_late"], last["learned"])

    got = alert_signature(live["alerts"])
    got_rules, got_models = split_model_kinds(got)
    assert set(got_rules) == set(want_rules), (
        f"missing {sorted(set(want_rules) - set(got_rules))[:5]} "
        f"extra {sorted(set(got_rules) - set(want_rules))[:5]}")
    duplicates = sum(got.values()) - len(got)
    print(f"\nkill -9 after checkpoint probe {last['probe_p_late']} learned {last['learned']}; "
          f"restarted: restored probe {restored['probe_p_late']} learned "
          f"{restored['learned']}; {len(set(got_rules))} rule alerts == uninterrupted replay, "
          f"{len(set(got_models))} model alerts, {duplicates} re-sent duplicates (same id); "
          f"{sum(e['kind'] == 'checkpoint' for e in after)} checkpoints after the restart; "
          f"{time.monotonic() - t0:.0f} s")
