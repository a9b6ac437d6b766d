"""Export a stored adapter as a hub-ready folder (files + manifest + model card); push it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from adapters_store import AdapterStore, Manifest, StoreError
from adapters_store import format as fmt
from adapters_store.format import CURVES_PNG
from training.errors import TrainingError
from training.modeling import swap_dir

CARD_METRICS = ("accuracy", "f1_macro", "f1", "f1_micro", "pearson", "spearman", "mse",
                "eval_loss", "train_runtime_s", "train_samples_per_s")  # fmt: skip


def export_adapter(
    store: AdapterStore, name: str, out: str | Path, *, overwrite: bool = False
) -> Path:
    """Write `name`'s adapter files, manifest.json and a README.md model card into `out`."""
    try:
        stored = store.get(name)
    except StoreError as exc:
        raise TrainingError(exc.message, code=exc.code) from None
    target = Path(out).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise TrainingError(f"export target {target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise TrainingError(f"export target {target} is not empty (use --overwrite to replace)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the result is an ordinary folder
    try:
        for file_name in (*fmt.REQUIRED_FILES, fmt.MANIFEST):
            shutil.copyfile(stored.path / file_name, tmp / file_name)
        _write_curves(stored.manifest, tmp)
        (tmp / fmt.MODEL_CARD).write_text(model_card(stored.manifest), encoding="utf-8")
        swap_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _curves(manifest: Manifest) -> dict | None:
    curves = (manifest.training or {}).get("curves")
    return (
        curves if isinstance(curves, dict) and (curves.get("train") or curves.get("eval")) else None
    )


def _write_curves(manifest: Manifest, folder: Path) -> None:
    """The learning-curve PNG the model card embeds (trained adapters only)."""
    curves = _curves(manifest)
    if curves is not None:
        from training.plots import write_curves_png

        title = f"{manifest.name} v{manifest.version} ({manifest.adapter_config})"
        write_curves_png(curves, folder / CURVES_PNG, title=title)


def model_card(manifest: Manifest, *, repo_id: str | None = None) -> str:
    """A Hugging Face model card: metadata, metrics, base model, data, usage snippet."""
    training = manifest.training or {}
    base = manifest.base_model.id
    labels = [manifest.labels[i] for i in sorted(manifest.labels)]
    dataset = training.get("dataset", "unknown")
    front = [
        "---",
        "library_name: adapter-transformers",
        "pipeline_tag: text-classification",
        "tags:",
        "- adapter-transformers",
        "- adapters",
        "- text-classification",
        f"- {manifest.adapter_config}",
    ]
    if not Path(base).is_absolute():
        front.append(f"base_model: {base}")
    front.append("---")
    body = [
        f"# Adapter `{manifest.name}` for `{base}`",
        "",
        f"A `{manifest.adapter_config}` adapter with a {_head_words(manifest)} head, trained "
        "with the [adapters](https://github.com/adapter-hub/adapters) library.",
        "",
        "## Labels",
        "",
        *[f"- {i}: `{label}`{_threshold(manifest, i)}" for i, label in enumerate(labels)],
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {manifest.metrics[k]:.4g} |" for k in CARD_METRICS if k in manifest.metrics],
        "",
        *_curves_section(manifest),
        *_data_section(manifest, dataset),
        *_usage_section(manifest, base, repo_id),
    ]
    return "\n".join([*front, "", *body]) + "\n"


def _curves_section(manifest: Manifest) -> list[str]:
    curves = _curves(manifest)
    if curves is None:
        return []
    best = curves.get("best_step")
    note = f" The stored weights are those of step {best} (the best evaluation)." if best else ""
    return [
        "## Learning curves",
        "",
        f"Training loss per logged step, evaluation loss and scores per evaluation.{note}",
        "",
        f"![Learning curves]({CURVES_PNG})",
        "",
    ]


def _data_section(manifest: Manifest, dataset: str) -> list[str]:
    training = manifest.training or {}
    keys = ("train_split", "eval_split", "text_column", "label_column", "train_samples",
            "eval_samples", "recipe", "max_length", "num_epochs", "max_steps", "batch_size",
            "learning_rate", "lr_scheduler", "warmup_ratio", "weight_decay", "group_by_length",
            "steps_run",
            "best_step", "seed", "trainable_params", "total_params")  # fmt: skip
    rows = [f"| {k} | {training[k]} |" for k in keys if training.get(k) is not None]
    return [
        "## Training data and setup",
        "",
        f"- Base model: `{manifest.base_model.id}` (fingerprint "
        f"`{manifest.base_model.fingerprint}`)",
        f"- Dataset: `{dataset}`",
        f"- Adapter config: `{manifest.adapter_config}`; version {manifest.version}; "
        f"created {manifest.created_at}",
        "",
        "| setting | value |",
        "|---|---|",
        *rows,
        "",
    ]


def _usage_section(manifest: Manifest, base: str, repo_id: str | None) -> list[str]:
    source = repo_id or "path/to/this/folder"
    return [
        "## Usage",
        "",
        "```python",
        "from adapters import AutoAdapterModel, AdapterSetup",
        "from transformers import AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{base}")',
        f'model = AutoAdapterModel.from_pretrained("{base}")',
        f'name = model.load_adapter("{source}", load_as="{_key(manifest.name)}", '
        "use_safetensors=True)",
        "model.eval()",
        _inputs_line(manifest),
        "with AdapterSetup(name, head_setup=name):",
        _output_line(manifest),
        "labels = model.get_labels_dict(name)  # {id: label}",
        "```",
        "",
    ]


