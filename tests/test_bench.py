"""The pure parts of ``make bench``: percentiles, events/s arithmetic, the JSON key layout.
No broker and nothing timed here: the figures themselves come from ``make bench``."""

from __future__ import annotations

import orjson
import pytest

from delaywatch.bench import (
    REQUIRED_KEYS,
    add_ratios,
    commit_curve,
    committed_eps,
    empty_results,
    events_per_second,
    flatten,
    latency_summary,
    missing_keys,
    paced,
    percentile,
    ratio,
    render_table,
    size_summary,
    steady_eps,
    target_status,
    write_results,
)
from delaywatch.bench_kafka import (
    all_committed,
    backlog,
    first_logged_at,
    last_logged_at,
)


# -- percentiles -----------------------------------------------------------------------------
def test_percentile_interpolates_linearly_like_numpy():
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 50) == 25.0
    assert percentile(values, 99) == pytest.approx(39.7)


def test_percentile_ignores_input_order_and_handles_edges():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_latency_summary_counts_what_it_excludes():
    lat = [float(v) for v in range(1, 101)]
    s = latency_summary(lat, excluded=3)
    assert s["p50"] == 50.5
    assert s["p99"] == 99.0
    assert s["max"] == 100.0
    assert s["alerts"] == 100
    assert s["excluded_no_source_ts"] == 3
    empty = latency_summary([], excluded=2)
    assert empty["p50"] is None and empty["max"] is None and empty["alerts"] == 0


def test_size_summary():
    s = size_summary([100, 200, 300])
    assert s == {"mean": 200.0, "p99": 298.0, "max": 300, "orders": 3}
    assert size_summary([])["mean"] is None


# -- events/s ------------------------------------------------------------------------------
def test_events_per_second_over_the_measured_window():
    assert events_per_second(200_000, 1000.0, 1040.0) == 5000.0
    assert events_per_second(10, 0.0, 3.0) == 3.3


@pytest.mark.parametrize("first, done", [(None, 10.0), (10.0, None), (10.0, 10.0), (11.0, 10.0)])
def test_events_per_second_is_none_without_a_window(first, done):
    assert events_per_second(100, first, done) is None


def test_ratio():
    assert ratio(6000.0, 2000.0) == 3.0
    assert ratio(None, 2000.0) is None
    assert ratio(6000.0, None) is None
    assert ratio(6000.0, 0.0) is None


def test_committed_eps_runs_from_the_first_event_to_the_last_commit():
    # committed offsets move in steps (a commit every ~2 s); snapshots every second
    trace = [(100.0, 0), (101.0, 0), (102.0, 2000), (103.0, 2000), (104.0, 4000),
             (105.0, 4000)]
    # a run stopped at its budget: 4,000 committed at t=104, first event at t=100.5
    assert committed_eps(trace, first_at=100.5) == (round(4000 / 3.5, 1), 4000, 3.5)
    assert committed_eps(trace, first_at=None) == (None, 0, None)
    assert committed_eps([(100.0, 0), (101.0, 0)], first_at=99.0) == (None, 0, None)


def test_commit_curve_keeps_only_commit_moments():
    trace = [(100.0, 0), (101.0, 0), (102.0, 2000), (103.0, 2000), (104.0, 4000)]
    assert commit_curve(trace, first_at=100.5) == [(1.5, 2000), (3.5, 4000)]
    assert commit_curve(trace, first_at=None) == []


def test_committed_eps_of_a_finished_run_is_events_over_the_window():
    trace = [(10.0, 0), (12.0, 100_000), (14.0, 200_000)]
    assert committed_eps(trace, first_at=4.0)[0] == events_per_second(200_000, 4.0, 14.0)


def test_steady_eps_starts_at_the_first_commit_after_the_rebalance():
    trace = [(0.0, 0), (1.0, 0), (2.0, 1000), (3.0, 1000), (4.0, 1500), (5.0, 1500),
             (6.0, 3000), (8.0, 6000), (10.0, 9000), (11.0, 9000)]
    # a rebalance ended at t=4.5: the window runs from the commit seen at t=6 (nothing was
    # committed at t=5) to the last commit, t=10 (not the last snapshot)
    assert steady_eps(trace, after=4.5) == (9000 - 3000) / (10.0 - 6.0)
    assert steady_eps(trace, after=0.0) == (9000 - 1000) / (10.0 - 2.0)
    assert steady_eps(trace, after=9.0) is None  # one commit is no window
    assert steady_eps([(0.0, 0)], after=0.0) is None


def test_all_committed_treats_missing_or_negative_offsets_as_zero():
    ends = {("orders", 0): 10, ("orders", 1): 0}
    assert all_committed({("orders", 0): 10, ("orders", 1): -1001}, ends)
    assert all_committed({("orders", 0): 10}, ends)
    assert not all_committed({("orders", 0): 9}, ends)
    assert not all_committed({}, {("orders", 0): 1})


