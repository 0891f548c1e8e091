"""``delaywatch worker`` with processing failures injected (tests only).

``python -m tests.streams.fault_worker worker``; the event ids to fail come from the
environment: ``DW_FAIL_ONCE`` (a transient error the first time only), ``DW_FAIL_ALWAYS``
(a transient error every time), ``DW_FAIL_PERMANENT`` (a permanent error), comma-separated.
"""

from __future__ import annotations

import os
from typing import Any

from delaywatch.core import pipeline
from delaywatch.core.retry import TransientError


def _ids(name: str) -> set[str]:
    return {x for x in os.environ.get(name, "").split(",") if x}


def install() -> None:
    once, always, permanent = _ids("DW_FAIL_ONCE"), _ids("DW_FAIL_ALWAYS"), _ids(
        "DW_FAIL_PERMANENT")
    original = pipeline.ShipmentPartition.on_event

    def on_event(self: Any, role: str, event: Any, source: Any) -> list[Any]:
        eid = getattr(event, "event_id", None)
        if eid in once:
            once.discard(eid)
            raise TransientError(f"injected: lookup timed out for {eid}")
        if eid in always:
            raise TimeoutError(f"injected: dependency down for {eid}")
        if eid in permanent:
            raise ValueError(f"injected: bug on {eid}")
        return original(self, role, event, source)

    pipeline.ShipmentPartition.on_event = on_event  # type: ignore[method-assign]


if __name__ == "__main__":
    install()
    from delaywatch.cli import app

    app()
