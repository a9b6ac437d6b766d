"""Opaque page cursors: where a listing stopped, bound to the filters it was asked with.

A cursor is base64url JSON `{"after": <last key of the page>, "scope": <the filters>}`; clients
pass `next_cursor` back as it came. Keyset paging: a cursor stays valid however the listing
changes between two pages (what was added before it is not seen, nothing is seen twice).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from app.api.errors import InvalidRequest


def encode_cursor(after: str, scope: dict[str, Any]) -> str:
    raw = json.dumps({"after": after, "scope": scope}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, scope: dict[str, Any]) -> str:
    """The `after` key of a cursor issued for `scope`; InvalidRequest (422) otherwise."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:  # bad base64, bad UTF-8, bad JSON
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("after"), str):
        raise InvalidRequest("cursor: not a cursor from this server (pass next_cursor as it came)")
    if data.get("scope") != scope:
        raise InvalidRequest(
            "cursor: issued for other filters (prefix, method, source): start again without it"
        )
    return data["after"]
