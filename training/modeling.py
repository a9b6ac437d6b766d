"""Base-model loading, parameter counts, and saving a fully fine-tuned model."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters_store import BaseModelRef, Manifest
from adapters_store.fingerprint import fingerprint_model
from adapters_store.format import FileInfo, sha256_file
from training.config import TrainConfig
from training.errors import TrainingError


@dataclass
class BaseModel:
    model: Any  # adapters AutoAdapterModel
    tokenizer: Any
    model_id: str  # the hub id, or the absolute path of a local directory
    fingerprint: str


def model_key(name: str) -> str:
    """The adapter/head name inside the model: torch module names cannot contain '.'."""
    return name.replace(".", "_")


def resolve_device(device: str | None) -> str:
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("device 'cuda' was asked for but no CUDA device is available")
        return "cuda"
    raise TrainingError(f"unknown device {device!r}: use cpu, cuda or auto")


def model_id(base_model: str) -> str:
    path = Path(base_model).expanduser()
    return str(path.resolve()) if path.is_dir() else base_model


def load_base(base_model: str) -> BaseModel:
    """Tokenizer + AutoAdapterModel, fingerprinted right after loading (float32)."""
    from adapters import AutoAdapterModel
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        model = AutoAdapterModel.from_pretrained(base_model)
    except (OSError, ValueError, KeyError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise TrainingError(
            f"cannot load base model {base_model!r}: {detail}", code="base_model_not_found"
        ) from None
    return BaseModel(model, tokenizer, model_id(base_model), fingerprint_model(model))


def save_adapter_files(model: Any, directory: str | Path, key: str) -> None:
    """`save_adapter(..., with_head=True, use_safetensors=True)`, each tensor stored once.

    adapters 1.3 registers a prefix-tuning pool under every layer as well as under the model,
    so its state dict holds the same tensor under one name per layer plus one, and safetensors
    refuses to save it ("share memory"). On that error we save again keeping one name per
    shared tensor (the shortest: the model-level pool). Loading assigns that name to the shared
    parameter, which every layer reads, so the round trip is exact and the file is as large as
    the adapter's parameters, not (layers + 1) times as large.
    """
    try:
        model.save_adapter(str(directory), key, with_head=True, use_safetensors=True)
    except RuntimeError as exc:
        if "share memory" not in str(exc):
            raise
        with _deduplicating_save_file():
            model.save_adapter(str(directory), key, with_head=True, use_safetensors=True)


def flatten_prefix(model: Any, key: str) -> bool:
    """Store-ready prefix tuning: the trained prefixes themselves, not the MLP that made them.

    Prefix tuning trains its per-layer keys and values through a reparametrising MLP (an
    embedding and two linear layers); once trained, the MLP's output is all inference needs.
    `eject_prefix_tuning` replaces the MLP with that output (a flat parameter of prefix_length
    x layers x 2 x hidden), and the adapter's config becomes `flat: true` so that loading builds
    the flat module. In eval mode the logits are the same; the saved file shrinks about 20x
    (MiniLM, measured: 10.3 MB -> 0.55 MB; roberta-base by the same arithmetic: about 39 MB
    -> 2.2 MB) and a forward no longer runs the MLP. Returns whether `key` was a
    reparametrised prefix tuning (now flattened).
    """
    from adapters import get_adapter_config_hash

    config = model.adapters_config.get(key)
    if getattr(config, "architecture", None) != "prefix_tuning" or config.flat:
        return False
    model.eject_prefix_tuning(key)
    flat = config.replace(flat=True)
    name = get_adapter_config_hash(flat)
    model.adapters_config.config_map[name] = flat
    model.adapters_config.adapters[key] = name
    return True


def unique_tensors(tensors: dict[str, Any]) -> dict[str, Any]:
    """One name per tensor: of names that are the same tensor, the shortest (then first) stays.

    Tensors that only overlap in memory (other views of one storage) are cloned instead.
    """

    def storage(t: Any) -> int:
        return t.untyped_storage().data_ptr()

    kept: dict[str, Any] = {}
    seen: set[tuple] = set()
    for name in sorted(tensors, key=lambda n: (len(n), n)):
        t = tensors[name]
        view = (storage(t), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if view not in seen:
            seen.add(view)
            kept[name] = t
    shared = Counter(storage(t) for t in kept.values())
    return {
        name: t.detach().clone().contiguous() if shared[storage(t)] > 1 else t
        for name, t in sorted(kept.items())
    }


@contextlib.contextmanager
def _deduplicating_save_file() -> Iterator[None]:
    from adapters import loading
    from safetensors.torch import save_file

    def save_unique(tensors: dict[str, Any], filename: str, *args: Any, **kwargs: Any) -> None:
        save_file(unique_tensors(tensors), filename, *args, **kwargs)

    original = loading.save_file
    loading.save_file = save_unique
    try:
        yield
    finally:
        loading.save_file = original


def count_parameters(model: Any) -> dict[str, int]:
    params = list(model.parameters())
    return {
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "total_params": sum(p.numel() for p in params),
    }


def save_full(
    base: BaseModel,
    config: TrainConfig,
    *,
    ref: BaseModelRef,
    labels: list[str],
    metrics: dict[str, float],
    training: dict[str, Any],
    head: dict[str, Any] | None = None,
) -> Manifest:
    """Write the fully fine-tuned model to `config.full_output_dir` (never the adapter store).

    The folder holds ``model.safetensors`` + ``config.json`` (an AdapterModel with the
    classification head named after the run; it reloads with
    ``AutoAdapterModel.from_pretrained(dir)``), the tokenizer files, ``learning_curves.png`` and
    our ``manifest.json``.
    The returned Manifest has ``adapter_config="full"``, ``base_model`` = the model it was
    fine-tuned from, and ``files`` listing every file in the folder; it is not in any store.
    The folder appears atomically (written beside it, then renamed).
    """
    assert config.full_output_dir is not None
    out = Path(config.full_output_dir).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the result is an ordinary folder
    try:
        base.model.save_pretrained(tmp, safe_serialization=True)
        base.tokenizer.save_pretrained(tmp)
        from training.plots import write_curves_file

        write_curves_file(training, tmp, title=f"{config.name} (full fine-tuning)")
        manifest = Manifest(
            name=config.name,
            base_model=ref,
            adapter_config="full",
            labels=dict(enumerate(labels)),
            metrics=metrics,
            source="trained",
            training=training,
            **(head or {}),
        )
        _write_manifest(tmp, manifest)
        swap_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write_manifest(folder: Path, manifest: Manifest) -> None:
    manifest.files = {
        p.name: FileInfo(sha256=sha256_file(p), size=p.stat().st_size)
        for p in sorted(folder.iterdir())
        if p.is_file()
    }
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True)
    (folder / "manifest.json").write_text(text + "\n", encoding="utf-8")


def swap_dir(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target`, moving an existing one aside first."""
    trash = None
    if target.exists():
        trash = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        os.rename(target, trash)
    os.rename(new, target)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
