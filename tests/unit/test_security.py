from __future__ import annotations

import pytest

from app.security import (
    ForbiddenScope,
    KeyRing,
    MissingKey,
    StartupRefused,
    check_exposure,
    generate_key_file,
    is_loopback,
    weakness,
)

ADMIN = "admin-key-0123456789"
READER = "reader-key-0123456789"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.from_sources(keys=f"{ADMIN}:classify+admin, {READER}:classify", keys_file=None)


def test_disabled_when_no_keys():
    ring = KeyRing.from_sources(keys=None, keys_file=None)
    assert not ring.enabled
    assert ring.authorize(None, "admin") is None


def test_scopes(ring):
    assert ring.authorize(f"Bearer {ADMIN}", "admin").scopes == {"classify", "admin"}
    assert ring.authorize(f"bearer {READER}", "classify").scopes == {"classify"}
    with pytest.raises(ForbiddenScope, match="admin"):
        ring.authorize(f"Bearer {READER}", "admin")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", f"Basic {ADMIN}", ADMIN])
def test_missing_or_malformed(ring, header):
    with pytest.raises(MissingKey):
        ring.authorize(header, "classify")


def test_wrong_key_message_does_not_echo_key(ring):
    with pytest.raises(MissingKey) as info:
        ring.authorize("Bearer not-a-real-key-123456", "classify")
    assert "not-a-real-key" not in info.value.message


def test_principal_id_is_not_the_key(ring):
    principal = ring.authorize(f"Bearer {ADMIN}", "admin")
    assert principal.key_id not in ADMIN and len(principal.key_id) == 8


def test_keys_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# comment\n{ADMIN} admin+classify\n\n{READER} classify\n")
    ring = KeyRing.from_sources(keys=None, keys_file=path)
    assert ring.authorize(f"Bearer {ADMIN}", "admin") is not None
    with pytest.raises(ForbiddenScope):
        ring.authorize(f"Bearer {READER}", "admin")


@pytest.mark.parametrize("bad", ["short:classify", f"{ADMIN}:root"])
def test_bad_key_config_rejected(bad):
    with pytest.raises(ValueError):
        KeyRing.from_sources(keys=bad, keys_file=None)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_download_scope_and_any_of_several():
    fetcher = "fetcher-key-0123456789abcdefghijk"
    ring = KeyRing.from_sources(keys=f"{fetcher}:download,{READER}:classify", keys_file=None)
    wanted = frozenset({"download", "admin"})
    assert ring.authorize(f"Bearer {fetcher}", wanted).scopes == {"download"}
    with pytest.raises(ForbiddenScope, match="'admin' or 'download'"):
        ring.authorize(f"Bearer {READER}", wanted)
    with pytest.raises(ForbiddenScope):
        ring.authorize(f"Bearer {fetcher}", "classify")


@pytest.mark.parametrize(
    ("key", "weak"),
    [("a" * 16, True), ("0123456789abcdefghij", True), ("ab" * 20, True), (ADMIN * 2, False)],
)
def test_weakness(key, weak):
    assert (weakness(key) is not None) is weak
    ring = KeyRing.from_sources(keys=f"{key}:classify", keys_file=None)
    assert bool(ring.warnings) is weak and not any(key in w for w in ring.warnings)


def test_generated_key_file(tmp_path):
    path = tmp_path / "keys" / "api-keys"
    key = generate_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600 and weakness(key) is None
    ring = KeyRing.from_sources(keys=None, keys_file=path)
    assert ring.authorize(f"Bearer {key}", "admin").scopes == {"admin", "classify", "download"}
    with pytest.raises(FileExistsError):  # never overwrites a keys file
        generate_key_file(path)


@pytest.mark.parametrize(
    ("host", "keys", "anonymous", "outcome"),
    [
        ("127.0.0.1", False, False, False),
        ("0.0.0.0", True, False, False),
        ("0.0.0.0", False, True, True),
        ("0.0.0.0", False, False, StartupRefused),
        ("10.1.2.3", False, False, StartupRefused),
    ],
)
def test_check_exposure(host, keys, anonymous, outcome):
    if outcome is StartupRefused:
        with pytest.raises(StartupRefused, match="APP_ALLOW_ANONYMOUS"):
            check_exposure(host, keys=keys, allow_anonymous=anonymous)
    else:
        assert check_exposure(host, keys=keys, allow_anonymous=anonymous) is outcome
