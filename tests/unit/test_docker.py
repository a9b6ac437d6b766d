"""The Docker deployment, checked without a Docker engine: the compose files parse and point
at things that exist, the Dockerfile's inputs and commands are real, and those commands run."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


class ComposeLoader(yaml.SafeLoader):
    """SafeLoader plus compose's `!reset` tag."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def _compose(name: str = "docker-compose.yml") -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _module_of(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], command
    return command[2]


def test_compose_services_share_the_data_and_model_cache_volumes():
    compose = _compose()
    services = compose["services"]
    assert {"api", "worker", "redis"} <= set(services)
    for name in ("api", "worker"):
        service = services[name]
        assert service["build"]["context"] == "."
        assert (ROOT / service["build"]["context"] / "Dockerfile").is_file()
        mounts = dict(v.split(":", 1) for v in service["volumes"])
        env = service["environment"]
        assert mounts["data"] == env["APP_DATA_DIR"] == "/data"
        assert mounts["hf-cache"] == env["HF_HOME"]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        module = _module_of(service["command"])
        assert importlib.util.find_spec(module) is not None, module
    assert _module_of(services["api"]["command"]) == "app"
    assert _module_of(services["worker"]["command"]) == "app.worker"
    assert services["api"]["environment"]["APP_EMBEDDED_WORKER"] == "false"
    assert services["redis"]["profiles"] == ["redis"]
    used = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", [])}
    assert used <= set(compose["volumes"])


def test_compose_healthcheck_and_cpu_override():
    api = _compose()["services"]["api"]
    assert api["healthcheck"]["test"][1:] == ["python", "-m", "app.healthcheck"]
    cpu = _compose("docker-compose.cpu.yml")["services"]
    assert set(cpu) == {"api", "worker"}
    assert all(
        s["deploy"] is None and s["environment"]["APP_DEVICE"] == "cpu" for s in cpu.values()
    )


def test_dockerfile_inputs_exist_and_are_not_ignored():
    ignored = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    copies = [args.split() for word, args in _dockerfile() if word == "COPY"]
    sources = [s for parts in copies if not parts[0].startswith("--from") for s in parts[:-1]]
    assert {"pyproject.toml", "README.md", "app", "training", "adapters_store"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, p) for p in ignored), source


def test_dockerfile_runtime_contract():
    steps = _dockerfile()
    words = [w for w, _ in steps]
    args = {a.split("=")[0] for w, a in steps if w == "ARG"}
    assert "TORCH_VARIANT" in args
    build_torch = " ".join(a for w, a in steps if w == "RUN" and "torch==" in a)
    assert (
        "cuda)" in build_torch
        and "cpu)" in build_torch
        and "whl/cpu" in " ".join(a for _, a in steps)
    )
    users = [a for w, a in steps if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert words.index("USER") > words.index("FROM", 1)  # set in the runtime stage
    volumes = " ".join(a for w, a in steps if w == "VOLUME")
    assert "/data" in volumes and "/cache/huggingface" in volumes
    env = " ".join(a for w, a in steps if w == "ENV")
    assert "APP_DATA_DIR=/data" in env and "HF_HOME=/cache/huggingface" in env
    health = next(a for w, a in steps if w == "HEALTHCHECK")
    assert '"python", "-m", "app.healthcheck"' in health
    cmd = next(a for w, a in steps if w == "CMD")
    assert yaml.safe_load(cmd) == ["python", "-m", "app"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_worker_command_starts_outside_docker():
    result = _run("-m", "app.worker", "--help")
    assert result.returncode == 0 and "usage: python -m app.worker" in result.stdout
    bad = _run("-m", "app.worker", "--bogus")
    assert bad.returncode == 2 and "unrecognized" in bad.stderr and "Traceback" not in bad.stderr


def test_healthcheck_command_fails_cleanly_without_a_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        result = _run("-m", "app.healthcheck", "--url", f"http://127.0.0.1:{port}/healthz")
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy:") and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8000/healthz"),
        ("::", "http://127.0.0.1:8000/healthz"),
        ("10.0.0.5", "http://10.0.0.5:8000/healthz"),
        ("::1", "http://[::1]:8000/healthz"),
    ],
)
def test_health_url(host, url):
    from app.healthcheck import health_url

    assert health_url(host, 8000) == url


def test_readme_docker_commands_name_real_files():
    readme = (ROOT / "README.md").read_text()
    assert "docker compose up" in readme and "--profile redis" in readme
    files = re.findall(r"-f (\S+\.ya?ml)", readme)
    assert files and all((ROOT / f).is_file() for f in files), files


def test_runtime_preloads_jemalloc_it_installs():
    steps = _dockerfile()
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][-1] :]
    installs = " ".join(a for w, a in runtime if w == "RUN")
    env = " ".join(a for w, a in runtime if w == "ENV")
    preload = next(part for part in env.split() if part.startswith("LD_PRELOAD="))
    library = preload.split("=", 1)[1]
    assert "libjemalloc2" in installs and library in installs  # the link the preload names


def test_image_and_compose_ship_a_keyed_set_up(tmp_path):
    """They listen on 0.0.0.0, where a keyless server refuses to start: the first start writes
    a key to the data volume (app.__main__.generate_key); the compose file passes own keys on."""
    env = " ".join(a for w, a in _dockerfile() if w == "ENV")
    assert "APP_HOST=0.0.0.0" in env
    assert "APP_API_KEYS_FILE=/data/api-keys" in env and "APP_GENERATE_API_KEY=true" in env
    api = _compose()["services"]["api"]["environment"]
    assert api["APP_HOST"] == "0.0.0.0" and api["APP_GENERATE_API_KEY"] == "true"
    assert api["APP_API_KEYS_FILE"].startswith(api["APP_DATA_DIR"] + "/")
    assert api["APP_API_KEYS"] == "${APP_API_KEYS:-}"

    from app.__main__ import generate_key
    from app.config import Settings
    from app.main import checked_keyring

    keys = tmp_path / "data" / "api-keys"
    settings = Settings(host="0.0.0.0", api_keys_file=keys, generate_api_key=True, api_keys="")
    generate_key(settings)
    assert keys.is_file() and checked_keyring(settings).enabled
