"""The console scripts of pyproject: each target answers --help and --version (a subprocess
per call, as the installed script would run it) without loading a model."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.server import process_env

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _run(target: str, *args: str) -> subprocess.CompletedProcess:
    module, function = target.split(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=process_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_three_scripts_are_declared():
    assert set(SCRIPTS) == {"adapter-serve", "adapter-worker", "adapter-train"}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_and_version(script):
    shown = _run(SCRIPTS[script], "--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: {script}")
    version = _run(SCRIPTS[script], "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().startswith(f"{script} ")
    assert version.stdout.split()[1][0].isdigit() or "unknown" in version.stdout


def test_train_lists_pull_and_serve_rejects_unknown_flags():
    assert "pull" in _run(SCRIPTS["adapter-train"], "--help").stdout
    bad = _run(SCRIPTS["adapter-serve"], "--no-such-flag")
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr


def test_adapter_serve_flags_start_the_service(tmp_path, tiny_model_dir):
    """`adapter-serve --host --port --base-model --data-dir` serves, without any APP_* set."""
    from tests.support.server import Server, free_port, start_process, wait_ready

    module, function = SCRIPTS["adapter-serve"].split(":")
    port = free_port()
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    args = [sys.executable, "-c", code, "--host", "127.0.0.1", "--port", str(port),
            "--base-model", str(tiny_model_dir), "--data-dir", str(tmp_path / "data")]  # fmt: skip
    process = start_process(
        args, log_path=tmp_path / "serve.log", env={"APP_EMBEDDED_WORKER": "false"}
    )
    server = Server(process.args, process.proc, process.log_path, port=port)
    try:
        wait_ready(server, timeout_s=120)
        assert (tmp_path / "data" / "adapters").is_dir()
    finally:
        server.stop()  # uvicorn re-raises SIGTERM after its graceful shutdown: no exit-code check
    assert "Application shutdown complete" in server.logs()