def _threshold(manifest: Manifest, index: int) -> str:
    value = (manifest.thresholds or {}).get(index)
    return "" if value is None else f" (threshold {value:g}, tuned on the eval split)"


def _head_words(manifest: Manifest) -> str:
    words = {"single_label": "classification", "multi_label": "multi-label classification",
             "regression": "regression"}[manifest.task]  # fmt: skip
    return words + (" (sentence pairs)" if manifest.text_pair else "")


def _inputs_line(manifest: Manifest) -> str:
    if manifest.text_pair:
        return 'inputs = tokenizer(["a first sentence"], ["its pair"], return_tensors="pt")'
    return 'inputs = tokenizer(["a sentence to classify"], return_tensors="pt")'


def _output_line(manifest: Manifest) -> str:
    if manifest.task == "multi_label":  # each label against its threshold (manifest.json)
        return "    probs = model(**inputs).logits.sigmoid()  # per label; see thresholds"
    if manifest.task == "regression":
        return "    scores = model(**inputs).logits[:, 0]  # the predicted value"
    return "    probs = model(**inputs).logits.softmax(-1)"


def _key(name: str) -> str:
    return name.replace(".", "_")


def push_adapter(
    store: AdapterStore, name: str, *, repo_id: str, token: str | None, private: bool = False
) -> str:
    """Export `name` and upload the folder to the hub repo `repo_id`; return the repo URL."""
    if not token:
        raise TrainingError("push needs a Hugging Face token: pass --token")
    if not repo_id or repo_id.count("/") > 1:
        raise TrainingError(f"invalid repo id {repo_id!r}: use 'user/name' or 'name'")
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory(prefix="push-") as tmp:
        folder = export_adapter(store, name, Path(tmp) / "adapter")
        manifest = store.get(name).manifest
        (folder / fmt.MODEL_CARD).write_text(model_card(manifest, repo_id=repo_id), "utf-8")
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                commit_message=f"Upload adapter {name} v{manifest.version}",
            )
        except Exception as exc:  # network, auth, offline mode: many exception types
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            message = f"upload to {repo_id!r} failed: {detail}"
            raise TrainingError(message, code="push_failed") from None
    return str(url)
