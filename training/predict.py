"""Load a stored adapter into its base model; predict (pipeline-shaped) and evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from adapters_store import AdapterStore, BaseModelRef, Manifest, StoreError, check_base
from training.callbacks import silence_adapters_warning
from training.errors import TrainingError
from training.metrics import sigmoid, task_metrics
from training.modeling import load_base, model_key, resolve_device

DEFAULT_MAX_LENGTH = 512


@dataclass
class LoadedAdapter:
    model: Any
    tokenizer: Any
    manifest: Manifest
    key: str
    device: str
    adapter: bool = True  # False: a fully fine-tuned model, `key` names its active head

    @property
    def labels(self) -> list[str]:
        return [self.manifest.labels[i] for i in sorted(self.manifest.labels)]

    @property
    def max_length(self) -> int:
        training = self.manifest.training or {}
        value = training.get("max_length")
        return int(value) if isinstance(value, int) else DEFAULT_MAX_LENGTH


def load_stored(
    store: AdapterStore, name: str, *, base_model: str | None = None, device: str | None = None
) -> LoadedAdapter:
    """The base model (manifest's base unless `base_model` is given) with `name` loaded.

    A base whose fingerprint differs from the one the adapter was trained on is refused.
    """
    silence_adapters_warning()
    try:
        stored = store.get(name)
    except StoreError as exc:
        raise TrainingError(exc.message, code=exc.code) from None
    device = resolve_device(device)
    base = load_base(base_model or stored.manifest.base_model.id)
    ref = BaseModelRef(
        id=base.model_id,
        fingerprint=base.fingerprint,
        hidden_size=getattr(base.model.config, "hidden_size", None),
    )
    try:
        check_base(stored.manifest.base_model, ref)
    except StoreError as exc:
        raise TrainingError(exc.message, code=exc.code) from None
    key = model_key(name)
    base.model.load_adapter(str(stored.path), load_as=key, with_head=True, use_safetensors=True)
    base.model.to(device).eval()
    return LoadedAdapter(base.model, base.tokenizer, stored.manifest, key, device)


def predict_logits(
    loaded: LoadedAdapter,
    texts: list[str],
    *,
    pairs: list[str] | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
) -> np.ndarray:
    """Logits (n, num_labels) with the adapter chosen per forward (AdapterSetup); `pairs`:
    the second text of each input (sentence-pair adapters)."""
    import contextlib

    import torch
    from adapters import AdapterSetup

    length = max_length or loaded.max_length
    chunks = []
    setup = AdapterSetup(loaded.key, head_setup=loaded.key) if loaded.adapter else None
    with torch.inference_mode(), setup or contextlib.nullcontext():
        for start in range(0, len(texts), batch_size):
            end = start + batch_size
            enc = loaded.tokenizer(
                texts[start:end], None if pairs is None else pairs[start:end],
                truncation=True, max_length=length, padding=True, return_tensors="pt",
            )  # fmt: skip
            out = loaded.model(**{k: v.to(loaded.device) for k, v in enc.items()})
            chunks.append(out.logits.float().cpu().numpy())
    if not chunks:
        return np.zeros((0, len(loaded.labels)), dtype=np.float32)
    return np.concatenate(chunks)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[list[dict[str, Any]]]:
    """Pipeline-shaped predictions: per input, the k best [{"label", "score"}], best first."""
    if k < 1:
        raise TrainingError("top_k must be at least 1")
    out = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[: min(k, len(labels))]
        out.append([{"label": labels[i], "score": float(row[i])} for i in order])
    return out


def predict(
    loaded: LoadedAdapter, texts: list[str], *, top_k_labels: int = 1,
    pairs: list[str] | None = None,
) -> list[Any]:  # fmt: skip
    """Per input: single_label the top-k labels; multi_label every label's sigmoid score
    and the labels above their thresholds; regression {"score": value}."""
    logits = predict_logits(loaded, texts, pairs=pairs)
    manifest = loaded.manifest
    if manifest.task == "regression":
        return [{"score": float(row[0])} for row in logits]
    if manifest.task == "multi_label":
        probs = sigmoid(logits)
        limits = thresholds_of(manifest)
        return [
            {"labels": [loaded.labels[i] for i in np.flatnonzero(row >= limits)],
             "scores": top_k(row[None, :], loaded.labels, len(loaded.labels))[0]}
            for row in probs
        ]  # fmt: skip
    return top_k(softmax(logits), loaded.labels, top_k_labels)


def thresholds_of(manifest: Manifest) -> np.ndarray:
    stored = manifest.thresholds or {}
    return np.asarray([stored.get(i, 0.5) for i in sorted(manifest.labels)])


def evaluate(
    loaded: LoadedAdapter, texts: list[str], labels: list[Any], *, batch_size: int = 32,
    pairs: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The task's metrics (multi-label at the stored thresholds), eval_loss for single-label
    (mean cross-entropy), and the example count."""
    logits = predict_logits(loaded, texts, pairs=pairs, batch_size=batch_size)
    task = loaded.manifest.task
    limits = thresholds_of(loaded.manifest) if task == "multi_label" else None
    metrics = task_metrics(task, logits, labels, num_labels=len(loaded.labels), thresholds=limits)
    metrics.pop("thresholds", None)
    if task == "single_label":
        gold = np.asarray(labels)
        log_probs = np.log(np.clip(softmax(logits.astype(np.float64)), 1e-12, None))
        metrics["eval_loss"] = float(-log_probs[np.arange(len(gold)), gold].mean())
    return {**metrics, "samples": float(len(labels))}
