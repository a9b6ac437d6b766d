"""The supervisor (`python -m app --api-workers N`, N > 1; title `adapter-serve: supervisor`).

Start-up work done once, here: the settings were checked and the key file written by
`app.__main__`; the port is reserved here (a port in use fails at once, before any child starts;
port 0 picks one); the store's scratch folders are cleaned and its listing index refreshed; the
private runtime folder (mode 0700) holds the engine's sockets and the shared metrics files. Then
the engine process starts, and the API processes beside it (they answer 503 until the engine
beats), and the embedded training worker once, when APP_EMBEDDED_WORKER says so.

Each API process binds and listens on its own SO_REUSEPORT socket, rather than all accepting
from one socket bound here and inherited (uvicorn's and gunicorn's `--workers`): the kernel
spreads new connections evenly over the listening sockets, where with one shared socket the
process that wakes first accepts a whole burst (measured here: 64 connections opened at once,
295 of 300 requests on one of two processes). The price: connections waiting in the accept
queue of a process that dies are reset (the client retries), and the port must not be shared
with another program of the same user. The supervisor holds a bound, not listening, socket of
the same group, so the port stays reserved while processes restart.

A dead API process is restarted; a dead engine is restarted (its clients answer 503 meanwhile
and reconnect); an engine that cannot load the base model ends the service (exit 2). A process
that keeps dying is restarted after pauses that double from RESTART_PAUSE_S up to
RESTART_PAUSE_MAX_S (`Restarts`; each restart is logged with its pause), from the first pause
again once a run lasted STAYED_UP_S; the watch never sleeps through a pause, so the others are
tended meanwhile.
SIGTERM/SIGINT: the API processes drain their requests in flight and exit, then the engine
stops, then the training worker; the supervisor exits 0.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.bootstrap import prepare_store
from app.config import Settings, StoreView
from app.procs.titles import set_title

log = logging.getLogger("app.procs.supervisor")
POLL_S = 0.1
RESTART_PAUSE_S = 0.5  # before the first restart of a process that died
RESTART_PAUSE_MAX_S = 30.0  # the pauses double up to this while it keeps dying
STAYED_UP_S = 10.0  # a process that ran this long before it died restarts after the first pause
CANNOT_LOAD = 3  # app.procs.engine_main's exit code: the base model cannot be loaded
LOADED = "engine.loaded"  # app.procs.engine_main writes it once the model loaded
ENGINE = "engine process"


def api_name(index: int) -> str:
    return f"API process {index}"


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port in the port's SO_REUSEPORT group (not listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


@dataclass
class Restarts:
    """When one process starts again after it died: capped exponential backoff."""

    started: float  # time.monotonic() of its last start
    in_a_row: int = 0  # deaths since a run that lasted STAYED_UP_S
    due: float | None = None  # it is dead and starts again at this time

    def died(self, now: float) -> float:
        """The pause before its next start (and `due` set to its end)."""
        if now - self.started >= STAYED_UP_S:
            self.in_a_row = 0
        pause = min(RESTART_PAUSE_MAX_S, RESTART_PAUSE_S * 2**self.in_a_row)
        self.in_a_row += 1
        self.due = now + pause
        return pause


class Supervisor:
    def __init__(self, settings: Settings, port: int, runtime: Path) -> None:
        self.settings, self.port, self.runtime = settings, port, runtime
        self.metrics_dir = runtime / "metrics"
        self.metrics_dir.mkdir()
        self.engine: subprocess.Popen | None = None
        self.apis: dict[int, subprocess.Popen] = {}
        self.restarts: dict[str, Restarts] = {}  # by process name
        self.stopping = threading.Event()
        self.failed = False

    def _spawn(self, module: str, *args: str) -> subprocess.Popen:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        cmd = [sys.executable, "-m", module, str(self.runtime), *args]
        # A session of its own: a signal to the supervisor's group (a terminal's Ctrl-C, a test's
        # killpg) reaches the supervisor alone, which stops the processes in order.
        return subprocess.Popen(cmd, env=env, start_new_session=True)

    def _started(self, name: str) -> None:
        restarts = self.restarts.get(name)
        if restarts is None:
            self.restarts[name] = Restarts(time.monotonic())
        else:
            restarts.started, restarts.due = time.monotonic(), None

    def start_engine(self) -> None:
        self.engine = self._spawn("app.procs.engine_main")
        self._started(ENGINE)
        log.debug("engine process started (pid %d)", self.engine.pid)

    def engine_loaded(self) -> bool:
        """Wait until the first engine loaded the base model (restarting one that crashed);
        False when it cannot load it (it said why on stderr) or we are asked to stop."""
        while not (self.runtime / LOADED).exists():
            if self.stopping.wait(POLL_S) or not self._engine_alive():
                return False
        return True

    def _engine_alive(self) -> bool:
        """Restart a dead engine (after its pause); False when it cannot load the base model."""
        assert self.engine is not None
        if self._due(ENGINE, self.engine):
            self.start_engine()
        self.failed = self.engine.returncode == CANNOT_LOAD
        return not self.failed

    def start_api(self, index: int) -> None:
        self.apis[index] = self._spawn("app.procs.api_worker", str(index), str(self.port))
        self._started(api_name(index))
        log.debug("API process %d started (pid %d)", index, self.apis[index].pid)

    def watch(self) -> None:
        """Restart what dies, until asked to stop (or the engine cannot load its model)."""
        while not self.stopping.wait(POLL_S):
            if not self._engine_alive():
                return
            for index, proc in list(self.apis.items()):
                if self._due(api_name(index), proc) and not self.stopping.is_set():
                    self.start_api(index)

    def _due(self, name: str, proc: subprocess.Popen) -> bool:
        """True when `proc` is dead and its pause is over; its death is logged once, with the
        pause (an engine that cannot load its model gets none: the service ends)."""
        restarts, now = self.restarts[name], time.monotonic()
        if restarts.due is not None:
            return now >= restarts.due
        if proc.poll() is None:
            return False
        self._dead(proc.pid)
        if name == ENGINE and proc.returncode == CANNOT_LOAD:
            return False
        ran, pause = now - restarts.started, restarts.died(now)
        log.warning("%s (pid %d) died (exit %s) after %.1f s: restarting in %.1f s "
                    "(%d in a row)", name, proc.pid, proc.returncode, ran, pause,
                    restarts.in_a_row)  # fmt: skip
        return False

    def _dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # its live gauges go

    def stop(self) -> None:
        """API processes first (they drain), then the engine."""
        for proc in self.apis.values():
            _signal(proc, signal.SIGTERM)
        for proc in self.apis.values():
            _wait(proc, self.settings.request_timeout_s + 10)
        if self.engine is not None:
            _signal(self.engine, signal.SIGTERM)
            _wait(self.engine, 30)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)


def _wait(proc: subprocess.Popen, timeout_s: float) -> None:
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("pid %d did not stop in %.0f s; killing it", proc.pid, timeout_s)
        proc.kill()
        proc.wait()


def supervise(settings: Settings) -> int:
    set_title("adapter-serve: supervisor")
    try:
        reserved = reuseport_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 2
    prepare_store(StoreView.of(settings).open())
    runtime = Path(tempfile.mkdtemp(prefix="adapter-serve-"))  # mode 0700
    port = reserved.getsockname()[1]
    supervisor = Supervisor(settings, port, runtime)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: supervisor.stopping.set())
    worker = None
    try:
        supervisor.start_engine()
        if not supervisor.engine_loaded():
            return 2 if supervisor.failed else 0
        for index in range(1, (settings.api_workers or 1) + 1):
            supervisor.start_api(index)
        log.info("listening on http://%s:%d with %d API processes", settings.host, port,
                 settings.api_workers)  # fmt: skip
        if settings.embedded_worker:
            from app.jobs.worker import EmbeddedWorker

            worker = EmbeddedWorker(stop_timeout_s=settings.worker_shutdown_s + 10)
            worker.start()
        supervisor.watch()
    finally:
        supervisor.stop()
        if worker is not None:
            worker.stop()
        reserved.close()
        shutil.rmtree(runtime, ignore_errors=True)
    return 2 if supervisor.failed else 0
