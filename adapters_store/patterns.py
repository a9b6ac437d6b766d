"""Adapter-name patterns (a key's `adapters=`): which names a pattern covers.

A pattern is a name in which `*` stands for any run of characters and `?` for one character,
both within one part of the name: they never match the namespace's `/`. So `team-a/*` covers
`team-a/sentiment` but not `team-a` itself (nor `team-b/x`), `*` covers every name without a
namespace and `*/*` every namespaced one. Every other character stands for itself (no
`[...]` classes). A pattern is matched against the whole name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from adapters_store.format import NAMESPACE_SEP

WILDCARDS = {"*": f"[^{NAMESPACE_SEP}]*", "?": f"[^{NAMESPACE_SEP}]"}


@lru_cache(maxsize=1024)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = ["".join(WILDCARDS.get(c) or re.escape(c) for c in p) for p in patterns]
    if not alternatives:
        return re.compile(r"(?!)")  # no pattern: nothing matches
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


def matches(patterns: Iterable[str], name: str) -> bool:
    """Whether `name` is covered by any of `patterns`."""
    return _compiled(tuple(patterns)).fullmatch(name) is not None


def literal_prefix(pattern: str) -> str:
    """What every name the pattern covers starts with (up to its first wildcard)."""
    cut = min((i for i in (pattern.find(w) for w in WILDCARDS) if i >= 0), default=len(pattern))
    return pattern[:cut]
