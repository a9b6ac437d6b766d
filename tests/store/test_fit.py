from __future__ import annotations

import pytest
import torch
from adapters import AutoAdapterModel
from transformers import AutoConfig, RobertaConfig

from adapters_store import BaseModelMismatch
from adapters_store.fit import check_adapter_fits


def _save(model, name, out, config="seq_bn"):
    model.add_adapter(name, config=config)
    model.add_classification_head(name, num_labels=2)
    model.save_adapter(out, name, with_head=True, use_safetensors=True)
    return out


def _config(hidden: int, layers: int = 2) -> RobertaConfig:
    return RobertaConfig(
        vocab_size=600,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
    )


@pytest.mark.parametrize("config", ["seq_bn", "lora", "double_seq_bn"])
def test_matching_adapter_fits(tiny_model_dir, tmp_path, config):
    model = AutoAdapterModel.from_pretrained(tiny_model_dir)
    folder = _save(model, "ok", tmp_path / "ok", config=config)
    base = AutoConfig.from_pretrained(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_adapter_fits(base, folder)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_wider_model_adapter_refused(tiny_model_dir, tmp_path):
    wide = AutoAdapterModel.from_config(_config(64))
    folder = _save(wide, "wide", tmp_path / "wide")
    with pytest.raises(BaseModelMismatch, match="do not fit"):
        check_adapter_fits(AutoConfig.from_pretrained(tiny_model_dir), folder)


def test_deeper_model_adapter_refused(tiny_model_dir, tmp_path):
    deep = AutoAdapterModel.from_config(_config(32, layers=4))
    folder = _save(deep, "deep", tmp_path / "deep")
    with pytest.raises(BaseModelMismatch, match="no place"):
        check_adapter_fits(AutoConfig.from_pretrained(tiny_model_dir), folder)


def test_check_leaves_the_given_config_untouched(tiny_model_dir, tmp_path):
    model = AutoAdapterModel.from_pretrained(tiny_model_dir)
    folder = _save(model, "ok", tmp_path / "ok")
    base = AutoConfig.from_pretrained(tiny_model_dir)
    before = base.to_dict()
    check_adapter_fits(base, folder)
    check_adapter_fits(base, folder)
    assert base.to_dict() == before
