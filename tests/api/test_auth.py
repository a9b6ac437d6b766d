"""API keys with scopes, on the real app (in-process) and a real server process."""

from __future__ import annotations

import logging
import subprocess
import sys

import httpx
import pytest

from adapters_store import AdapterStore
from app.config import Settings
from app.main import create_app
from app.security import StartupRefused
from tests.support.adapters import AdapterFactory
from tests.support.server import REPO, process_env, running_server

ADMIN = "admin-key-0123456789abcdefghijklmn"
READER = "reader-key-0123456789abcdefghijklm"
KEYS = f"{ADMIN}:admin+classify,{READER}:classify"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(serve):
    with serve(api_keys=KEYS) as client:
        yield client


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_needs_no_key(keyed, path):
    assert keyed.get(path).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/classify", {"adapter": "alpha", "inputs": "good"}),
        ("get", "/adapters", None),
        ("get", "/adapters/alpha", None),
        ("get", "/metrics", None),
        ("get", "/train-jobs", None),
        ("delete", "/adapters/alpha", None),
    ],
)
def test_routes_need_a_key(keyed, method, path, body):
    kwargs = {"json": body} if body is not None else {}
    r = keyed.request(method, path, **kwargs)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthorized"
    wrong = keyed.request(method, path, headers=_bearer("x" * 24), **kwargs)
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/models/alpha", {"inputs": "good"}),
        ("get", "/datasets", None),
        ("get", "/datasets/file?path=x.jsonl", None),
        ("post", "/adapters/import", {"name": "x", "repo_id": "a/b"}),
        ("get", "/adapters/alpha/archive", None),
        ("get", "/v2/models/alpha", None),
        ("post", "/v2/models/alpha/infer", {"inputs": []}),
    ],
)
def test_every_other_route_needs_a_key_too(keyed, method, path, body):
    kwargs = {"json": body} if body is not None else {}
    r = keyed.request(method, path, **kwargs)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
    error = r.json()["error"]
    assert error if path.startswith("/v2") else error["code"] == "unauthorized"


def test_classify_scope_can_classify_and_read(keyed):
    r = keyed.post(
        "/classify", json={"adapter": "alpha", "inputs": "good"}, headers=_bearer(READER)
    )
    assert r.status_code == 200 and r.json()["adapter"] == "alpha"
    assert keyed.get("/adapters", headers=_bearer(READER)).status_code == 200
    assert keyed.get("/metrics", headers=_bearer(READER)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/adapters/alpha"),
        ("post", "/adapters/alpha/load"),
        ("post", "/adapters/alpha/unload"),
        ("get", "/train-jobs"),
        ("post", "/train-jobs"),
        ("post", "/adapters"),
        ("post", "/adapters/import"),
        ("get", "/datasets"),
        ("get", "/adapters/alpha/archive"),
    ],
)
def test_classify_scope_cannot_administer(keyed, method, path):
    r = keyed.request(method, path, headers=_bearer(READER))
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden"
    assert keyed.get("/adapters/alpha", headers=_bearer(READER)).status_code == 200


def test_admin_scope_administers(keyed):
    assert keyed.post("/adapters/alpha/load", headers=_bearer(ADMIN)).status_code == 200
    assert keyed.delete("/adapters/alpha", headers=_bearer(ADMIN)).status_code == 200
    r = keyed.post("/classify", json={"adapter": "alpha", "inputs": "x"}, headers=_bearer(ADMIN))
    assert r.status_code == 404


def test_no_keys_means_open(serve):
    with serve() as client:
        r = client.post("/classify", json={"adapter": "alpha", "inputs": "good"})
        assert r.status_code == 200


def test_keyless_beyond_loopback_needs_the_explicit_flag(tmp_path, caplog):
    with pytest.raises(StartupRefused, match="APP_ALLOW_ANONYMOUS"):
        create_app(Settings(host="0.0.0.0", data_dir=tmp_path))
    with caplog.at_level(logging.WARNING, logger="app.main"):
        create_app(Settings(host="0.0.0.0", data_dir=tmp_path, api_keys=KEYS))
        create_app(Settings(host="127.0.0.1", data_dir=tmp_path))
    assert not any("WITHOUT API KEYS" in rec.getMessage() for rec in caplog.records)
    with caplog.at_level(logging.WARNING, logger="app.main"):
        create_app(Settings(host="0.0.0.0", data_dir=tmp_path, allow_anonymous=True))
    assert any("WITHOUT API KEYS" in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize(
    ("key", "reason"),
    [("short-key-0123456789", "characters; use at least 32"), ("ab" * 20, "2 distinct")],
)
def test_weak_keys_are_warned_about_without_showing_them(tmp_path, caplog, key, reason):
    with caplog.at_level(logging.WARNING, logger="app.main"):
        create_app(Settings(data_dir=tmp_path, api_keys=f"{key}:classify"))
    messages = [rec.getMessage() for rec in caplog.records]
    assert any("weak" in m and reason in m for m in messages), messages
    assert not any(key in m for m in messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app.main"):
        create_app(Settings(data_dir=tmp_path, api_keys=f"{ADMIN}:classify"))
    assert not any("weak" in rec.getMessage() for rec in caplog.records)


def test_metrics_labels_have_a_fixed_set_of_values(serve):
    """Unknown methods and paths are `other`: a flood of made-up ones adds nothing."""
    with serve() as client:
        client.get("/adapters")
        before = client.get("/metrics").text
        for i in range(300):
            client.request(f"M{i:04d}X", f"/classify/{i}")
            client.get(f"/no/such/path/{i}")
            client.request(f"Z{i:04d}", "/adapters")
        after = client.get("/metrics").text
    assert "M0001X" not in after and "/no/such" not in after and "Z0001" not in after
    assert len(after) - len(before) < 20_000, len(after) - len(before)
    assert 'method="other"' in after and 'route="other"' in after


def test_settings_never_show_keys(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=KEYS)
    assert ADMIN not in repr(settings) and ADMIN not in str(settings.model_dump())


@pytest.mark.parametrize("bad", ["short:classify", f"{ADMIN}:root"])
def test_bad_key_config_stops_start_up_with_one_line(tmp_path, bad):
    env = process_env({"APP_API_KEYS": bad, "APP_DATA_DIR": str(tmp_path)})
    r = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "APP_API_KEYS" in r.stderr and "Traceback" not in r.stderr
    assert bad.split(":")[0] not in r.stderr or len(bad.split(":")[0]) < 16


def test_keys_never_reach_the_server_log(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    AdapterFactory(tiny_model_dir).add_to_store(AdapterStore(data / "adapters"), "alpha", seed=1)
    env = {
        "APP_API_KEYS": KEYS,
        "APP_ACCESS_LOG": "true",
        "APP_LOG_LEVEL": "debug",
        "APP_EMBEDDED_WORKER": "false",
    }
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as server:
        body = {"adapter": "alpha", "inputs": "good"}
        ok = httpx.post(server.url + "/classify", json=body, headers=_bearer(READER))
        assert ok.status_code == 200
        bad = httpx.post(server.url + "/classify", json=body, headers=_bearer(ADMIN + "x"))
        assert bad.status_code == 401
        logs = server.logs()
    assert "POST /classify" in logs  # the access log is on, so we did look at request lines
    assert READER not in logs and ADMIN not in logs
