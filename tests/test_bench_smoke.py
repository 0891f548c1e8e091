"""A tiny bench on its own Apache Kafka, so ``make bench`` never rots (issue #7). Speed is
not asserted here -- the targets are read from ``make bench`` -- only that every figure is
measured and reported."""

from __future__ import annotations

import shutil

import pytest

from delaywatch.bench import BenchOptions, missing_keys, run_bench

pytestmark = pytest.mark.broker


@pytest.mark.skipif(shutil.which("java") is None or shutil.which("mvn") is None,
                    reason="the bench runs on Apache Kafka (needs java and mvn)")
def test_tiny_bench_reports_every_figure(tmp_path):
    out = tmp_path / "results.json"
    results = run_bench(BenchOptions(events=3000, out=out, latency_rate=200.0,
                                     latency_seconds=6.0, run_budget_s=40.0,
                                     drain_budget_s=20.0, peak_rate=40.0, peak_before_s=2.0,
                                     peak_burst_s=5.0, peak_after_s=20.0))
    assert out.exists()
    assert results["errors"] == []
    assert missing_keys(results) == []
    # latency and scale-out need more than a few seconds of stream to say anything: at
    # this size they may be None (reported as such); the rest is always measured
    measured = [results["worker_eps"], results["worker_eps_models_off"],
                results["baseline"]["faust_table_eps"], results["baseline"]["bare_consumer_eps"],
                results["replay_eps"], results["worker_rss_mb"],
                results["state_bytes_per_order"]["p99"]]
    assert all(v is not None and v > 0 for v in measured), measured
    peak = results["peak"]
    assert peak["complete"] and peak["max_lag"] is not None and peak["worker_peak_rss_mb"], peak
    print(f"\ntiny bench: {results['events']} events in {results['wall_seconds']:.0f} s, "
          f"worker {results['worker_eps']:.0f} ev/s, "
          f"latency p99 {results['latency_ms']['p99']} ms, "
          f"scale-out {results['scaleout_ratio_2_workers']}")
