"""Terminal output of the training CLI: aligned key/value tables and JSON lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def print_table(rows: Sequence[tuple[str, Any]], *, file: Any = None) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}", file=file or sys.stdout)


def print_json_lines(items: Sequence[Any]) -> None:
    for item in items:
        print(json.dumps(item))
