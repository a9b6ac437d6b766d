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


def _rewrite(folder, *, drop: str | None = None, config: dict | None = None):
    """The folder with one adapter tensor left out and/or its config's settings changed."""
    import json

    from safetensors.torch import load_file, save_file

    if drop is not None:
        tensors = load_file(str(folder / "adapter.safetensors"))
        victim = next(k for k in sorted(tensors) if drop in k)
        save_file({k: v for k, v in tensors.items() if k != victim}, folder / "adapter.safetensors")
    if config is not None:
        data = json.loads((folder / "adapter_config.json").read_text())
        data["config"].update(config)
        (folder / "adapter_config.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    "config", ["seq_bn", "double_seq_bn", "par_bn", "lora", "ia3", "prefix_tuning"]
)
def test_every_supported_config_fits_exactly_and_reports_its_size(factory, tmp_path, config):
    """The exact-set check accepts what we save (prefix tuning's pool is shared by every layer
    and saved once), and the size it computes on the skeleton is the one the headers give."""
    from adapters_store.fit import param_bytes

    folder = factory.save("ok", tmp_path / "ok", seed=1, config=config)
    base = factory.model.config
    size = check_adapter_fits(base, folder)
    assert size == param_bytes(folder) > 0


def test_missing_adapter_tensor_is_refused(factory, tmp_path):
    from adapters_store import InvalidAdapter

    folder = _rewrite(factory.save("ok", tmp_path / "ok", seed=1), drop="adapter_up")
    with pytest.raises(InvalidAdapter, match="lacks 1 tensor"):
        check_adapter_fits(factory.model.config, folder)


def test_declared_but_absent_modules_are_refused_before_allocation(factory, tmp_path):
    """A tiny reduction_factor declares bottlenecks of millions of units; the file holds none
    of them. The size is computed on the meta skeleton: over the cap it is refused, under it
    the missing tensors are."""
    from safetensors.torch import save_file

    from adapters_store import AdapterTooLarge, InvalidAdapter

    folder = factory.save("huge", tmp_path / "huge", seed=1)
    _rewrite(folder, config={"reduction_factor": 0.0001})
    save_file({"x": torch.zeros(1)}, folder / "adapter.safetensors")
    assert (folder / "adapter.safetensors").stat().st_size < 1000
    with pytest.raises(AdapterTooLarge, match="cap"):
        check_adapter_fits(factory.model.config, folder)
    _rewrite(folder, config={"reduction_factor": 0.5})
    with pytest.raises(InvalidAdapter):
        check_adapter_fits(factory.model.config, folder)


@pytest.mark.parametrize(
    "config",
    [{"reduction_factor": 0}, {"reduction_factor": float("nan")}, {"architecture": "nope"},
     {"architecture": "lora", "r": 0}, {"non_linearity": "evil"}],
)  # fmt: skip
def test_config_values_the_library_chokes_on_are_invalid_not_errors(factory, tmp_path, config):
    """The config drives the adapters library's code; whatever it raises is a 422 reason."""
    from adapters_store import InvalidAdapter

    folder = _rewrite(factory.save("odd", tmp_path / "odd", seed=1), config=config)
    with pytest.raises(InvalidAdapter):
        check_adapter_fits(factory.model.config, folder)
