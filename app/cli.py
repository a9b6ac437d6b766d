"""Console entry points (pyproject `[project.scripts]`): adapter-serve, adapter-worker,
adapter-train. Each answers --help and --version and then runs what `python -m app`,
`python -m app.worker` and `python -m training` run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("adapter-serve")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def _version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")


def serve(argv: Sequence[str] | None = None) -> int:
    """adapter-serve: the HTTP API (uvicorn), with the training worker embedded by default."""
    from app.__main__ import apply_flags, main, serve_parser

    parser = serve_parser(prog="adapter-serve")
    _version_flag(parser)
    apply_flags(parser.parse_args(argv))
    return main()


def worker(argv: Sequence[str] | None = None) -> int:
    """adapter-worker: one training-job worker (a Huey consumer); settings from APP_*."""
    parser = argparse.ArgumentParser(
        prog="adapter-worker",
        description="Run training jobs from the queue (SQLite in APP_DATA_DIR, or APP_REDIS_URL).",
    )
    _version_flag(parser)
    parser.parse_args(argv)
    from app.worker import main

    return main([])


def train(argv: Sequence[str] | None = None) -> int:
    """adapter-train: the training CLI (train, eval, predict, export, push, pull)."""
    from training.cli import main

    return main(argv, prog="adapter-train", version=package_version())
