"""Pre-built adapter slots: activating an adapter points a slot at its tensors; no modules built.

A slot is an adapter + head inside the model, under a name of its own (`slot_N`), built once
by the library (`add_adapter` + `add_prediction_head_from_config`, no weights read) from the
configs of the first adapter of its *slot key* (the adapter's config and head shape, less
fields that only act while training: `decode.slot_key`). Any
adapter of the same key is then activated by pointing the slot's parameters at its tensors
(already on the device, in the serving dtype: `param.data = tensor`, no copy) and mapping its
store name to the slot: about a microsecond per tensor instead of a module rebuild and a walk
of the whole model. A released slot points at an empty tensor, so it holds no memory. The
forward stays the library's own (AdapterSetup / BatchSplit over slot names), so outputs equal
the library running that adapter alone.

A slot is trusted only when the tensors the library built for it are exactly the tensors the
adapter's files hold (same objects by identity, same shapes and dtypes): then no state of a
previous occupant survives a copy but what the key fixes (config, head shape), which is equal
for every adapter of the key. An adapter whose files fail that check (a missing or extra
tensor, int32 weights stored before uploads were checked) takes the library path
(`Engine.load_adapter`) alone, as before slots existed, and is not tried again until its files
change; its key stays open to the adapters that do fit, whichever of them comes first.

Every method runs on the inference thread (the engine's owner).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Collection, Hashable
from dataclasses import dataclass, field
from typing import Any

from app.serving.decode import PLACEHOLDER, Decoded, stamp_of_path
from app.serving.engine import Engine
from app.serving.errors import ServiceError

log = logging.getLogger(__name__)


class CacheFull(ServiceError):
    """Every slot of the key is pinned by the batch being run: run it first, then retry."""

    code = "cache_full"


@dataclass(eq=False)
class Slot:
    module: str  # the adapter + head name inside the model
    key: Hashable
    params: dict[str, Any] = field(repr=False)  # canonical key -> the slot's own tensor
    shapes: dict[str, Any] = field(repr=False)  # canonical key -> (shape, dtype)
    occupant: str | None = None
    stamp: tuple[int, int] | None = None  # the occupant's manifest stamp
    used: int = 0  # tick of the last use, for LRU among a key's slots


class SlotPool:
    def __init__(self, engine: Engine, *, per_key: int) -> None:
        self.engine = engine
        self.per_key = per_key
        self._slots: dict[Hashable, list[Slot]] = {}
        self._bound: dict[str, Slot] = {}  # store name -> its slot
        self._misfits: dict[str, tuple[int, int]] = {}  # name -> stamp of files that do not map
        self._tick = itertools.count(1)

    @property
    def count(self) -> int:
        return sum(len(slots) for slots in self._slots.values())

    @property
    def misfits(self) -> set[str]:
        """The adapters whose files did not map onto a slot (they take the library path)."""
        return set(self._misfits)

    def usable(self, decoded: Decoded) -> bool:
        if decoded.slot_key is None:
            return False
        return self._misfits.get(decoded.name) != decoded.stamp

    def bound(self, name: str, stamp: tuple[int, int]) -> bool:
        """Is this version of `name` in a slot now? (touches the slot when it is)"""
        slot = self._bound.get(name)
        if slot is None or slot.stamp != stamp:
            return False
        slot.used = next(self._tick)
        return True

    def bind(self, decoded: Decoded, *, pinned: Collection[str] = ()) -> bool:
        """Put `decoded` (tensors on the model's device) in a slot; False: use the library.

        Raises CacheFull when every slot of its key holds an adapter in `pinned` and the key
        already has `per_key` slots.
        """
        if not self.usable(decoded):
            return False
        if self.bound(decoded.name, decoded.stamp):
            return True
        self.release(decoded.name)
        slots = self._slots.get(decoded.slot_key)
        if slots and not _fits(slots[0], decoded):
            return False  # not the tensors its config implies: the library decides
        slot = self._reusable(decoded.slot_key, pinned) or self._build(decoded)
        if slot is None:
            return False
        _point(slot, decoded.tensors)
        slot.occupant, slot.stamp, slot.used = decoded.name, decoded.stamp, next(self._tick)
        self._bound[decoded.name] = slot
        self.engine.bind(decoded.name, slot.module)
        return True

    def release(self, name: str, *, keep: bool = False) -> bool:
        """Unmap `name` from its slot (the slot stays, free); True when it was bound. `keep`:
        `name` stays on the device, unchanged (`Engine.unbind`)."""
        slot = self._bound.pop(name, None)
        if slot is None:
            return False
        slot.occupant = slot.stamp = None
        self.engine.unbind(name, keep=keep)
        _point(slot, None)
        return True

    def clear(self) -> None:
        """Delete every slot from the model (the base is then exactly as loaded)."""
        for name in list(self._bound):
            self.release(name)
        for slots in self._slots.values():
            for slot in slots:
                self.engine.unload_module(slot.module)
        self._slots.clear()

    def _reusable(self, key: Hashable, pinned: Collection[str]) -> Slot | None:
        """A free slot of `key`, else the least recently used one not pinned (evicted)."""
        slots = self._slots.get(key, [])
        free = next((s for s in slots if s.occupant is None), None)
        if free is not None:
            return free
        candidates = [s for s in slots if s.occupant not in pinned]
        if not candidates:
            if len(slots) >= self.per_key:
                raise CacheFull(f"all {len(slots)} slots of this adapter shape are in use")
            return None
        victim = min(candidates, key=lambda s: s.used)
        assert victim.occupant is not None
        self.release(victim.occupant, keep=True)  # it stays on the device, slotless
        return victim

    def _build(self, decoded: Decoded) -> Slot | None:
        """A new slot built by the library from `decoded`'s configs, checked against its
        tensors (every tensor the library built must be one of the file's, shape for shape)."""
        module = self.engine.new_slot_name()
        try:
            new = self.engine.build_slot(module, decoded.config or {}, decoded.head or {})
        except Exception:
            self.engine.unload_module(module)
            return None  # the library path will say why, for this adapter alone
        params = _mapped(self.engine.model, decoded, module)
        if params is None or {id(t) for t in params.values()} != {id(t) for t in new}:
            self.engine.unload_module(module)
            if stamp_of_path(decoded.path) == decoded.stamp:  # not a replace racing the read
                self._misfits[decoded.name] = decoded.stamp  # this adapter alone, not its key
                log.info("adapter %s: its files do not map onto its modules", decoded.name)
            return None
        shapes = {k: (p.shape, p.dtype) for k, p in params.items()}
        slot = Slot(module=module, key=decoded.slot_key, params=params, shapes=shapes)
        self._slots.setdefault(decoded.slot_key, []).append(slot)
        return slot


def _mapped(model: Any, decoded: Decoded, module: str) -> dict[str, Any] | None:
    """Canonical key -> the model's tensor of slot `module`; None when any is missing or
    shaped otherwise."""
    out = {}
    for key, tensor in decoded.tensors.items():
        name = key.replace(PLACEHOLDER, module)
        try:
            target = model.get_parameter(name)
        except AttributeError:
            try:
                target = model.get_buffer(name)
            except AttributeError:
                return None
        if target.shape != tensor.shape or target.dtype != tensor.dtype:
            return None
        out[key] = target
    return out


def _fits(slot: Slot, decoded: Decoded) -> bool:
    """Does `decoded` hold exactly the slot's tensors, shape for shape? (nothing of the
    previous occupant may survive the copy)"""
    if slot.shapes.keys() != decoded.tensors.keys():
        return False
    return all(slot.shapes[k] == (t.shape, t.dtype) for k, t in decoded.tensors.items())


def _point(slot: Slot, tensors: dict[str, Any] | None) -> None:
    """Point the slot's parameters at `tensors` (None: at empty tensors, holding nothing)."""
    for key, param in slot.params.items():
        param.data = tensors[key] if tensors is not None else param.data.new_empty(0)
