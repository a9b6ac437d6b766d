"""What the store's listing shows of an adapter, the filters, and one page of the index.

The index (index.py) keeps a row per adapter folder in `entries`: the name (primary key), the
method and source (filters), and `data`, the `Listed` entry as JSON (NULL: the manifest does not
parse, so it is not listed). A page is a range of the name's B-tree: keyset paging, so a page
after a given name stays right however the store changed since the previous one.

The page cursors the API hands out are opaque: base64url JSON `{"after": <last key of the page>,
"scope": <the filters>}`; clients pass `next_cursor` back as it came. A cursor stays valid
however the listing changes between two pages (what was added before it is not seen, nothing is
seen twice); one that was not issued here, or for other filters, is `InvalidCursor` (422).
"""

from __future__ import annotations

import base64
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from adapters_store import format as fmt
from adapters_store.errors import InvalidCursor
from adapters_store.patterns import literal_prefix, matches


class Listed(BaseModel):
    """What the listing shows of one adapter: its manifest without files and training."""

    name: str
    version: int
    base_model: fmt.BaseModelRef
    adapter_config: str
    labels: dict[int, str]
    metrics: dict[str, float] = Field(default_factory=dict)
    source: str
    hub: fmt.HubOrigin | None = None
    created_at: str
    size_bytes: int
    task: str = "single_label"
    thresholds: dict[int, float] | None = None
    text_pair: bool = False

    @classmethod
    def of(cls, manifest: fmt.Manifest) -> Listed:
        fields = manifest.model_dump(exclude={"files", "training"})
        return cls(**fields, size_bytes=manifest.size_bytes)


@dataclass(frozen=True)
class Page:
    entries: list[Listed]
    total: int  # the entries that match the filters (all pages)
    next_after: str | None  # the `after` of the next page; None on the last page


@dataclass(frozen=True)
class Filters:
    prefix: str | None = None  # of the name
    method: str | None = None  # the manifest's adapter_config: seq_bn, lora, ...
    source: str | None = None  # trained, uploaded, hub
    # Name patterns (patterns.py) of which one must match; None: any name (a key's adapters=)
    patterns: tuple[str, ...] | None = None

    def where(self) -> tuple[list[str], list[str]]:
        clauses, args = ["data IS NOT NULL"], []
        if self.prefix:  # a range on the primary key: names sort by code point
            clauses += ["name >= ?", "name < ?"]
            args += [self.prefix, self.prefix + "\U0010ffff"]
        if self.patterns is not None:  # each pattern: the range of its literal prefix, checked
            ranges = ["(name >= ? AND name < ? AND name_matches(?, name))"] * len(self.patterns)
            clauses.append(f"({' OR '.join(ranges) or '0'})")
            for pattern in self.patterns:
                start = literal_prefix(pattern)
                args += [start, start + "\U0010ffff", pattern]
        for column in ("method", "source"):
            if getattr(self, column):
                clauses.append(f"{column} = ?")
                args.append(getattr(self, column))
        return clauses, args


def _name_matches(pattern: str, name: str) -> bool:
    return matches((pattern,), name)


def query_page(conn: sqlite3.Connection, limit: int, after: str | None, filters: Filters) -> Page:
    conn.create_function("name_matches", 2, _name_matches, deterministic=True)
    clauses, args = filters.where()
    count = f"SELECT count(*) FROM entries WHERE {' AND '.join(clauses)}"
    total = conn.execute(count, args).fetchone()[0]
    if after is not None:
        clauses.append("name > ?")
        args.append(after)
    select = f"SELECT name, data FROM entries WHERE {' AND '.join(clauses)} ORDER BY name LIMIT ?"
    rows = conn.execute(select, [*args, limit + 1]).fetchall()
    entries = [Listed.model_validate_json(data) for _, data in rows[:limit]]
    return Page(entries, total, rows[limit - 1][0] if len(rows) > limit else None)


def encode_cursor(after: str, scope: dict[str, Any]) -> str:
    raw = json.dumps({"after": after, "scope": scope}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, scope: dict[str, Any]) -> str:
    """The `after` key of a cursor issued for `scope`; InvalidCursor (422) otherwise."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:  # bad base64, bad UTF-8, bad JSON
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("after"), str):
        raise InvalidCursor("cursor: not a cursor from this server (pass next_cursor as it came)")
    if data.get("scope") != scope:
        raise InvalidCursor(
            "cursor: issued for other filters (prefix, method, source): start again without it"
        )
    return data["after"]
