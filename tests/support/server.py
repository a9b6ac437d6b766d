"""Run real service processes for end-to-end tests: `python -m app` (uvicorn) and friends.

    with running_server(data_dir=tmp_path, base_model=tiny_model_dir,
                        env={"APP_MAX_BATCH_SIZE": "16"}) as server:
        httpx.get(server.url + "/readyz")
        server.logs()                         # everything it printed so far

    worker = start_process([sys.executable, "-m", "app.worker"], env=..., log_path=...)
    worker.stop()

`api_workers=N` (or APP_API_WORKERS=N in the test run's own environment, which every server
inherits) runs the server as a supervisor, an engine process and N API processes (app.procs).

Processes get HF_HUB_OFFLINE=1, the repository on PYTHONPATH, their own process group, and
stdout+stderr captured to a log file. `stop()` sends SIGTERM (then SIGKILL after a grace period).
The server listens on 127.0.0.1 on a free port; a start that loses the port race is retried.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ManagedProcess:
    args: list[str]
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def logs(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def stop(self, grace_s: float = 10.0) -> int:
        """SIGTERM the process group, SIGKILL after `grace_s`; return the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def process_env(env: Mapping[str, str | os.PathLike] | None = None) -> dict[str, str]:
    merged = {**os.environ, **OFFLINE_ENV}
    merged["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    merged.update({k: str(v) for k, v in (env or {}).items()})
    return merged


def start_process(
    args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str | os.PathLike] | None = None,
    cwd: Path = REPO,
) -> ManagedProcess:
    """Start `args` in its own process group, output (stdout + stderr) to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(args),
            cwd=cwd,
            env=process_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return ManagedProcess(list(args), proc, log_path)


@dataclass
class Server(ManagedProcess):
    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def wait_ready(server: Server, *, path: str = "/readyz", timeout_s: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            code = server.proc.returncode
            raise RuntimeError(f"server exited with {code} before ready:\n{server.logs()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + path, timeout=2.0).status_code == 200:
                return
        time.sleep(0.1)
    server.stop()
    raise TimeoutError(f"server not ready within {timeout_s} s:\n{server.logs()[-4000:]}")


def wait_client_ready(client, *, path: str = "/readyz", timeout_s: float = 30.0) -> None:
    """Poll `path` with an in-process client (a TestClient) until 200: the app warms up after
    its lifespan has started (the batcher's first forward, its calibration)."""
    deadline = time.monotonic() + timeout_s
    while client.get(path).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not 200 within {timeout_s} s")
        time.sleep(0.01)


def every_process_ready(server: Server, path: str, in_a_row: int = 8) -> None:
    """Several API processes: ready once `in_a_row` fresh connections in a row answer 200."""
    import httpx

    deadline, row = time.monotonic() + 30, 0
    while row < in_a_row and time.monotonic() < deadline:
        ok = httpx.get(server.url + path, timeout=5).status_code == 200
        row = row + 1 if ok else 0
        time.sleep(0 if ok else 0.1)


def start_server(
    *,
    data_dir: Path,
    base_model: str | os.PathLike | None = None,
    env: Mapping[str, str | os.PathLike] | None = None,
    module: str = "app",
    log_path: Path | None = None,
    ready_path: str = "/readyz",
    timeout_s: float = 90.0,
    attempts: int = 3,
    api_workers: int | None = None,
) -> Server:
    """Start `python -m <module>` on 127.0.0.1:<free port> and wait until `ready_path` is 200."""
    log_path = log_path or data_dir / "server.log"
    if api_workers is not None:
        env = {"APP_API_WORKERS": str(api_workers), **(env or {})}
    for attempt in range(attempts):
        port = free_port()
        server_env = {"APP_HOST": "127.0.0.1", "APP_PORT": str(port), "APP_DATA_DIR": data_dir}
        if base_model is not None:
            server_env["APP_BASE_MODEL"] = base_model
        process = start_process(
            [sys.executable, "-m", module], log_path=log_path, env={**server_env, **(env or {})}
        )
        workers = {**os.environ, **(env or {})}.get("APP_API_WORKERS", "1")
        server = Server(process.args, process.proc, log_path, port=port, data_dir=data_dir)
        try:
            wait_ready(server, path=ready_path, timeout_s=timeout_s)
            if int(workers) > 1:
                every_process_ready(server, ready_path)
            return server
        except RuntimeError:
            lost_race = "address already in use" in server.logs().lower()
            if not lost_race or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running_server(**kwargs) -> Iterator[Server]:
    """`start_server(**kwargs)` as a context manager that always stops the server."""
    server = start_server(**kwargs)
    try:
        yield server
    finally:
        server.stop()
