"""The request guard on real servers: keys and body caps before the body is read, Host and
Origin checks on a keyless server, deep JSON, the download scope, the start-up refusal."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from adapters_store import AdapterStore
from tests.support.adapters import AdapterFactory
from tests.support.server import REPO, free_port, process_env, running_server

ADMIN = "admin-Qm7xK2pL9vR4tY8wZ3nB6cD1fG5hJ0sA"
READER = "reader-Tk4Lp8Qz2Xw7Rv1Ny5Mb9Hc3Jd6Gf0S"
FETCHER = "fetcher-Vb5Nm1Qa8Zs3Xd7Cf2Vg6Bh9Nj4Mk0L"
KEYS = f"{ADMIN}:admin+classify,{READER}:classify,{FETCHER}:download"
ENV = {"APP_EMBEDDED_WORKER": "false", "APP_ACCESS_LOG": "false", "APP_LOG_LEVEL": "warning"}
HUGE = 300_000_000


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _store(tmp_path_factory, tiny_model_dir, name: str):
    return _store_at(tmp_path_factory.mktemp(name), tiny_model_dir)


@pytest.fixture(scope="module")
def keyed(tiny_model_dir, tmp_path_factory):
    data = _store(tmp_path_factory, tiny_model_dir, "keyed")
    env = {**ENV, "APP_API_KEYS": KEYS, "APP_MAX_REQUEST_BYTES": str(1 << 20)}
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def keyless(tiny_model_dir, tmp_path_factory):
    data = _store(tmp_path_factory, tiny_model_dir, "keyless")
    with running_server(data_dir=data, base_model=tiny_model_dir, env=ENV) as server:
        yield server


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(ln for ln in status if ln.startswith("VmHWM:"))
    return int(line.split()[1])


def _post_huge(server, path: str, headers: str = "", *, chunked: bool = False):
    """Stream up to 300 MB to `server` (stopping when it closes the connection): its answer's
    status line and the seconds until it came."""
    sock = socket.create_connection((server.host, server.port), timeout=30)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}"
    request = f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n{headers}{framing}\r\n"
    chunk = b"[" * (1 << 20)
    if chunked:
        chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)

    def pump() -> None:
        try:
            for _ in range(HUGE >> 20):
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed: the rest of the body is never sent

    started = time.monotonic()
    sock.sendall(request.encode() + b"\r\n")
    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    try:
        answer = sock.recv(65536)
        elapsed = time.monotonic() - started
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(30)
    return answer.split(b"\r\n", 1)[0].decode(), elapsed


@pytest.mark.parametrize(
    ("path", "key", "chunked", "status"),
    [
        ("/classify", None, False, 401),
        ("/v2/models/alpha/infer", None, True, 401),
        ("/adapters", None, True, 401),
        ("/classify", READER, False, 413),
        ("/classify", READER, True, 413),
        ("/models/alpha", READER, True, 413),
        ("/adapters", ADMIN, False, 413),
    ],
)
def test_oversized_or_keyless_bodies_cost_nothing(keyed, path, key, chunked, status):
    """Refused before the body is read: at once, and the server's peak memory stays put."""
    before = _peak_rss_kib(keyed.pid)
    headers = f"Authorization: Bearer {key}\r\n" if key else ""
    line, elapsed = _post_huge(keyed, path, headers, chunked=chunked)
    assert line.startswith(f"HTTP/1.1 {status} "), line
    assert elapsed < 1.0, elapsed
    assert _peak_rss_kib(keyed.pid) - before < 20 * 1024
    assert httpx.get(keyed.url + "/healthz").status_code == 200


def test_keys_are_checked_before_the_body_is_parsed(keyed):
    bad = httpx.post(
        keyed.url + "/classify", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer", bad.text
    for path in ("/v2/models/alpha/infer", "/v2/models/alpha"):
        r = httpx.request("POST" if path.endswith("infer") else "GET", keyed.url + path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert isinstance(r.json()["error"], str)  # the protocol's own error shape


def test_download_needs_the_download_or_admin_scope(keyed):
    url = keyed.url + "/adapters/alpha/archive"
    r = httpx.get(url, headers=_bearer(READER))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    assert "download" in r.json()["error"]["message"]
    for key in (FETCHER, ADMIN):
        r = httpx.get(url, headers=_bearer(key))
        assert r.status_code == 200 and r.content[:2] == b"PK"
    assert httpx.get(keyed.url + "/adapters/alpha", headers=_bearer(READER)).status_code == 200
    classify = {"adapter": "alpha", "inputs": "good"}
    r = httpx.post(keyed.url + "/classify", json=classify, headers=_bearer(FETCHER))
    assert r.status_code == 403


def _nested(depth: int) -> str:
    return "[" * depth + '"x"' + "]" * depth


@pytest.mark.parametrize("depth", [900, 1000, 5000, 100_000])
def test_deeply_nested_json_is_a_4xx(keyed, depth):
    headers = {**_bearer(READER), "content-type": "application/json"}
    bodies = {
        "/v2/models/alpha/infer": '{"inputs": [{"name": "text", "datatype": "BYTES", '
        f'"shape": [1], "data": {_nested(depth)}}}]}}',
        "/classify": f'{{"adapter": "alpha", "inputs": {_nested(depth)}}}',
        "/models/alpha": f'{{"inputs": {_nested(depth)}}}',
    }
    for path, body in bodies.items():
        r = httpx.post(keyed.url + path, content=body.encode(), headers=headers, timeout=30)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
        error = r.json()["error"]
        if depth >= 5000:  # over the parser's recursion limit: say so
            assert "nested too deeply" in str(error), error


def _replace_alpha(server, factory, tmp_path, headers: dict) -> httpx.Response:
    archive = factory.archive("alpha", tmp_path / "alpha.zip", seed=7).read_bytes()
    return httpx.post(
        server.url + "/adapters",
        files={"file": ("alpha.zip", archive, "application/zip")},
        data={"name": "alpha", "overwrite": "true"},
        headers=headers,
        timeout=60,
    )


def _version(server) -> int:
    return httpx.get(server.url + "/adapters/alpha").json()["version"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://evil.example", "Host": "evil.example"},
    ],
)
def test_keyless_server_refuses_cross_site_changes(keyless, factory, tmp_path, headers):
    version = _version(keyless)
    r = _replace_alpha(keyless, factory, tmp_path, headers)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] in ("cross_site_request", "host_not_allowed")
    assert _version(keyless) == version
    r = httpx.post(keyless.url + "/adapters/alpha/unload", headers=headers)
    assert r.status_code == 403


