"""structlog, configured once: JSON lines in workers, a console renderer on a TTY.

Faust's and aiokafka's stdlib logging is routed through the same processors so a worker
emits one format. Keys bound per message (topic, partition, offset) via contextvars.
No PII is ever logged: events are logged by ids, never by payload.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]


class _RateLimit(logging.Filter):
    """aiokafka logs one 'Unable connect to node' per retry while a broker restarts (~900 in
    30 s); keep the first few of each such message per minute."""

    def __init__(self, per_minute: int = 5) -> None:
        super().__init__()
        self.per_minute = per_minute
        self._seen: dict[tuple[str, int], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # our own structlog events (an event dict, not a string) are decisions -- every
        # retry and dead letter is logged -- and are never dropped here
        if record.levelno >= logging.CRITICAL or isinstance(record.msg, dict):
            return True
        bucket = (str(record.msg)[:60], int(record.created // 60))
        n = self._seen.get(bucket, 0) + 1
        self._seen[bucket] = n
        if len(self._seen) > 1000:
            self._seen.clear()
        return n <= self.per_minute


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (structlog.processors.JSONRenderer() if json_output
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    handler.addFilter(_RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
