"""A cheap, stable fingerprint of a base model's weights.

The fingerprint hashes every base parameter's name and shape plus a strided sample of its
values (as float32), so two checkpoints of the same architecture but different weights differ,
while loading the same checkpoint twice gives the same string. Compute it on the model as
loaded (float32), before any cast to half precision. Adapter and head parameters are skipped,
so the fingerprint does not change when adapters come and go.
"""

from __future__ import annotations

import hashlib
from typing import Any

from adapters_store.methods import is_base_parameter

SAMPLE = 1024
__all__ = ["fingerprint_model", "is_base_parameter"]


def fingerprint_model(model: Any) -> str:
    """sha256 (first 16 hex digits) over base parameter names, shapes and sampled values."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if not is_base_parameter(name):
                continue
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLE)
            sample = flat[::step][:SAMPLE].to(device="cpu", dtype=torch.float32)
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
