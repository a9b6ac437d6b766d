"""Locating and loading raw dataset splits: local files and folders, or hub datasets."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from training.errors import TrainingError

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


# ---- locating and loading ------------------------------------------------------------------
def looks_local(dataset: str) -> bool:
    """A path (existing, or written like a path / file name) rather than a hub id."""
    path = Path(dataset).expanduser()
    return (
        path.exists()
        or path.suffix.lower() in BUILDERS
        or dataset.startswith(("/", "./", "../", "~"))
    )


def local_splits(dataset: str) -> dict[str, Path]:
    """The split files of a local dataset (a file is the single split 'train')."""
    path = Path(dataset).expanduser()
    if not path.exists():
        raise TrainingError(f"dataset file not found: {dataset}", code="dataset_not_found")
    if path.is_dir():
        splits = {p.stem: p for p in sorted(path.iterdir()) if p.suffix.lower() in BUILDERS}
        if not splits:
            kinds = ", ".join(BUILDERS)
            raise TrainingError(f"dataset directory {dataset} holds no {kinds} split files")
        return splits
    if path.suffix.lower() not in BUILDERS:
        kinds = ", ".join(BUILDERS)
        raise TrainingError(f"unsupported dataset file type {path.suffix!r}: use {kinds}")
    return {"train": path}


# A hub dataset id: owner/name, each part letters, digits, '_', '-', '.' (no '..' or '--').
_HUB_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\Z")


def builtin_loaders() -> set[str]:
    """The `datasets` library's builtin loaders (text, csv, json, parquet, imagefolder, ...):
    given as a dataset name, they read files under the current directory, not a hub dataset."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return set(_PACKAGED_DATASETS_MODULES)


def check_hub_id(dataset: str, *, strict: bool) -> None:
    """Refuse a dataset name that is no hub dataset: a builtin loader name always, and anything
    but `owner/name` when `strict` (the server's rule; the CLI also takes legacy ids like imdb)."""
    if dataset.strip().lower() in builtin_loaders():
        raise TrainingError(
            f"{dataset!r} is a datasets builtin loader, not a dataset: pass a data file instead",
            code="dataset_forbidden",
        )
    bad = not _HUB_ID.fullmatch(dataset) or ".." in dataset or "--" in dataset
    if strict and bad:
        raise TrainingError(
            f"{dataset[:100]!r} is neither a data file under the data roots nor a hub dataset "
            "id of the form owner/name",
            code="dataset_forbidden",
        )


def check_data_roots(dataset: str, data_roots: Iterable[str | Path] | None) -> None:
    """Refuse a local dataset outside the allowed roots (when roots are given)."""
    if data_roots is None or not looks_local(dataset):
        return
    roots = [Path(r).expanduser().resolve() for r in data_roots]
    target = Path(dataset).expanduser().resolve()
    if not any(target == root or target.is_relative_to(root) for root in roots):
        raise TrainingError(
            f"dataset path {dataset} is outside the allowed data roots", code="dataset_forbidden"
        )


def load_split(dataset: str, split: str, *, dataset_config: str | None = None) -> Any:
    """One raw split, from a local file/directory or the hub."""
    if looks_local(dataset):
        splits = local_splits(dataset)
        if split not in splits:
            raise missing_split(dataset, split, list(splits))
        return _load_file(splits[split])
    return _load_hub(dataset, split, dataset_config)


def missing_split(dataset: str, split: str, available: Sequence[str]) -> TrainingError:
    hint = ""
    if Path(dataset).is_file():
        hint = (
            " (a single file is one split: eval split 'none' (or leaving the default) holds out "
            "a fraction of it; else pass a path to another file, or a directory with train/test "
            "files)"
        )
    names = ", ".join(available)
    return TrainingError(f"split {split!r} not found in {dataset}; available: {names}{hint}")


def _load_file(path: Path) -> Any:
    from datasets import load_dataset

    builder = BUILDERS[path.suffix.lower()]
    if is_empty_file(path):
        raise TrainingError(f"dataset {path} is empty", code="empty_dataset")
    try:
        ds = load_dataset(builder, data_files={"train": str(path)}, split="train")
    except Exception as exc:  # the builders raise many types for malformed files
        raise TrainingError(f"cannot read {path}: {_first_line(exc)}") from None
    if len(ds) == 0:
        raise TrainingError(f"dataset {path} is empty", code="empty_dataset")
    return ds


def is_empty_file(path: Path) -> bool:
    """No rows: a zero-byte file, blank lines only, or a CSV with a header and no rows."""
    builder = BUILDERS[path.suffix.lower()]
    if path.stat().st_size == 0:
        return True
    if builder == "parquet":
        return False
    with path.open("rb") as f:
        lines = [line for _, line in zip(range(3), (ln for ln in f if ln.strip()), strict=False)]
    return len(lines) <= (1 if builder == "csv" else 0)


def _load_hub(dataset: str, split: str, dataset_config: str | None) -> Any:
    from datasets import load_dataset

    check_hub_id(dataset, strict=False)  # datasets >= 4 runs no loading scripts at all
    try:
        ds = load_dataset(dataset, dataset_config, split=split)
    except Exception as exc:  # offline, unknown id, unknown split, bad config...
        raise TrainingError(
            f"cannot load dataset {dataset!r} split {split!r} from the Hugging Face hub: "
            f"{_first_line(exc)}",
            code="dataset_not_found",
        ) from None
    if len(ds) == 0:
        raise TrainingError(f"dataset {dataset!r} split {split!r} is empty", code="empty_dataset")
    return ds


def hub_split_names(dataset: str, dataset_config: str | None) -> list[str] | None:
    """The split names a hub dataset declares; None when they cannot be read (offline, an
    unknown id: loading the split then says why)."""
    from datasets import get_dataset_split_names

    try:
        return list(get_dataset_split_names(dataset, dataset_config))
    except Exception:  # offline, unknown id, bad config: the load reports it
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
