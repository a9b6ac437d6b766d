from __future__ import annotations

import pytest

from app.security import ForbiddenScope, KeyRing, MissingKey, is_loopback

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
