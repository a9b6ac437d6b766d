"""Adapters with multi-label and regression heads through the store: the task is read from
head_config.json, the fit check and the library's load path rebuild the same head, thresholds
and text_pair travel in our manifest, and unsupported head types are refused."""

from __future__ import annotations

import json
import shutil

import pytest

from adapters_store import AdapterStore, InvalidAdapter
from adapters_store.fit import check_adapter_fits
from adapters_store.format import Manifest
from tests.support.task_adapters import save_task_adapter

EMOTIONS = {0: "anger", 1: "joy", 2: "sadness"}


@pytest.mark.parametrize(
    ("task", "labels", "head_type", "width"),
    [
        ("single_label", {0: "neg", 1: "pos"}, "classification", 2),
        ("multi_label", EMOTIONS, "multilabel_classification", 3),
        ("regression", {0: "similarity"}, "classification", 1),
    ],
)
def test_each_head_round_trips_through_the_store(factory, tmp_path, task, labels, head_type, width):
    import torch
    from adapters import AutoAdapterModel

    folder = save_task_adapter(factory, "a", tmp_path / "a", task=task, labels=labels, seed=1)
    check_adapter_fits(factory.model.config, folder)  # the meta skeleton rebuilds this head
    store = AdapterStore(tmp_path / "store")
    manifest = store.import_dir("a", folder, expected_base=factory.base_ref)
    assert manifest.task == task and manifest.labels == labels
    if task == "multi_label":  # no thresholds given: 0.5 per label
        assert manifest.thresholds == {0: 0.5, 1: 0.5, 2: 0.5}
    else:
        assert manifest.thresholds is None
    stored = store.get("a").path
    head = json.loads((stored / "head_config.json").read_text())["config"]
    assert head["head_type"] == head_type and head["num_labels"] == width
    # the library's own load path (as serving's add_prediction_head_from_config) rebuilds it
    model = AutoAdapterModel.from_pretrained(factory.model_dir).eval()
    model.load_adapter(str(stored), load_as="x", with_head=True, use_safetensors=True)
    assert model.heads["x"].config["head_type"] == head_type
    inputs = torch.tensor([[0, 5, 6, 2]])
    with torch.no_grad():
        model.set_active_adapters("x")
        assert tuple(model(inputs, head="x").logits.shape) == (1, width)


def test_thresholds_and_pairs_travel_with_the_manifest(factory, tmp_path):
    folder = save_task_adapter(factory, "e", tmp_path / "e", task="multi_label",
                               labels=EMOTIONS, seed=2)  # fmt: skip
    store = AdapterStore(tmp_path / "store")
    given = {"thresholds": {0: 0.3, 1: 0.6, 2: 0.45}, "text_pair": True}
    trained = store.add("e", folder, base_model=factory.base_ref, head=given)
    assert trained.thresholds == {0: 0.3, 1: 0.6, 2: 0.45} and trained.text_pair
    # an exported folder (files + our manifest) imported elsewhere keeps them
    export = tmp_path / "export"
    shutil.copytree(store.get("e").path, export)
    other = AdapterStore(tmp_path / "other")
    imported = other.import_dir("e", export)
    assert imported.task == "multi_label" and imported.text_pair
    assert imported.thresholds == {0: 0.3, 1: 0.6, 2: 0.45}
    # a manifest describing another head (different labels) is not trusted for them
    manifest = Manifest.model_validate_json((export / "manifest.json").read_text())
    manifest.labels = {0: "a", 1: "b", 2: "c"}
    (export / "manifest.json").write_text(manifest.model_dump_json())
    again = other.import_dir("e2", export)
    assert again.thresholds == {0: 0.5, 1: 0.5, 2: 0.5} and not again.text_pair
    # thresholds outside 0..1 are refused
    manifest = Manifest.model_validate_json((store.get("e").path / "manifest.json").read_text())
    manifest.thresholds = {0: 1.5, 1: 0.5, 2: 0.5}
    (export / "manifest.json").write_text(manifest.model_dump_json())
    with pytest.raises(InvalidAdapter, match="thresholds"):
        other.import_dir("e3", export)


@pytest.mark.parametrize("kind", ["tagging", "multiple_choice"])
def test_unsupported_head_types_are_refused_clearly(factory, tmp_path, kind):
    folder = save_task_adapter(factory, "t", tmp_path / "t", task=kind, labels={0: "O", 1: "B"},
                               seed=3)  # fmt: skip
    store = AdapterStore(tmp_path / "store")
    with pytest.raises(InvalidAdapter) as caught:
        store.import_dir("t", folder)
    message = caught.value.message
    assert kind in message
    assert "supported head types: classification, multilabel_classification" in message
    assert not store.exists("t")
