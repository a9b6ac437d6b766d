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


def _rel(item: pytest.Item) -> Path:
    return Path(str(item.path)).resolve().relative_to(TESTS)


def is_quick(item: pytest.Item) -> bool:
    rel = _rel(item)
    test = f"{rel.as_posix()}::{getattr(item, 'originalname', item.name)}"
    if rel.parts[0] not in QUICK_ROOMS or not NOT_QUICK.isdisjoint({rel.as_posix(), test}):
        return False
    return not any(item.get_closest_marker(mark) for mark in SLOW_MARKS)


# ---- the two-process pass (`pytest --two-processes tests/e2e`, run by `bash scripts/test.sh`
# after the suite): TWO_PROCESS_MODULES again with APP_API_WORKERS=2, so every server of those
# tests is a supervisor, an engine process and two API processes (APP_API_WORKERS=2 in the
# environment does the same for any test). A test that cannot hold there by design says why:
# @pytest.mark.one_process("...").
TWO_PROCESS_MODULES = (
    "e2e/test_serve.py",
    "e2e/test_protocols.py",
    "e2e/test_faults.py",
    "e2e/test_quotas.py",
    "e2e/test_adapter_access.py",
    "e2e/test_admission.py",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--two-processes",
        action="store_true",
        help="run only TWO_PROCESS_MODULES (tests/conftest.py), with APP_API_WORKERS=2",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--two-processes"):
        os.environ["APP_API_WORKERS"] = "2"  # before any server starts; servers inherit it


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--two-processes"):
        chosen = [i for i in items if _rel(i).as_posix() in TWO_PROCESS_MODULES]
        config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
        items[:] = chosen
    several = int(os.environ.get("APP_API_WORKERS") or 1) > 1
    for item in items:
        if is_quick(item):
            item.add_marker(pytest.mark.quick)
        mark = item.get_closest_marker("one_process")
        if several and mark is not None:
            reason = mark.args[0] if mark.args else "holds with one process only"
            item.add_marker(pytest.mark.skip(reason=f"one process by design: {reason}"))
