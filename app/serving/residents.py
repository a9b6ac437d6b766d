"""What the adapter cache holds for one adapter on the device (app.serving.adapter_cache)."""

from __future__ import annotations

from dataclasses import dataclass

from app.serving.decode import Decoded


@dataclass(frozen=True)
class Resident:
    name: str
    version: int
    labels: dict[int, str]
    nbytes: int
    stamp: tuple[int, int]
    loaded_at: float
    task: str = "single_label"  # the manifest's (adapters_store.rendering)
    thresholds: dict[int, float] | None = None


@dataclass
class Device:
    decoded: Decoded  # tensors on the device ({} when the library holds them)
    resident: Resident
    library: bool
