"""Selectors (`name`, `name@3`, `name@prod`), an adapter's routes (aliases and a traffic split),
and the choice of a version by weight: pure functions, no files (versions.py keeps them).

A split is an ordered list of (target, weight): a target is a version number ("3") or an alias
("canary"), a weight a non-negative integer (shares are weight / total). With a routing key the
choice is a hash of (name, key) placed on the cumulative weights: the same key gets the same
target while the split is unchanged, and changing one weight moves only the keys in between.
Without a key the choice is weighted random.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters_store import format as fmt
from adapters_store.errors import AdapterNotFound, InvalidName, InvalidRoute

ALIAS_PATTERN = r"\A[a-z][a-z0-9_-]{0,31}\Z"  # whole strings only (fullmatch; `$` allows a "\n")
_ALIAS_RE = re.compile(ALIAS_PATTERN)
LATEST = "latest"  # built in: `name@latest` is the newest version whatever the split says
MAX_TARGETS = 8
MAX_WEIGHT = 1_000_000
Split = tuple[tuple[str, int], ...]


def parse(selector: str) -> tuple[str, str | None]:
    """(name, selector part or None): `name@3` -> ("name", "3"); InvalidName when malformed."""
    if not isinstance(selector, str):
        raise InvalidName(f"invalid adapter name {selector!r}")
    name, at, part = selector.partition("@")
    fmt.validate_name(name)
    if not at:
        return name, None
    if not is_version(part) and not is_alias(part):
        raise InvalidName(
            f"invalid selector {selector!r}: use name@<version number> or name@<alias>"
        )
    return name, part


def is_alias(text: str) -> bool:
    return _ALIAS_RE.fullmatch(text) is not None


def is_version(text: str) -> bool:
    """A version number as a selector or split target writes it: ASCII digits, no leading 0."""
    return text.isascii() and text.isdecimal() and text[0] != "0" and len(text) < 10


def check_alias(alias: str) -> str:
    if not is_alias(alias) or alias == LATEST:
        raise InvalidRoute(
            f"invalid alias {alias!r}: 1-32 characters of a-z, 0-9, '_', '-', starting with a "
            f"letter ({LATEST!r} is built in)"
        )
    return alias


@dataclass(frozen=True)
class Routes:
    """What one adapter's routes file holds."""

    aliases: dict[str, int] = field(default_factory=dict)
    split: Split = ()

    def to_json(self) -> str:
        data = {"aliases": self.aliases, "split": [list(pair) for pair in self.split]}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Routes:
        data = json.loads(text)
        aliases = {str(a): int(v) for a, v in (data.get("aliases") or {}).items()}
        split = tuple((str(t), int(w)) for t, w in data.get("split") or ())
        return cls(aliases, split)

    def version_of(self, name: str, target: str) -> int:
        """The version a target (number or alias) names; AdapterNotFound for an unknown alias."""
        if target.isdecimal():
            return int(target)
        if target not in self.aliases:
            raise AdapterNotFound(f"adapter {name!r} has no alias {target!r}")
        return self.aliases[target]

    def pinned(self, name: str) -> set[int]:
        """Versions that aliases or the split point at (never pruned)."""
        pins = set(self.aliases.values())
        for target, _ in self.split:
            try:
                pins.add(self.version_of(name, target))
            except AdapterNotFound:
                continue
        return pins


def check_split(weights: Sequence[tuple[str, int]]) -> Split:
    """A valid split: 1-8 distinct targets (numbers or aliases), integer weights, total > 0."""
    split = tuple((str(t), w) for t, w in weights)
    if not 0 < len(split) <= MAX_TARGETS:
        raise InvalidRoute(f"a split has 1 to {MAX_TARGETS} targets")
    if len({t for t, _ in split}) != len(split):
        raise InvalidRoute("a split names each target once")
    for target, weight in split:
        if not (is_version(target) or is_alias(target)):
            raise InvalidRoute(f"split target {target!r} is neither a version nor an alias")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
            raise InvalidRoute(f"the weight of {target!r} must be an integer 0-{MAX_WEIGHT}")
    if sum(w for _, w in split) <= 0:
        raise InvalidRoute("a split needs a positive total weight")
    return split


def pick(split: Split, name: str, key: str | None, rng: random.Random | None = None) -> str:
    """The target of one request: by the hash of (name, key), or weighted random without key."""
    total = sum(w for _, w in split)
    if key is None:
        point = (rng or random).random() * total
    else:
        digest = hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2**64 * total
    for target, weight in split:
        if point < weight:
            return target
        point -= weight
    return next(t for t, w in reversed(split) if w > 0)  # float rounding at the very top
