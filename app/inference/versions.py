"""The resolution of a request's selectors (`name`, `name@3`, `name@prod`) to the version that
serves it, and the naming of the answers as the client asked.

Every classification resolves its adapters here before the classifier: it sees a bare name (the
latest, when no split is set) or an immutable `name@N`, so an entry in the serving cache never
changes meaning. A move of an alias or a change of the split is a rewrite of a small file in the
store (adapters_store.versions), read (one stat) by the next request of any process. A routing
key makes the split sticky: requests with the same key get the same version while the split is
unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from adapters_store import AdapterStore
from app.serving.passes import Classified

MAX_KEY_CHARS = 256  # longer keys are cut: the hash of the first 256 characters decides


def resolve_selectors(
    store: AdapterStore, adapters: Sequence[str], routing_key: str | None
) -> list[str]:
    """What the classifier should serve for each requested selector (StoreError when unknown)."""
    key = routing_key[:MAX_KEY_CHARS] if routing_key else None
    return [store.versions.resolve(selector, key) for selector in adapters]


def as_requested(result: Classified, adapters: Sequence[str]) -> Classified:
    """The results named as the client asked (`version` says which version answered)."""
    results = [
        dataclasses.replace(r, adapter=a) for r, a in zip(result.results, adapters, strict=True)
    ]
    return dataclasses.replace(result, results=results)
