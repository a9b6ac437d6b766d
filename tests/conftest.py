from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.support.adapters import AdapterFactory
from tests.support.tiny import build_tiny_roberta, keyword_dataset, write_jsonl

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny RoBERTa + tokenizer on disk (seconds to build)."""
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def factory(tiny_model_dir) -> AdapterFactory:
    """Random, distinct adapters for the tiny model (save, archive, add to a store)."""
    return AdapterFactory(tiny_model_dir)


@pytest.fixture(scope="session")
def keyword_jsonl(tmp_path_factory) -> Path:
    """An easy keyword-labelled JSONL dataset (text, label) of 600 rows."""
    path = tmp_path_factory.mktemp("data") / "keywords.jsonl"
    return write_jsonl(path, keyword_dataset(600, seed=1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# ---- the quick suite (`bash scripts/test.sh -m quick`, under 5 minutes on a 2-core box) -----
# In-process suites: no uvicorn or worker process, no browser, no Ray cluster, no MiniLM.
QUICK_ROOMS = frozenset({"unit", "store", "serving", "jobs", "api", "training"})
# Files inside those rooms that take minutes (real training runs, subprocesses, docker lint).
NOT_QUICK = frozenset({"training/test_train.py", "training/test_cli_tasks.py"})
SLOW_MARKS = ("slow", "ray", "browser")
TESTS = Path(__file__).resolve().parent


def is_quick(item: pytest.Item) -> bool:
    rel = Path(str(item.path)).resolve().relative_to(TESTS)
    if rel.parts[0] not in QUICK_ROOMS or rel.as_posix() in NOT_QUICK:
        return False
    return not any(item.get_closest_marker(mark) for mark in SLOW_MARKS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if is_quick(item):
            item.add_marker(pytest.mark.quick)
