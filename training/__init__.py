"""Offline training: train adapters (or fully fine-tune for comparison), evaluate, store them.

`train_adapter` and `validate_config` import the ML stack on first use, so that importing
`training` (e.g. for TrainConfig in the API process) stays cheap.
"""

from __future__ import annotations

from typing import Any

from training.config import TrainConfig
from training.errors import TrainingCancelled, TrainingError

__all__ = ["TrainConfig", "TrainingCancelled", "TrainingError", "train_adapter", "validate_config"]


def __getattr__(name: str) -> Any:
    if name == "train_adapter":
        from training.trainer import train_adapter

        return train_adapter
    if name == "validate_config":
        from training.validation import validate_config

        return validate_config
    raise AttributeError(f"module 'training' has no attribute {name!r}")
