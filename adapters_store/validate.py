"""Validation of an adapter folder before it enters the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adapters_store import format as fmt
from adapters_store.errors import BaseModelMismatch, InvalidAdapter
from adapters_store.heads import head_labels, head_task
from adapters_store.tensor_files import check_weights


def inspect_folder(src: Path) -> dict[str, Any]:
    """Check files, JSON, safetensors; return adapter config name, labels, task, base model."""
    if not src.is_dir():
        raise InvalidAdapter(f"{src} is not a directory")
    names = {p.name for p in src.iterdir()}
    for entry in src.iterdir():
        if entry.is_symlink() or not entry.is_file():
            raise InvalidAdapter(f"{entry.name}: only regular files are allowed")
    pickles = sorted(n for n in names if n.endswith(fmt.PICKLE_SUFFIXES))
    if pickles:
        raise InvalidAdapter(
            f"pickle weight files are refused ({', '.join(pickles)}): save the adapter with "
            "save_adapter(..., use_safetensors=True)"
        )
    missing = [n for n in fmt.REQUIRED_FILES if n not in names]
    if missing:
        raise InvalidAdapter(f"missing required files: {', '.join(missing)}")
    unknown = sorted(names - set(fmt.REQUIRED_FILES) - set(fmt.OPTIONAL_FILES))
    if unknown:
        raise InvalidAdapter(f"unexpected files: {', '.join(unknown)}")
    adapter_config = fmt.read_json(src / fmt.ADAPTER_CONFIG)
    head_config = fmt.read_json(src / fmt.HEAD_CONFIG)
    for weights in fmt.SAFETENSORS_FILES:
        check_weights(src / weights)  # caps, the library's parse, float and finite values
    hidden = adapter_config.get("hidden_size")
    return {
        "adapter_config": fmt.adapter_config_name(adapter_config),
        "labels": head_labels(head_config),
        "task": head_task(head_config),
        "base_model": fmt.BaseModelRef(
            id=str(adapter_config.get("model_name") or "unknown"),
            model_type=adapter_config.get("model_type"),
            hidden_size=hidden if isinstance(hidden, int) else None,
        ),
    }


def prior_manifest(src: Path) -> fmt.Manifest | None:
    path = src / fmt.MANIFEST
    if not path.is_file():
        return None
    try:
        return fmt.Manifest.model_validate(fmt.read_json(path))
    except ValidationError as exc:
        raise InvalidAdapter(f"manifest.json does not validate: {exc.errors()[0]}") from None


def check_base(actual: fmt.BaseModelRef, expected: fmt.BaseModelRef) -> None:
    """Refuse an adapter whose recorded base model cannot be `expected`."""
    if actual.fingerprint and expected.fingerprint and actual.fingerprint != expected.fingerprint:
        raise BaseModelMismatch(
            f"adapter was trained for base model {actual.id!r} (fingerprint "
            f"{actual.fingerprint}); this base is {expected.id!r} ({expected.fingerprint})"
        )
    if actual.hidden_size and expected.hidden_size and actual.hidden_size != expected.hidden_size:
        raise BaseModelMismatch(
            f"adapter is for a {actual.hidden_size}-wide model ({actual.id!r}); this base "
            f"{expected.id!r} is {expected.hidden_size}-wide"
        )
