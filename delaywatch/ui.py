"""Rich rendering of topic records for humans (``tail`` and the demo)."""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console

__all__ = ["console", "render_record"]

import sys

# a pipe or CI log gets 110 columns instead of 80, so alert lines do not wrap
console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)

_SEV = {"low": "dim", "medium": "yellow", "high": "bold red", "critical": "bold white on red"}
_STATUS = {"open": "●", "updated": "▲", "resolved": "✓"}


def render_record(topic: str, raw: bytes | None) -> None:
    try:
        value: Any = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        console.print(f"[dim]{topic}[/] {raw!r:.200}")
        return
    if isinstance(value, dict) and "alert_id" in value:
        sev = str(value.get("severity", ""))
        console.print(
            f"[{_SEV.get(sev, '')}]{_STATUS.get(str(value.get('status')), '?')} "
            f"{value.get('status'):<8} {sev:<8}[/] {value.get('kind'):<18} "
            f"{value.get('key')}  [dim]{value.get('detected_at', '')[:16]}  "
            f"{', '.join(value.get('reason_codes', []))}[/]")
    elif isinstance(value, dict) and "reason" in value and "source" in value:
        src = value["source"]
        where = f"{src.get('topic')}[{src.get('partition')}]@{src.get('offset')}"
        console.print(f"[magenta]DLQ {value['reason']:<20}[/] {where}  "
                      f"[dim]{value['error'][:90]}[/]")
    else:
        console.print(f"[dim]{topic}[/] {orjson.dumps(value).decode()[:200]}")
