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
