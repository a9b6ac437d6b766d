"""validate_config: cheap checks of a TrainConfig (no model, no dataset read) for API and CLI."""

from __future__ import annotations

from pathlib import Path

from adapters_store import AdapterStore, InvalidName
from adapters_store import validate_name as _validate_name
from training import data as data_mod
from training.config import TrainConfig, parse_adapter_config
from training.errors import TrainingError


def validate_config(
    config: TrainConfig,
    *,
    data_roots: list[str | Path] | None = None,
    store: AdapterStore | None = None,
    allow_hub: bool = True,
) -> None:
    """Cheap checks, no model or data loading: fit for an API before it queues a job.

    With `data_roots` (the server's mode) every local file read must resolve inside them and
    a hub dataset must be an `owner/name` id; builtin loader names are refused always."""
    try:
        _validate_name(config.name)
        parse_adapter_config(config.adapter_config)
    except (InvalidName, ValueError) as exc:
        raise TrainingError(str(exc)) from None
    data_mod.check_data_roots(config.dataset, data_roots)
    if config.eval_split and Path(config.eval_split).suffix.lower() in data_mod.BUILDERS:
        data_mod.check_data_roots(config.eval_split, data_roots)
    files = _check_dataset(config, allow_hub=allow_hub, strict=data_roots is not None)
    for path in files:  # a split file in a folder under a root may be a link out of it
        data_mod.check_data_roots(str(path), data_roots)
    _check_base_model(config.base_model)
    taken = store is not None and store.exists(config.name)
    if config.method == "adapter" and taken and not config.overwrite:
        raise TrainingError(
            f"adapter {config.name!r} already exists (use overwrite to replace it)",
            code="adapter_exists",
        )
    if config.method == "full" and config.full_output_dir and not config.overwrite:
        out = Path(config.full_output_dir)
        if out.exists() and any(out.iterdir()):
            raise TrainingError(f"full_output_dir {out} is not empty (use overwrite to replace)")


def _check_dataset(config: TrainConfig, *, allow_hub: bool, strict: bool) -> list[Path]:
    """The local files the job reads (none for a hub dataset), checked."""
    if not data_mod.looks_local(config.dataset):
        if not allow_hub:
            raise TrainingError(
                "hub datasets are not allowed here; use a local file", code="dataset_forbidden"
            )
        data_mod.check_hub_id(config.dataset, strict=strict)
        return []
    splits = data_mod.local_splits(config.dataset)
    if config.train_split not in splits:
        raise data_mod.missing_split(config.dataset, config.train_split, list(splits))
    files = [splits[config.train_split]]
    split = data_mod.eval_split_of(config)  # the default `test`, when missing: carved
    if split is not None and split in splits:
        files.append(splits[split])
    elif split is not None and Path(split).suffix.lower() in data_mod.BUILDERS:
        files.append(data_mod.local_splits(split)["train"])  # raises when missing
    elif split is not None:
        raise data_mod.missing_split(config.dataset, split, list(splits))
    for path in files:
        if data_mod.is_empty_file(path):
            raise TrainingError(f"dataset {path} is empty", code="empty_dataset")
    return files


def _check_base_model(base_model: str) -> None:
    path = Path(base_model).expanduser()
    local = path.exists() or base_model.startswith(("/", "./", "../", "~"))
    if local and not (path / "config.json").is_file():
        raise TrainingError(f"base model directory {base_model} not found (no config.json)")
