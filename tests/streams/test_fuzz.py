"""Fault test 4 of #5 on Apache Kafka started by the test: bad input fuzz.

>= 10,000 hostile records drawn by hypothesis (``tests/strategies.py``: bad UTF-8, not JSON,
deep JSON, wrong types, 100 KB+ strings and keys, unknown enums, absurd timestamps, missing
fields, wrong keys, duplicate event ids, on all three input topics) go to a live worker among
a valid simulated world. Every hostile record is found in the DLQ by its source
topic/partition/offset, with a reason it may get (an exact re-send is absorbed instead); the
worker never dies nor logs a crash; the alerts are those of the valid world alone. Run by
``make test-faults``; ``tests/core/test_fuzz_core.py`` checks the same contract on the core
without a broker, batch by batch.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from delaywatch.core.pipeline import partition_for
from delaywatch.kafka_io import create_all_topics, produce_records, read_all
from delaywatch.replay import record_bytes, replay
from tests.strategies import Rec, World, hostile_batches, interleave, verdicts
from tests.streams.helpers import alert_signature, wait_for_outputs

pytestmark = [pytest.mark.broker, pytest.mark.faults]

AT_LEAST = 10_000
BATCH = 100
# in the worker's log, what would mean a crash of an agent (the process is watched apart)
CRASH_MARKS = ("Traceback", "crashed", '"processing_failed"', "Agent error", "MessageSizeTooLarge")


def draw_hostile(world: World, at_least: int) -> list[tuple[int, Rec]]:
    """``at_least`` hostile records and where they go, drawn by hypothesis: derandomized (the
    same records in every run) and without shrinking (nothing fails while drawing)."""
    drawn: list[tuple[int, Rec]] = []

    @settings(max_examples=-(-at_least // BATCH), derandomize=True, database=None,
              deadline=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(batch=st.data())
    def collect(batch: st.DataObject) -> None:
        drawn.extend(batch.draw(hostile_batches(world, BATCH)))

    collect()
    return drawn


def kafka_refs(settings: Any, records: list[Rec]) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of each record as the broker stored it: read back, and
    matched in send order per partition (a record without a key went to a partition of the
    producer's choosing: the one whose next record is it). ``read_all`` gives no key and no
    value for empty ones."""
    n = settings.topics.partitions
    stored: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for topic in sorted({r["topic"] for r in records}):
        for row in read_all(settings, topic, timeout_s=180, idle_s=5, parse=False):
            stored.setdefault((topic, row["partition"]), []).append(row)
    for rows in stored.values():
        rows.sort(key=lambda row: row["offset"])
    nxt: Counter[tuple[str, int]] = Counter()
    refs = []
    for rec in records:
        raw, key = record_bytes(rec), rec.get("key") or None  # b"" reads back as no key
        parts = [partition_for(key, n)] if key is not None else range(n)
        for p in parts:
            rows = stored.get((rec["topic"], p), [])
            i = nxt[(rec["topic"], p)]
            if i < len(rows) and rows[i]["key"] == key and (rows[i]["value"] or b"") == raw:
                nxt[(rec["topic"], p)] += 1
                refs.append((rec["topic"], p, rows[i]["offset"]))
                break
        else:
            raise AssertionError(f"not found on the broker in send order: {rec}"[:300])
    return refs


@pytest.mark.timeout(1200)
def test_ten_thousand_hostile_records_go_to_the_dlq_and_the_worker_lives_on(
        kafka, make_settings, thresholds, worker_env, start_worker):
    from delaywatch.simulate import simulate

    good, _ = simulate(orders=300, seed=21, profile="stress")
    settings = make_settings(partitions=2)
    world = World.of(good, settings)
    drawn = draw_hostile(world, AT_LEAST)
    records = interleave(world, drawn)
    hostile = [r for r in records if "fuzz" in r]
    assert len(hostile) >= AT_LEAST
    baseline = replay(good, settings, thresholds, flush=False)
    expected = replay(records, settings, thresholds, flush=False)  # the core, no broker
    assert set(alert_signature([a.model_dump(mode="json") for a in expected.alerts])) == set(
        alert_signature([a.model_dump(mode="json") for a in baseline.alerts]))

    env = worker_env(kafka, settings)
    create_all_topics(settings)
    start = time.monotonic()
    produce_records(settings, records)
    produced_s = time.monotonic() - start
    worker = start_worker(env)
    live = wait_for_outputs(settings, worker, len(baseline.alerts),
                            len(expected.dead_letters), timeout_s=600, settle_s=10)
    wall_s = time.monotonic() - start
    assert worker.alive(), worker.log_tail()
    log_lines = worker.log_path.read_text(errors="replace").splitlines()
    crashes = [line for line in log_lines if any(m in line for m in CRASH_MARKS)]
    assert not crashes, "\n".join(crashes[:5])

    refs = kafka_refs(settings, records)
    letters: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for d in live["dlq"]:
        src = d["source"]
        letters[(src["topic"], src["partition"], src["offset"])].append(d)
    problems, reasons, exact = verdicts(records, letters, lambda k: refs[k])
    assert not problems, f"{len(problems)} hostile records:\n" + "\n".join(problems[:12])
    # the rest are the world's own malformed records, as in a replay of it
    rest = Counter(d["reason"] for ds in letters.values() for d in ds)
    assert rest == Counter(d.reason for d in baseline.dead_letters)
    assert len(live["dlq"]) == len(expected.dead_letters)
    assert Counter(d["reason"] for d in live["dlq"]) == Counter(
        d.reason for d in expected.dead_letters)
    assert set(alert_signature(live["alerts"])) == set(alert_signature(
        [a.model_dump(mode="json") for a in baseline.alerts]))

    fuzzed = Counter(r["fuzz"].split(":")[0] for r in hostile)
    print(f"\nbad input fuzz (live, Apache Kafka, 2 partitions): {len(hostile)} hostile "
          f"records among {len(good)} valid ones, by kind {dict(fuzzed.most_common())}; "
          f"{sum(reasons.values())} dead-lettered with a reason, by reason "
          f"{dict(reasons.most_common())}; {exact} exact re-sends absorbed; "
          f"{len(problems)} missed; worker crashes 0 (alive, no crash in its log); "
          f"{len(set(alert_signature(live['alerts'])))} alerts = the valid world's; "
          f"produced in {produced_s:.1f} s, all outputs in {wall_s:.1f} s")