def test_keyless_server_answers_only_its_own_host_names(keyless):
    for host in ("evil.example", "evil.example:8000", "10.0.0.7", "127.0.0.1.evil.example"):
        for path in ("/datasets", "/adapters", "/metrics"):
            r = httpx.get(keyless.url + path, headers={"Host": host})
            assert r.status_code == 403, (host, path, r.text)
            assert r.json()["error"]["code"] == "host_not_allowed"
    for host in (f"127.0.0.1:{keyless.port}", f"localhost:{keyless.port}", "localhost"):
        assert httpx.get(keyless.url + "/adapters", headers={"Host": host}).status_code == 200
    assert httpx.get(keyless.url + "/healthz", headers={"Host": "evil.example"}).status_code == 200


@pytest.mark.parametrize("control", ["%0A", "%0D", "%00", "%09"])
def test_a_control_character_in_the_path_reaches_no_route(
    keyless, keyed, factory, tmp_path, control
):
    """What a keyless server answered 200/201 through a path ending in `%0A` (the guard took
    it for an unknown route, the router for the real one): the datasets, an adapter's weights,
    an upload from another site, load/unload; with keys, `/classify%0A` went past the quotas.
    Now every such path is a 400 before any route."""
    archive = factory.archive("planted", tmp_path / "planted.zip", seed=7).read_bytes()
    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    version = _version(keyless)
    calls = [
        ("GET", "/datasets", {}),
        ("GET", "/adapters/alpha/archive", {}),
        (
            "POST",
            "/adapters",
            {"files": {"file": ("p.zip", archive)}, "data": {"name": "alpha", "overwrite": "true"}},
        ),
        ("POST", "/adapters/alpha/load", {}),
        ("POST", "/adapters/alpha/unload", {}),
    ]
    for method, path, kwargs in calls:
        r = httpx.request(method, keyless.url + path + control, headers=evil, timeout=30, **kwargs)
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert r.json()["error"]["code"] == "bad_request" and b"PK" not in r.content[:2]
    assert _version(keyless) == version
    body = {"adapter": "alpha", "inputs": "good"}
    r = httpx.post(keyed.url + "/classify" + control, json=body, headers=_bearer(READER))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
    assert httpx.post(keyed.url + "/classify", json=body, headers=_bearer(READER)).is_success


def test_keyless_server_serves_its_own_console(keyless, factory, tmp_path):
    """What the console's fetch sends (same origin) changes things as before."""
    origin = f"http://127.0.0.1:{keyless.port}"
    same = {"Origin": origin, "Sec-Fetch-Site": "same-origin"}
    version = _version(keyless)
    r = _replace_alpha(keyless, factory, tmp_path, same)
    assert r.status_code == 201 and r.json()["version"] == version + 1, r.text
    assert httpx.post(keyless.url + "/adapters/alpha/load", headers=same).status_code == 200
    assert httpx.get(keyless.url + "/", headers={"Sec-Fetch-Site": "none"}).status_code == 200


def test_refuses_to_start_keyless_beyond_loopback(tmp_path):
    """Before loading the model (a missing one here): one line naming the way out."""
    env = process_env(
        {
            "APP_HOST": "0.0.0.0",
            "APP_PORT": str(free_port()),
            "APP_DATA_DIR": str(tmp_path),
            "APP_BASE_MODEL": str(tmp_path / "no-such-model"),
        }
    )
    r = subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stderr
    assert "without API keys" in r.stderr and "APP_ALLOW_ANONYMOUS" in r.stderr
    assert "Traceback" not in r.stderr


def test_generated_key_is_printed_once_and_works(tmp_path, tiny_model_dir):
    data = _store_at(tmp_path / "data", tiny_model_dir)
    keys = tmp_path / "secrets" / "api-keys"
    env = {**ENV, "APP_API_KEYS_FILE": str(keys), "APP_GENERATE_API_KEY": "true"}
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as server:
        logs = server.logs()
        key = keys.read_text().split("\n")[1].split()[0]
        assert keys.stat().st_mode & 0o777 == 0o600 and len(key) >= 32
        assert logs.count(key) == 1
        assert httpx.get(server.url + "/adapters").status_code == 401
        assert httpx.get(server.url + "/adapters/alpha/archive", headers=_bearer(key)).is_success
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as again:
        assert again.logs().count(key) == 1  # the first start's line only: not shown again
        assert httpx.get(again.url + "/adapters", headers=_bearer(key)).status_code == 200


def _store_at(data, tiny_model_dir):
    AdapterFactory(tiny_model_dir).add_to_store(AdapterStore(data / "adapters"), "alpha", seed=1)
    return data
