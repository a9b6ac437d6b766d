"""API keys with scopes. No HTTP here: the api layer turns the errors into 401/403.

Keys come from `APP_API_KEYS` ("key1:classify+admin,key2:classify") and/or a keys file with one
`KEY SCOPE[+SCOPE]` per line (`#` comments). Only sha256 digests are kept in memory; a presented
key is compared against every digest with `hmac.compare_digest`, so timing does not reveal which
key (or how much of it) matched. Keys are never logged: a key is named by a short id (the first
8 hex digits of its digest) in logs and metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

SCOPES = frozenset({"classify", "admin"})
MIN_KEY_LENGTH = 16


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
class Principal:
    key_id: str
    scopes: frozenset[str]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _parse_entry(entry: str, sep: str) -> tuple[str, frozenset[str]]:
    key, _, scope_text = entry.strip().partition(sep)
    key = key.strip()
    scopes = frozenset(s.strip() for s in scope_text.replace(",", "+").split("+") if s.strip())
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"API keys must be at least {MIN_KEY_LENGTH} characters long")
    scopes = scopes or frozenset({"classify"})
    unknown = scopes - SCOPES
    if unknown:
        raise ValueError(f"unknown API key scope(s) {sorted(unknown)}; use {sorted(SCOPES)}")
    return key, scopes


class KeyRing:
    def __init__(self, entries: list[tuple[str, frozenset[str]]]) -> None:
        self._digests = [(_digest(key), scopes) for key, scopes in entries]

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

    def authorize(self, authorization: str | None, scope: str) -> Principal | None:
        """The principal for an `Authorization: Bearer KEY` header, or raise AuthError.

        Returns None when no keys are configured (auth disabled).
        """
        if not self.enabled:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MissingKey("missing API key: send 'Authorization: Bearer <key>'")
        presented = _digest(token.strip())
        match: tuple[bytes, frozenset[str]] | None = None
        for digest, scopes in self._digests:  # no early exit: constant work per request
            if hmac.compare_digest(digest, presented):
                match = (digest, scopes)
        if match is None:
            raise MissingKey("invalid API key")
        principal = Principal(key_id=match[0].hex()[:8], scopes=match[1])
        if scope not in principal.scopes:
            raise ForbiddenScope(f"this API key lacks the '{scope}' scope")
        return principal


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
