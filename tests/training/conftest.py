"""Fixtures for the training tests: a train/test keyword dataset folder, stores, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tiny import keyword_dataset, write_jsonl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tiny model gains nothing from threads, and on a shared 2-core box spinning OpenMP
    threads made runs 10x slower; one thread keeps these tests fast and steady."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def keyword_dir(tmp_path_factory, keyword_jsonl) -> Path:
    """`train.jsonl` (the 600-row keyword_jsonl) + a held-out `test.jsonl` of 200 rows."""
    folder = tmp_path_factory.mktemp("keyword-dir")
    shutil.copyfile(keyword_jsonl, folder / "train.jsonl")
    write_jsonl(folder / "test.jsonl", keyword_dataset(200, seed=2))
    return folder


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "store"


def run_cli(
    *args: str | Path, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """`python -m training ...` in a subprocess, offline, from the repo root (or `cwd`)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "training", *map(str, args)],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
