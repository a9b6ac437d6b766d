"""API keys with scopes. No HTTP here: the api layer turns the errors into 401/403.

Keys come from `APP_API_KEYS` ("key1:classify+admin,key2:classify") and/or a keys file with one
`KEY SCOPE[+SCOPE] [OPTION=VALUE ...]` per line (`#` comments); the options (keys file only) are
`adapters=PATTERN[,PATTERN]` (the adapters the key may use), `rps=`, `tps=` (requests and texts
per second) and `inflight=` (texts in flight). Scopes: `classify` (inference and read-only adapter
metadata), `download` (an adapter's weights), `admin` (every change, training, datasets; it may
download too). Only sha256 digests are kept in memory; a presented
key is compared against every digest with `hmac.compare_digest`, so timing does not reveal which
key (or how much of it) matched. Keys are never logged: a key is named by a short id (the first
8 hex digits of its digest) in logs and metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

SCOPES = frozenset({"classify", "download", "admin"})
MIN_KEY_LENGTH = 16  # shorter keys are refused
STRONG_KEY_LENGTH = 32  # shorter ones, or ones of few distinct characters, are warned about
MIN_DISTINCT_CHARACTERS = 10


class AuthError(Exception):
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingKey(AuthError):
    code = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class ForbiddenScope(AuthError):
    code = "forbidden"


@dataclass(frozen=True)
class KeyLimits:
    """Per-key quotas from the keys file (None: unlimited): requests/s, texts/s, texts in flight."""

    rps: float | None = None
    tps: float | None = None
    inflight: int | None = None


@dataclass(frozen=True)
class KeyEntry:
    scopes: frozenset[str]
    adapters: tuple[str, ...] | None = None  # adapter-name patterns; None: every adapter
    limits: KeyLimits = KeyLimits()


@dataclass(frozen=True)
class Principal:
    key_id: str
    scopes: frozenset[str]
    adapters: tuple[str, ...] | None = None
    limits: KeyLimits = KeyLimits()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


OPTIONS = ("adapters", "rps", "tps", "inflight")


def _parse_options(words: list[str]) -> tuple[tuple[str, ...] | None, KeyLimits]:
    """`adapters=team-a/*,shared` `rps=50` `tps=500` `inflight=256` (keys file only)."""
    values: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or name not in OPTIONS or not value:
            raise ValueError(f"unknown API key option {word!r}; use {', '.join(OPTIONS)}=VALUE")
        values[name] = value
    adapters = None
    if "adapters" in values:
        adapters = tuple(p.strip() for p in values["adapters"].split(",") if p.strip())
    try:
        limits = KeyLimits(
            rps=float(values["rps"]) if "rps" in values else None,
            tps=float(values["tps"]) if "tps" in values else None,
            inflight=int(values["inflight"]) if "inflight" in values else None,
        )
    except ValueError:
        raise ValueError("API key options rps, tps and inflight take numbers") from None
    return adapters, limits


def _parse_entry(entry: str, sep: str) -> tuple[str, KeyEntry]:
    key, _, rest = entry.strip().partition(sep)
    key = key.strip()
    words = rest.split() if sep == " " else [rest]
    scope_text = words.pop(0) if words and "=" not in words[0] else ""
    scopes = frozenset(s.strip() for s in scope_text.replace(",", "+").split("+") if s.strip())
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"API keys must be at least {MIN_KEY_LENGTH} characters long")
    scopes = scopes or frozenset({"classify"})
    unknown = scopes - SCOPES
    if unknown:
        raise ValueError(f"unknown API key scope(s) {sorted(unknown)}; use {sorted(SCOPES)}")
    adapters, limits = _parse_options(words)
    return key, KeyEntry(scopes, adapters, limits)


def weakness(key: str) -> str | None:
    """Why `key` looks guessable (too short, too repetitive), or None."""
    if len(key) < STRONG_KEY_LENGTH:
        return f"it has {len(key)} characters; use at least {STRONG_KEY_LENGTH} random ones"
    if len(set(key)) < MIN_DISTINCT_CHARACTERS:
        return f"it has only {len(set(key))} distinct characters; it does not look random"
    return None


def key_id(key: str) -> str:
    """The name of a key in logs: the first 8 hex digits of its digest."""
    return _digest(key).hex()[:8]


class KeyRing:
    def __init__(self, entries: list[tuple[str, KeyEntry]]) -> None:
        self._digests = [(_digest(key), entry) for key, entry in entries]
        self.warnings = [
            f"API key {key_id(key)} is weak: {reason}"
            for key, _ in entries
            if (reason := weakness(key)) is not None
        ]

    @classmethod
    def from_sources(cls, *, keys: str | None, keys_file: Path | None) -> KeyRing:
        entries = [_parse_entry(e, ":") for e in (keys or "").split(",") if e.strip()]
        if keys_file is not None:
            for line in Path(keys_file).read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    entries.append(_parse_entry(line, " "))
        return cls(entries)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def authorize(self, authorization: str | None, scope: str | frozenset[str]) -> Principal | None:
        """The principal for an `Authorization: Bearer KEY` header, or raise AuthError.

        `scope`: the one scope needed, or a set of which any one will do. Returns None when no
        keys are configured (auth disabled).
        """
        if not self.enabled:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MissingKey("missing API key: send 'Authorization: Bearer <key>'")
        presented = _digest(token.strip())
        match: tuple[bytes, KeyEntry] | None = None
        for digest, entry in self._digests:  # no early exit: constant work per request
            if hmac.compare_digest(digest, presented):
                match = (digest, entry)
        if match is None:
            raise MissingKey("invalid API key")
        entry = match[1]
        principal = Principal(match[0].hex()[:8], entry.scopes, entry.adapters, entry.limits)
        wanted = frozenset({scope}) if isinstance(scope, str) else scope
        if not wanted & principal.scopes:
            names = " or ".join(f"'{s}'" for s in sorted(wanted))
            raise ForbiddenScope(f"this API key lacks the {names} scope")
        return principal


def generate_key_file(path: Path) -> str:
    """A new random key with every scope, written to `path` (created, mode 0600); the key."""
    key = secrets.token_urlsafe(32)  # 43 characters, 256 random bits
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("# generated at first start; one 'KEY scope[+scope]' per line\n")
        out.write(f"{key} {'+'.join(sorted(SCOPES))}\n")
    return key


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StartupRefused(ValueError):
    """A configuration the server will not run with (it names the setting to change)."""


def check_exposure(host: str, *, keys: bool, allow_anonymous: bool) -> bool:
    """Whether the server runs open to the network (keyless on a non-loopback address).

    Raises StartupRefused for that unless `allow_anonymous` says the operator means it.
    """
    if keys or is_loopback(host):
        return False
    if not allow_anonymous:
        raise StartupRefused(
            f"refusing to listen on {host} without API keys: anyone who can reach the port "
            "could classify, download, upload, delete and train. Set APP_API_KEYS or "
            "APP_API_KEYS_FILE (APP_GENERATE_API_KEY=true writes one), or APP_HOST=127.0.0.1, "
            "or APP_ALLOW_ANONYMOUS=true to serve anyone"
        )
    return True
