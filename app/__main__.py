"""`python -m app`: run the service with uvicorn, settings from the environment (APP_*).

`--api-workers 1` (APP_API_WORKERS) runs everything in this one process; N > 1 makes this
process the supervisor of one engine process and N API processes (app.procs.supervisor).
"""

from __future__ import annotations

import argparse
import logging.config
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error.get("loc", ()))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"APP_{field.upper()}: {message}" if field else message


def generate_key(settings) -> None:
    """APP_GENERATE_API_KEY: no key configured and no keys file yet, so write one, print once."""
    path = settings.api_keys_file
    if not settings.generate_api_key or path is None or path.exists():
        return
    if settings.keyring().enabled:  # APP_API_KEYS has some
        return
    from app.security import generate_key_file

    try:
        key = generate_key_file(path)
    except FileExistsError:  # another process wrote it first: use that one
        return
    print(
        f"generated an API key with every scope (saved in {path}; it is not shown again):\n"
        f"    {key}\n"
        "send it as 'Authorization: Bearer <key>'; add keys of narrower scope to that file",
        file=sys.stderr,
        flush=True,
    )


# Set before torch loads OpenMP (docs/serving.md, issue 19). On a GPU the forward runs on the
# device, and OpenMP threads that spin after every CPU op only take cores from the event loop
# and the tokenizer: they sleep there. On a CPU the spin is what makes a forward fast (MiniLM
# 1.4-1.8x slower without it), so torch's default stays. An operator's own value always wins.
def quiet_threads(device: str) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # we tokenise on our own thread
    gpu = device.startswith("cuda") or (device == "auto" and Path("/dev/nvidiactl").exists())
    if gpu:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


SERVE_HELP = """Every setting is an APP_* environment variable (APP_BASE_MODEL, APP_DATA_DIR,
APP_API_KEYS, APP_MAX_BATCH_SIZE, ...; see docs). The flags below override their variable."""
FLAGS = {
    "--host": "APP_HOST",
    "--port": "APP_PORT",
    "--base-model": "APP_BASE_MODEL",
    "--data-dir": "APP_DATA_DIR",
    "--device": "APP_DEVICE",
    "--api-workers": "APP_API_WORKERS",  # N API processes before one engine process
}


def serve_parser(prog: str = "python -m app") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve text-classification adapters on one base model over HTTP.",
        epilog=SERVE_HELP,
    )
    for flag, env in FLAGS.items():
        parser.add_argument(flag, default=None, help=f"sets {env}")
    return parser


def apply_flags(args: argparse.Namespace) -> None:
    """Each flag given overrides its APP_* variable (Settings then reads them)."""
    for flag, env in FLAGS.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            os.environ[env] = str(value)


def main(argv: Sequence[str] | None = None) -> int:
    from app.config import Settings

    if argv is not None:
        apply_flags(serve_parser().parse_args(argv))
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: invalid setting {_first_error(exc)}", file=sys.stderr)
        return 2
    quiet_threads(settings.device)
    from app.observability.logs import logging_config

    log_config = logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(log_config)
    if settings.api_workers and settings.api_workers > 1:
        return _supervise(settings)
    import uvicorn

    from app.bootstrap import load_engine
    from app.config import EngineView
    from app.main import create_app
    from app.serving.errors import BaseModelLoadError

    try:  # before the (slow) model load: refuse an unintended open server at once
        generate_key(settings)
        app = create_app(settings)
    except (OSError, ValueError) as exc:  # StartupRefused, malformed keys, unwritable keys file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        engine = load_engine(EngineView.of(settings))
    except BaseModelLoadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    app.state.engine = engine
    if settings.embedded_worker:  # a training-worker child, started/stopped by the lifespan
        from app.jobs.worker import EmbeddedWorker

        app.state.embedded_worker = EmbeddedWorker(stop_timeout_s=settings.worker_shutdown_s + 10)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config,
        access_log=False,  # the request observer writes the access line (APP_ACCESS_LOG)
    )
    return 0


def _supervise(settings) -> int:
    """Refuse bad settings here, before any process starts; then run the processes."""
    from app.main import checked_keyring

    try:
        generate_key(settings)
        checked_keyring(settings)  # StartupRefused (a ValueError), malformed keys
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from app.procs.supervisor import supervise

    return supervise(settings)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