def test_backlog_counts_uncommitted_records_of_the_given_topics():
    ends = {("orders", 0): 10, ("orders", 1): 5, ("lines", 0): 7}
    committed = {("orders", 0): 4, ("orders", 1): -1001, ("lines", 0): 0}
    assert backlog(committed, ends, ["orders"]) == 6 + 5
    assert backlog(committed, ends, ["orders", "lines"]) == 6 + 5 + 7


# -- pacing --------------------------------------------------------------------------------
def test_paced_records_send_at_a_steady_rate_in_ticks():
    records = [{"topic": "orders", "key": str(i), "ts": 10**12 + 7 * i, "value": {"i": i}}
               for i in range(100)]
    out = paced(records, rate=2000.0, tick_s=0.01, topics={"orders": "bench.latency.orders"})
    assert [r["ts"] for r in out[:21]] == [0.0] * 20 + [10.0]
    # 2,000 per second: record 2,000 would be due after exactly one second
    assert out[-1]["ts"] == (99 // 20) * 10.0
    assert {r["topic"] for r in out} == {"bench.latency.orders"}
    assert [r["value"] for r in out] == [r["value"] for r in records]
    assert records[0]["ts"] == 10**12  # the input is left alone


def test_paced_keeps_unknown_topics():
    out = paced([{"topic": "inventory", "ts": 5}], rate=10.0, topics={"orders": "x"})
    assert out[0]["topic"] == "inventory"


# -- the JSON layout -----------------------------------------------------------------------
def test_every_required_key_is_in_the_skeleton_as_nested_objects():
    results = empty_results()
    assert missing_keys(results) == []
    assert results["baseline"]["faust_table_eps"] is None
    assert results["latency_ms"]["p99"] is None
    assert results["state_bytes_per_order"]["mean"] is None
    for key in ("worker_eps", "worker_eps_models_off", "baseline.faust_table_eps",
                "baseline.faust_no_table_eps", "baseline.bare_consumer_eps", "replay_eps",
                "latency_ms.p50", "latency_ms.p99", "scaleout_ratio_2_workers",
                "worker_rss_mb", "state_bytes_per_order.mean", "state_bytes_per_order.p99"):
        assert key in REQUIRED_KEYS  # the keys issue #7 names


def test_missing_keys_reports_absent_ones():
    results = empty_results()
    del results["baseline"]["bare_consumer_eps"]
    del results["worker_eps"]
    assert missing_keys(results) == ["worker_eps", "baseline.bare_consumer_eps"]


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": 2, "f": {}}) == {
        "a.b": 1, "a.c.d": None, "e": 2, "f": {}}


def test_ratios_to_each_baseline():
    results = empty_results()
    results.update(worker_eps=6000.0, worker_eps_models_off=9000.0)
    results["baseline"].update(faust_table_eps=3000.0, faust_no_table_eps=10000.0,
                               bare_consumer_eps=None)
    add_ratios(results)
    r = results["ratios"]
    assert r["worker_vs_faust_table"] == 2.0
    assert r["worker_vs_faust_no_table"] == 0.6
    assert r["worker_vs_bare_consumer"] is None
    assert r["worker_models_off_vs_faust_table"] == 3.0


def test_target_status():
    results = empty_results()
    assert target_status(results, "worker_eps") == ">=10,000 (unmeasured)"
    results["worker_eps"] = 12_000.0
    assert target_status(results, "worker_eps").endswith("met")
    results["latency_ms"]["p99"] = 300.0
    assert target_status(results, "latency_ms.p99").endswith("SHORT")
    assert target_status(results, "worker_rss_mb") == ""


def test_results_round_trip_and_render(tmp_path):
    results = empty_results()
    results.update(events=1000, partitions=4, worker_eps=1234.5)
    add_ratios(results)
    out = tmp_path / "nested" / "results.json"
    write_results(results, out)
    assert missing_keys(orjson.loads(out.read_bytes())) == []
    assert render_table(results).row_count > 10


# -- log parsing ---------------------------------------------------------------------------
def test_first_and_last_logged_at_read_json_log_lines():
    lines = [
        "\x1b[?25h" + '{"event": "engine_restored", "timestamp": "2026-01-01T00:00:02.500000Z"}',
        '{"event": "models_ready", "timestamp": "2026-01-01T00:00:00Z"}',
        '{"event": "engine_restored", "timestamp": "2026-01-01T00:00:01Z"}',
        "not json engine_restored",
        '{"event": "engine_restored"}',
    ]
    assert first_logged_at(lines, "engine_restored") == 1767225601.0
    assert last_logged_at(lines, "engine_restored") == 1767225602.5
    assert first_logged_at(lines, "bench_first_event") is None
