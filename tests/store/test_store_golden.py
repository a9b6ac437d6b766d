"""Golden checks with the real adapters library and the tiny model (DESIGN §5)."""

from __future__ import annotations

import torch
from adapters import AdapterSetup, AutoAdapterModel

from adapters_store import AdapterStore, BaseModelRef
from adapters_store.fingerprint import fingerprint_model


def _model(model_dir):
    torch.manual_seed(0)
    return AutoAdapterModel.from_pretrained(model_dir).eval()


def _with_adapter(model, name: str, seed: int):
    torch.manual_seed(seed)
    model.add_adapter(name, config="seq_bn")
    model.add_classification_head(name, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    # Non-trivial adapter weights: the library initialises the up-projection to zeros.
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if f".{name}." in pname:
                param.normal_(0, 0.5)
    return model


def _logits(model, name: str, batch) -> torch.Tensor:
    with torch.inference_mode(), AdapterSetup(name, head_setup=name):
        return model(**batch).logits


def _batch(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok(["a good film", "the plot was awful and long"], padding=True, return_tensors="pt")


def test_save_load_round_trip_gives_bit_identical_logits(tiny_model_dir, tmp_path):
    src = _with_adapter(_model(tiny_model_dir), "rt", seed=3)
    batch = _batch(tiny_model_dir)
    expected = _logits(src, "rt", batch)
    src.save_adapter(tmp_path / "saved", "rt", with_head=True, use_safetensors=True)
    store = AdapterStore(tmp_path / "store")
    store.add("rt", tmp_path / "saved", base_model=BaseModelRef(id="tiny"))

    twin = _model(tiny_model_dir)
    twin.load_adapter(str(store.get("rt").path), load_as="rt", use_safetensors=True)
    assert torch.equal(_logits(twin, "rt", batch), expected)


def test_deleting_adapter_and_head_restores_every_base_tensor(tiny_model_dir, tmp_path):
    model = _model(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fp_before = fingerprint_model(model)
    _with_adapter(model, "tmp", seed=5)
    _logits(model, "tmp", _batch(tiny_model_dir))
    assert set(model.state_dict()) != set(before)
    model.delete_adapter("tmp")
    model.delete_head("tmp")
    after = model.state_dict()
    assert set(after) == set(before)
    for key, tensor in before.items():
        assert torch.equal(after[key], tensor), key
    assert fingerprint_model(model) == fp_before


def test_fingerprint_ignores_adapters_but_sees_weight_changes(tiny_model_dir):
    model = _model(tiny_model_dir)
    fp = fingerprint_model(model)
    _with_adapter(model, "x", seed=1)
    assert fingerprint_model(model) == fp
    with torch.no_grad():
        model.roberta.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert fingerprint_model(model) != fp
