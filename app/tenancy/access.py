"""Adapter access per key: a key with `adapters=` patterns sees only the adapters they cover.

The one rule, for every route and protocol: an adapter name the key's patterns do not cover does
not exist for that key. Reading it answers exactly what a missing adapter answers (404,
`adapter_not_found`, the same body), writing it (upload, hub import, a training job) answers the
same 404, listings leave it out, and a training job of it is a missing job. The decision depends
on the name and the key only, never on the store: a name the key may not see answers the same
whether it is stored or not, so nothing tells a key which adapters exist beyond its patterns. A
key without patterns, and a server without keys, see every adapter. No HTTP: app.api.deps
reads the key off the request and asks here.
"""

from __future__ import annotations

from collections.abc import Iterable

from adapters_store import format as fmt
from adapters_store.patterns import matches
from adapters_store.routing import parse
from app.security import Principal

Patterns = tuple[str, ...] | None  # None: every adapter


def patterns_of(principal: Principal | None) -> Patterns:
    """The key's adapter patterns; None when it may use every adapter."""
    return None if principal is None else principal.adapters


def may_use(allowed: Patterns, name: str) -> bool:
    return allowed is None or matches(allowed, name)


def check_adapter(allowed: Patterns, name: str) -> str:
    """`name` when the key may use it. For a key with patterns: InvalidName (422) for a
    malformed name, as the store answers it, and the store's own not-found error (404) for a
    name outside them. Without patterns nothing is checked here (the routes behave as before)."""
    if allowed is not None:
        bare, _ = parse(name)  # a version selector (name@3, name@prod) is the name's
        if not matches(allowed, bare):
            raise fmt.not_found(name)
    return name


def check_adapters(allowed: Patterns, names: Iterable[str]) -> None:
    """Each name in order (a multi-adapter request: the first one the key may not use)."""
    for name in names:
        check_adapter(allowed, name)
