"""The ``delaywatch`` command: simulate -> replay -> schemas, as an analyst runs them."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from delaywatch.cli import app

runner = CliRunner()


def test_simulate_then_replay_writes_outputs(tmp_path):
    events, truth, out = tmp_path / "e.jsonl", tmp_path / "t.jsonl", tmp_path / "out"
    r = runner.invoke(app, ["simulate", "--orders", "200", "--seed", "3", "--out", str(events),
                            "--truth", str(truth), "--profile", "stress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["replay", "--input", str(events), "--truth", str(truth),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["events"] == sum(1 for _ in events.open())
    assert (out / "alerts.jsonl").stat().st_size > 0
    assert summary["quality"]["orders"] == 200


def test_schemas_on_disk_are_current():
    folder = Path(__file__).resolve().parents[1] / "schemas" / "json"
    r = runner.invoke(app, ["schemas", "--out", str(folder), "--check"])
    assert r.exit_code == 0, r.output


def test_help_lists_every_command():
    r = runner.invoke(app, ["--help"])
    for cmd in ("simulate", "replay", "worker", "demo", "broker", "topics", "schemas", "tail",
                "notify", "escalate"):
        assert cmd in r.output
