"""Baseline Faust apps for ``make bench``: what Faust itself costs on this machine.

One agent over the input topics decodes each record with orjson and counts it per key --
with ``--table`` in a Faust Table (one table assignment, hence one changelog record, per
event), without it in a dict. Same broker settings as the worker (commit interval, session
timeout, acks). It logs ``bench_first_event`` (JSON) at its first record; the bench reads the
end from the group's committed offsets, as for the worker.

    python -m delaywatch.bench_faust --bootstrap 127.0.0.1:9092 --app-id x \\
        --topics orders,inventory,carrier-scans --partitions 4 --data-dir /tmp/x [--table]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from typing import Any

import faust
import orjson
import structlog

from delaywatch.broker import free_port
from delaywatch.config.settings import Settings
from delaywatch.log import configure_logging

__all__ = ["create_app", "main"]

log = structlog.get_logger("delaywatch.bench_faust")


def create_app(bootstrap: str, app_id: str, topics: Sequence[str], partitions: int,
               data_dir: str, table: bool) -> faust.App:
    w = Settings().worker
    app = faust.App(
        app_id, broker=f"kafka://{bootstrap}", store="memory://", datadir=data_dir,
        autodiscover=False, topic_partitions=partitions, consumer_auto_offset_reset="earliest",
        producer_acks=-1, broker_commit_interval=w.commit_interval_s,
        broker_session_timeout=10, broker_heartbeat_interval=1.0,
        web_enabled=False, web_bind="127.0.0.1", web_port=free_port(), web_in_thread=False,
    )
    source = app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
    counts: Any = (app.Table("bench-counts", default=int, partitions=partitions,
                             key_type=str, value_type=int) if table else {})
    first = [True]

    async def count_events(stream: faust.StreamT) -> None:
        async for key, value in stream.items():
            if first[0]:
                first[0] = False
                log.info("bench_first_event", table=table)
            with contextlib.suppress(orjson.JSONDecodeError):  # the malformed records
                orjson.loads(value or b"null")
            k = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            counts[k] = counts[k] + 1 if table else counts.get(k, 0) + 1

    app.agent(source, name="count_events")(count_events)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated input topics")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    configure_logging("INFO", "json")
    app = create_app(args.bootstrap, args.app_id, args.topics.split(","), args.partitions,
                     args.data_dir, args.table)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
