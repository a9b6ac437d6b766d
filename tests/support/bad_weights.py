"""Weight files that uploads must refuse (NaN, infinity, integers, a huge `__metadata__`), written
into a saved adapter folder or straight into a stored one, as files from before the checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

BIG_METADATA = {"note": "x" * (1 << 20)}  # 1 MiB, over the 64 KiB cap


def rewrite(
    path: Path, change: Callable[[dict[str, Any]], dict[str, Any]], metadata: dict | None = None
) -> Path:
    """Write `path` (a safetensors file) again with `change(tensors)` and `metadata`."""
    from safetensors.torch import load_file, save_file

    save_file(change(load_file(str(path))), str(path), metadata=metadata)
    return path


def poison(value: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """`value` (nan, inf) put into the first tensor of a file (by name)."""

    def change(tensors: dict[str, Any]) -> dict[str, Any]:
        key = sorted(tensors)[0]
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = value
        return tensors

    return change


def as_dtype(dtype: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Every tensor of a file cast to `dtype` (int32, bool, ...)."""
    return lambda tensors: {k: v.to(dtype) for k, v in tensors.items()}


def unchanged(tensors: dict[str, Any]) -> dict[str, Any]:
    return tensors
