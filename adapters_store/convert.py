"""PyTorch-pickle adapter weights -> safetensors, without ever running a pickle's code.

`model.save_adapter(dir, name)` without `use_safetensors=True` (and most AdapterHub uploads)
write `pytorch_adapter.bin` and `pytorch_model_head.bin`. They are read with
`torch.load(..., weights_only=True)`, PyTorch's restricted unpickler that builds tensors and
plain containers and refuses any other global (so a pickle that would run code is refused
before it runs), must hold a flat `{str: Tensor}` dict, and are rewritten as safetensors. Any
other pickle file stays refused by validation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from adapters_store import format as fmt
from adapters_store.errors import InvalidAdapter

PICKLED_WEIGHTS = {
    "pytorch_adapter.bin": fmt.ADAPTER_WEIGHTS,
    "pytorch_model_head.bin": fmt.HEAD_WEIGHTS,
}


def needs_conversion(folder: Path) -> bool:
    return any((folder / name).is_file() for name in PICKLED_WEIGHTS)


def load_pickled_weights(path: Path) -> dict:
    """A flat {name: tensor} dict from a .bin file, via the weights-only unpickler."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for forbidden globals; others for junk
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidAdapter(
            f"{path.name} is refused: it is not a plain weights file ({first[:200]})"
        ) from None
    if not isinstance(state, dict) or not state:
        raise InvalidAdapter(f"{path.name} must hold a non-empty dict of tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise InvalidAdapter(f"{path.name} must map tensor names to tensors only")
    return state


def converted_copy(src: Path, dest: Path) -> Path:
    """Copy `src` into the empty folder `dest`, turning its .bin weights into safetensors.

    Refuses a folder holding both a .bin file and the safetensors file it would become.
    Other files are copied as they are (validation then judges them).
    """
    from safetensors.torch import save_file

    for entry in src.iterdir():
        if entry.is_symlink() or not entry.is_file():
            raise InvalidAdapter(f"{entry.name}: only regular files are allowed")
    for pickled, safe in PICKLED_WEIGHTS.items():
        if (src / pickled).is_file() and (src / safe).is_file():
            raise InvalidAdapter(f"both {pickled} and {safe} are present; keep one")
    for entry in src.iterdir():
        target = PICKLED_WEIGHTS.get(entry.name)
        if target is None:
            shutil.copyfile(entry, dest / entry.name)
            continue
        state = load_pickled_weights(entry)
        # safetensors refuses shared or strided storage: one contiguous copy per tensor.
        tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(dest / target), metadata={"format": "pt"})
    return dest
