"""Bad input fuzz without a broker (issue #5, fault test 4).

Hypothesis draws >= 10,000 hostile records (``tests/strategies.py``: bad UTF-8, not JSON,
deep JSON, wrong types, huge strings, unknown enums, absurd timestamps, missing fields, wrong
keys, duplicate event ids), in batches spliced into a valid simulated world, and each batch
is replayed through the core the Faust worker runs. For every batch: each hostile record gets
exactly one dead letter with a reason it may get and a message (an exact re-send is absorbed
instead, and counted), no exception escapes, and the alerts are exactly those of the valid
world alone. The live counterpart is ``tests/streams/test_fuzz.py``.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from delaywatch.config import Settings, load_thresholds
from delaywatch.replay import ReplayResult, replay
from delaywatch.schemas.dlq import DLQ_REASONS
from delaywatch.simulate import simulate
from tests.strategies import World, hostile_batches, interleave, preview, verdicts

BATCH = 100
EXAMPLES = 104  # x BATCH hostile records: >= 10,000


def thin_world(orders: int, seed: int) -> list[dict[str, Any]]:
    """A simulated world with the inventory of the SKUs its orders use only: ~6x fewer
    records (a replay per batch stays fast) and still every kind of stock alert."""
    records, _ = simulate(orders=orders, seed=seed, profile="stress")
    used = {f"{r['value'].get('warehouse_id')}:{line['sku']}" for r in records
            if r["topic"] == "orders" and isinstance(r.get("value"), dict)
            for line in r["value"].get("lines") or [] if isinstance(line, dict)}
    return [r for r in records if r["topic"] != "inventory" or r["key"] in used]


@pytest.fixture(scope="module")
def fuzz_world() -> tuple[World, ReplayResult]:
    s = Settings()
    s.topics.partitions = 2
    world = World.of(thin_world(40, 21), s)
    return world, replay(world.records, s, load_thresholds(), flush=True)


def dump(alerts: list[Any]) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in alerts]


def problems_of(world: World, baseline: ReplayResult, drawn: list[Any]
                ) -> tuple[list[str], Counter[str]]:
    """Replay one batch in its world: what breaks the contract, and the reasons it got."""
    records = interleave(world, drawn)
    try:
        result = replay(records, world.settings, load_thresholds(), flush=True)
    except Exception as exc:  # which record: each one alone in the world
        found = []
        for pos, rec in drawn:
            try:
                replay(interleave(world, [(pos, rec)]), world.settings, load_thresholds(),
                       flush=True)
            except Exception as alone:
                found.append(f"{type(alone).__name__}: {alone}: {preview(rec)}")
        return [f"{type(exc).__name__} escaped the core: {exc}", *found], Counter()
    letters: dict[Any, list[Any]] = defaultdict(list)
    for d in result.dead_letters:
        letters[d.source.offset].append(d)  # replay numbers the records from 0
    problems, reasons, exact = verdicts(records, letters, lambda k: k)
    # what is left are the world's own malformed records, as without the fuzz
    rest = Counter(d.reason for ds in letters.values() for d in ds)
    if rest != Counter(d.reason for d in baseline.dead_letters):
        problems.append(f"the world's dead letters changed: {rest}")
    if result.duplicates != baseline.duplicates + exact:
        problems.append(f"{result.duplicates - baseline.duplicates} re-sends absorbed, "
                        f"{exact} sent")
    if dump(result.alerts) != dump(baseline.alerts):
        problems.append(f"alerts changed: {len(baseline.alerts)} -> {len(result.alerts)}")
    return problems, reasons


@pytest.mark.timeout(600)
def test_ten_thousand_hostile_records_all_go_to_the_dlq_and_change_no_alert(fuzz_world):
    world, baseline = fuzz_world
    assert len(baseline.alerts) >= 15 and len({a.kind for a in baseline.alerts}) >= 6
    fuzzed: Counter[str] = Counter()
    dlq: Counter[str] = Counter()
    start = time.perf_counter()

    # no shrinking: a failure names its records, and shrinking batches of 100 takes minutes
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate],
              # batches of 100 records, some of them megabytes: slow and big by design
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(batch=st.data())
    def check(batch: st.DataObject) -> None:
        drawn = batch.draw(hostile_batches(world, BATCH), label="hostile")
        problems, reasons = problems_of(world, baseline, drawn)
        assert not problems, f"{len(problems)} problems in a batch of {len(drawn)}:\n" + (
            "\n".join(problems[:12]))
        fuzzed.update(rec["fuzz"].split(":")[0] for _, rec in drawn)
        dlq.update(reasons)

    check()
    total = sum(fuzzed.values())
    assert total >= 10_000, f"only {total} hostile records were checked"
    assert set(dlq) <= set(DLQ_REASONS)
    print(f"\nbad input fuzz (replay): {total} hostile records in {EXAMPLES} batches of "
          f"{BATCH}, {sum(dlq.values())} dead-lettered by reason {dict(dlq.most_common())}, "
          f"{total - sum(dlq.values())} exact re-sends absorbed; by kind "
          f"{dict(fuzzed.most_common())}; alerts unchanged ({len(baseline.alerts)}); "
          f"{time.perf_counter() - start:.1f} s")
