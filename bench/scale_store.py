"""The N-adapter store of bench/scale.py, built fast and cached between runs.

One real adapter per method is saved with the `adapters` library on the base (random weights,
a 2-label classification head; prefix tuning saved flat, as the trainer stores it); every
stored adapter is a copy of its method's template with its tensors perturbed by their own seed
(safetensors), added through `AdapterStore.add` with the base's fingerprint. Methods are taken
in turn: adapter k has methods[k % len(methods)].

Cache: <scratch>/<model>/stores/<N>-<methods>/ holds the store and names.json (written last,
so a build that died is rebuilt). The tiny model is built once at <scratch>/tiny/model; when it
has to be built again, the stores made on the old one are dropped (their fingerprint differs).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from adapters_store.format import SAFETENSORS_FILES
from adapters_store.methods import METHOD_NAMES
from bench.common import minilm_dir

METHODS = METHOD_NAMES  # every registered method (adapters_store.methods)
MODELS = ("tiny", "minilm")
WEIGHT_FILES = SAFETENSORS_FILES
NOISE = 0.05  # relative to each tensor's spread


def base_model(model: str, scratch: Path) -> Path:
    """The base model's directory: the installed MiniLM-L6, or the tiny RoBERTa built once."""
    if model == "minilm":
        return minilm_dir()
    if model != "tiny":
        raise ValueError(f"unknown model {model!r} (choose from {', '.join(MODELS)})")
    from tests.support.tiny import build_tiny_roberta

    folder = scratch / "tiny" / "model"
    if not (folder / "model.safetensors").is_file():
        shutil.rmtree(scratch / "tiny", ignore_errors=True)
        build_tiny_roberta(folder)
    return folder


def adapter_names(count: int, methods: Sequence[str]) -> list[str]:
    return [f"s{k:05d}-{methods[k % len(methods)].replace('_', '')}" for k in range(count)]


def build_store(
    scratch: Path, model: str, count: int, methods: Sequence[str], *, say=print
) -> tuple[Path, Path, list[str]]:
    """(base model dir, store dir, adapter names): from the cache, or built now."""
    base = base_model(model, scratch)
    root = scratch / model / "stores" / f"{count}-{'+'.join(methods)}"
    done = root / "names.json"
    if done.is_file():
        say(f"store: {count} adapters from the cache ({root})")
        return base, root / "adapters", json.loads(done.read_text())
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    names = _build(base, root, model, count, methods)
    done.write_text(json.dumps(names))
    say(f"store: built {count} adapters in {time.perf_counter() - started:.0f} s ({root})")
    return base, root / "adapters", names


def _build(base: Path, root: Path, model: str, count: int, methods: Sequence[str]) -> list[str]:
    from safetensors.numpy import load_file

    from adapters_store import AdapterStore
    from tests.support.adapters import AdapterFactory

    factory = AdapterFactory(base, model_id=model)
    templates: dict[str, tuple[Path, dict]] = {}
    for i, method in enumerate(methods):
        folder = root / ".templates" / method
        factory.save(method, folder, seed=i, config=method, std=0.05, flat_prefix=True)
        tensors = {f: load_file(folder / f) for f in WEIGHT_FILES}
        templates[method] = (folder, tensors)
    store = AdapterStore(root / "adapters")
    staging = root / ".staging"
    names = adapter_names(count, methods)
    for k, name in enumerate(names):
        folder, tensors = templates[methods[k % len(methods)]]
        _write_variant(folder, tensors, staging, seed=k)
        store.add(name, staging, base_model=factory.base_ref, source="trained")
    shutil.rmtree(staging, ignore_errors=True)
    return names


def _write_variant(template: Path, tensors: dict, out: Path, *, seed: int) -> None:
    """The template's files with every tensor perturbed by `seed` (its own adapter)."""
    import numpy as np
    from safetensors.numpy import save_file

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(template, out)
    rng = np.random.default_rng(seed)
    for file_name, named in tensors.items():
        varied = {}
        for key, t in named.items():
            spread = float(t.std()) if t.size > 1 else 0.0
            noise = rng.standard_normal(t.shape, dtype=np.float32) * (NOISE * (spread or 0.01))
            varied[key] = (t + noise).astype(t.dtype)
        save_file(varied, str(out / file_name), metadata={"format": "pt"})
