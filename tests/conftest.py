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
# Files and tests inside those rooms that take the longest (measured with --durations on the
# 2-core box under load: 20-120 s each; together 40% of the in-process suites' time).
NOT_QUICK = frozenset(
    {
        "training/test_cli_tasks.py",  # CLI training runs, 85 s
        "serving/test_slots.py::test_thousands_of_activations_leave_nothing_behind",  # 120 s
        "serving/test_onepass.py::test_sixty_distinct_adapters_of_six_methods_in_one_pass_are_exact",
        "jobs/test_records.py::test_exactly_one_process_claims_a_job",  # processes race, 35 s
    }
)
SLOW_MARKS = ("slow", "ray", "browser")
TESTS = Path(__file__).resolve().parent


def is_quick(item: pytest.Item) -> bool:
    rel = Path(str(item.path)).resolve().relative_to(TESTS)
    test = f"{rel.as_posix()}::{getattr(item, 'originalname', item.name)}"
    if rel.parts[0] not in QUICK_ROOMS or not NOT_QUICK.isdisjoint({rel.as_posix(), test}):
        return False
    return not any(item.get_closest_marker(mark) for mark in SLOW_MARKS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if is_quick(item):
            item.add_marker(pytest.mark.quick)
