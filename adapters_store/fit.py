"""Does a saved adapter fit this base model? Checked on a weightless (meta) copy.

The adapters library builds the adapter's modules from its config and loads its tensors with
`load_state_dict`, which refuses tensors whose shapes differ. Running that load against a
skeleton of the base on the `meta` device costs no memory and no real weights, and never touches
the live model. Tensors that the skeleton has no place for are refused as well.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from adapters_store.errors import BaseModelMismatch, InvalidAdapter

_PROBE = "fit_probe"


_CONTAINERS = {"adapters", "heads", "loras", "prefix_tunings", "prompt_tunings", "refts"}


def _renamed(key: str, saved_name: str) -> str:
    parts = key.split(".")
    for i in range(1, len(parts)):
        if parts[i] == saved_name and parts[i - 1] in _CONTAINERS:
            parts[i] = _PROBE
    return ".".join(parts)


def _saved_tensor_names(folder: Path, saved_name: str) -> set[str]:
    from safetensors import safe_open

    names: set[str] = set()
    for file_name in ("adapter.safetensors", "model_head.safetensors"):
        with safe_open(str(folder / file_name), framework="pt") as f:
            names.update(_renamed(k, saved_name) for k in f.keys())  # noqa: SIM118
    return names


def check_adapter_fits(base_config: Any, folder: Path) -> None:
    """Raise BaseModelMismatch if the adapter's tensors do not fit `base_config`'s model.

    Works on a copy of `base_config`: the adapters library writes into the config it builds
    from, so a shared config would be corrupted by concurrent checks.
    """
    import copy
    import json

    import torch
    from adapters import AutoAdapterModel

    saved_name = json.loads((folder / "adapter_config.json").read_text()).get("name", "")
    adapters_logger = logging.getLogger("adapters")
    previous = adapters_logger.level
    adapters_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            skeleton = AutoAdapterModel.from_config(copy.deepcopy(base_config))
            skeleton.load_adapter(str(folder), load_as=_PROBE, use_safetensors=True)
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "mismatch" in ln), str(exc))
        raise BaseModelMismatch(f"adapter tensors do not fit this base model: {detail}") from None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidAdapter(f"adapter cannot be built for this base model: {exc}") from None
    finally:
        adapters_logger.setLevel(previous)
    known = set(skeleton.state_dict())
    stray = sorted(_saved_tensor_names(folder, saved_name) - known) if saved_name else []
    if stray:
        raise BaseModelMismatch(
            f"adapter has {len(stray)} tensor(s) this base model has no place for, "
            f"e.g. {stray[0].replace(_PROBE, saved_name)}"
        )
