"""Does a saved adapter fit this base model? Checked on a weightless (meta) copy.

The adapters library builds the adapter's modules from its config and loads its tensors with
`load_state_dict`, which refuses tensors whose shapes differ. Running that load against a
skeleton of the base on the `meta` device costs no memory and no real weights, and never touches
the live model. The saved tensors must then be exactly the ones the config implies: one the
skeleton has no place for is refused, and so is a module the config declares without its
weights (a tiny file could otherwise declare huge modules, built at load time). The memory the
adapter's parameters take is computed on the skeleton and capped before anything is allocated.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

from adapters_store.convert import DEFAULT_MAX_PARAM_BYTES
from adapters_store.errors import AdapterTooLarge, BaseModelMismatch, InvalidAdapter
from adapters_store.methods import adapter_name_at

_PROBE = "fit_probe"
WEIGHT_FILES = ("adapter.safetensors", "model_head.safetensors")
PARAM_ITEMSIZE = 4  # the adapter's modules are built in float32; the engine may cast them


def _renamed(key: str, saved_name: str) -> str:
    parts = key.split(".")
    for i in range(1, len(parts)):
        if parts[i] == saved_name and adapter_name_at(parts, i):
            parts[i] = _PROBE
    return ".".join(parts)


def _saved_tensor_names(folder: Path, saved_name: str) -> set[str]:
    from safetensors import safe_open

    names: set[str] = set()
    for file_name in WEIGHT_FILES:
        with safe_open(str(folder / file_name), framework="pt") as f:
            names.update(_renamed(k, saved_name) for k in f.keys())  # noqa: SIM118
    return names


def param_bytes(folder: Path) -> int:
    """Bytes the adapter's and head's parameters take in float32: 4 x the elements of the
    tensors in its safetensors files, read from their headers (no tensor is loaded).

    For an adapter that passed `check_adapter_fits` this is what loading it allocates (a
    float16/bfloat16 engine holds half of it). The store records it as `param_bytes`."""
    from safetensors import safe_open

    elements = 0
    for file_name in WEIGHT_FILES:
        with safe_open(str(folder / file_name), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118
                elements += math.prod(f.get_slice(key).get_shape())
    return elements * PARAM_ITEMSIZE


def check_param_bytes(folder: Path, max_param_bytes: int) -> None:
    """Refuse files whose tensors take more than the cap (`check_adapter_fits` also counts
    what the config declares and the files lack)."""
    size = param_bytes(folder)
    if size > max_param_bytes:
        raise AdapterTooLarge(
            f"the adapter's tensors take {size} bytes in float32; the cap is {max_param_bytes}"
        )


def _probe_tensors(skeleton: Any) -> list[tuple[set[str], int]]:
    """Each distinct tensor of the probe adapter and head once: (all its names, elements).

    A prefix-tuning pool is one parameter registered under every layer: saved once, it
    satisfies all of its names."""
    import itertools

    keys = {k for k in skeleton.state_dict() if _PROBE in k.split(".")}
    groups: dict[int, tuple[set[str], int]] = {}
    named = itertools.chain(
        skeleton.named_parameters(remove_duplicate=False),
        skeleton.named_buffers(remove_duplicate=False),
    )
    for name, tensor in named:
        if name in keys:
            groups.setdefault(id(tensor), (set(), tensor.numel()))[0].add(name)
    return list(groups.values())


def _build(base_config: Any, folder: Path) -> Any:
    """The meta skeleton of the base with the adapter loaded as `_PROBE`."""
    import copy

    import torch
    from adapters import AutoAdapterModel

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
    except Exception as exc:  # the config drives the library's code: any error is the input's
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise InvalidAdapter(
            f"adapter cannot be built for this base model: {type(exc).__name__} {detail}"
        ) from None
    finally:
        adapters_logger.setLevel(previous)
    return skeleton


def check_adapter_fits(
    base_config: Any, folder: Path, *, max_param_bytes: int = DEFAULT_MAX_PARAM_BYTES
) -> int:
    """Raise unless the adapter's tensors are exactly those its config implies on
    `base_config`'s model and its parameters take at most `max_param_bytes`; return that size.

    BaseModelMismatch: a tensor of the wrong shape or with no place in the model;
    InvalidAdapter: a tensor the config implies is missing; AdapterTooLarge: over the cap.
    Works on a copy of `base_config`: the adapters library writes into the config it builds
    from, so a shared config would be corrupted by concurrent checks.
    """
    import json

    saved_name = json.loads((folder / "adapter_config.json").read_text()).get("name", "")
    if not isinstance(saved_name, str) or not saved_name:
        raise InvalidAdapter("adapter_config.json has no adapter name")
    skeleton = _build(base_config, folder)
    groups = _probe_tensors(skeleton)
    size = sum(elements for _, elements in groups) * PARAM_ITEMSIZE
    if size > max_param_bytes:
        raise AdapterTooLarge(
            f"the adapter's parameters would take {size} bytes on this base model; "
            f"the cap is {max_param_bytes}"
        )
    saved = _saved_tensor_names(folder, saved_name)
    stray = sorted(saved - set(skeleton.state_dict()))
    if stray:
        raise BaseModelMismatch(
            f"adapter has {len(stray)} tensor(s) this base model has no place for, "
            f"e.g. {stray[0].replace(_PROBE, saved_name)}"
        )
    missing = sorted(min(names) for names, _ in groups if not names & saved)
    if missing:
        raise InvalidAdapter(
            f"adapter lacks {len(missing)} tensor(s) its config declares, "
            f"e.g. {missing[0].replace(_PROBE, saved_name)}"
        )
    return size
