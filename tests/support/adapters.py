"""Make random (but distinct) adapters for tests and benchmarks, without training.

    factory = AdapterFactory(tiny_model_dir)
    factory.add_to_store(store, "sentiment", seed=1)          # -> Manifest
    factory.save("demo", tmp_path / "demo", seed=2)           # a save_adapter folder
    factory.archive("demo", tmp_path / "demo.zip", seed=2)    # the same, zipped for upload

Each adapter gets seq_bn (or another config) + a classification head with weights drawn from
`seed`, so different seeds give different outputs. The base model is built once per factory;
adapters are deleted from it after saving, so it stays the plain base.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path
from typing import Any

from adapters_store import AdapterStore, BaseModelRef, Manifest

DEFAULT_LABELS = {0: "negative", 1: "positive"}


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A .zip of `files` (name -> content) in memory, as an upload's body."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


class AdapterFactory:
    def __init__(self, model_dir: str | Path, *, model_id: str | None = None) -> None:
        from adapters import AutoAdapterModel

        from adapters_store.fingerprint import fingerprint_model

        self.model_dir = Path(model_dir)
        self.model = AutoAdapterModel.from_pretrained(self.model_dir).eval()
        config = self.model.config
        self.base_ref = BaseModelRef(
            id=model_id or str(self.model_dir),
            fingerprint=fingerprint_model(self.model),
            model_type=config.model_type,
            hidden_size=config.hidden_size,
        )

    def save(
        self,
        name: str,
        out_dir: str | Path,
        *,
        seed: int,
        labels: dict[int, str] | None = None,
        config: Any = "seq_bn",
        std: float = 0.5,
        flat_prefix: bool = False,
        multilabel: bool = False,
    ) -> Path:
        """Write `name` as `save_adapter(..., with_head=True, use_safetensors=True)` does.

        `flat_prefix`: a prefix tuning is saved flat, as the trainer stores it (flatten_prefix).
        `multilabel`: the library's multi-label classification head (one label: regression).
        """
        import torch

        from training.modeling import flatten_prefix, save_adapter_files

        labels = labels or DEFAULT_LABELS
        torch.manual_seed(seed)
        slot = name.replace(".", "_")  # torch module names cannot hold '.'
        self.model.add_adapter(slot, config=config)
        self.model.add_classification_head(
            slot, num_labels=len(labels), id2label=labels, multilabel=multilabel
        )
        try:
            with torch.no_grad():
                for pname, param in self.model.named_parameters():
                    # The library zero-initialises the up-projection: draw every weight.
                    if f".{slot}." in pname:
                        param.normal_(0, std)
            if flat_prefix:
                flatten_prefix(self.model, slot)
            out = Path(out_dir)
            out.parent.mkdir(parents=True, exist_ok=True)
            # The trainer's save: prefix tuning's shared tensors need its workaround.
            save_adapter_files(self.model, out, slot)
        finally:
            self.model.delete_adapter(slot)
            self.model.delete_head(slot)
        return out

    def add_to_store(
        self,
        store: AdapterStore,
        name: str,
        *,
        seed: int,
        overwrite: bool = False,
        scratch: str | Path | None = None,
        **kwargs: Any,
    ) -> Manifest:
        """Save a random adapter and `store.add` it with this base's fingerprint."""
        folder = Path(scratch or store.root.parent) / f".factory-{name}-{seed}"
        shutil.rmtree(folder, ignore_errors=True)
        try:
            self.save(name, folder, seed=seed, **kwargs)
            return store.add(
                name, folder, base_model=self.base_ref, source="trained", overwrite=overwrite
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def archive(self, name: str, out: str | Path, *, seed: int, **kwargs: Any) -> Path:
        """A .zip of the saved adapter folder, as a user would upload it."""
        folder = Path(str(out) + ".d")
        self.save(name, folder, seed=seed, **kwargs)
        with zipfile.ZipFile(out, "w") as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, arcname=path.name)
        shutil.rmtree(folder, ignore_errors=True)
        return Path(out)
