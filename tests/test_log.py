"""Logging: library noise is rate-limited, our own decisions never are."""

from __future__ import annotations

import io
import logging

import orjson
import structlog

from delaywatch.log import configure_logging


def test_every_dead_letter_is_logged_while_library_noise_is_capped(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", "json")
    try:
        log = structlog.get_logger("delaywatch.agents")
        for offset in range(50):  # same reason and topic: one decision each
            log.warning("dead_letter", reason="invalid_json", topic="carrier-scans",
                        partition=0, offset=offset)
        for _ in range(50):
            logging.getLogger("aiokafka").error("Unable connect to node with id 1")
    finally:
        root.handlers[:], root.level = handlers, level
        structlog.reset_defaults()
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    dead = [r["offset"] for r in lines if r.get("event") == "dead_letter"]
    assert dead == list(range(50))
    noise = [r for r in lines if "Unable connect" in r.get("event", "")]
    assert 1 <= len(noise) <= 5
