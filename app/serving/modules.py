"""The adapters inside the engine's model: which module serves which store name. No HTTP.

Two ways an adapter is in the model: its own module, loaded by the library (`load_adapter`,
named by `module_name`), or a slot (`app.serving.slots`) that points at its tensors and is
mapped here by name (`bind`). Every method that changes the model runs on the inference thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from adapters_store import InvalidAdapter
from app.serving.onepass.support import ONEPASS_KEY


class AdapterModules:
    """Mixed into `Engine`: needs `model`, `device`, `dtype` and `_compats`."""

    model: Any
    device: Any
    dtype: Any
    _compats: dict[str, Any]
    _onepass: Any  # app.serving.onepass.runner.OnePass or None
    _compat: Any  # Engine._compat: module -> its Compat

    def _init_modules(self) -> None:
        self._bound: dict[str, str] = {}  # store name -> module, for adapters in slots
        self._keys: dict[str, Hashable] = {}  # store name -> body-pass key, once decoded
        self._slot_names = itertools.count()

    def has_adapter(self, name: str) -> bool:
        slot = self.module_of(name)
        return slot in self.model.adapters_config.adapters or slot in self.model.heads

    def module_of(self, name: str) -> str:
        """The module that serves store adapter `name`: its slot, else its own module."""
        return self._bound.get(name) or module_name(name)

    def new_slot_name(self) -> str:
        """A module name no store adapter maps to (`module_name` doubles every '_')."""
        return f"slot_{next(self._slot_names)}"

    def bind(self, name: str, module: str) -> None:
        """Serve `name` from slot `module` (whose tensors now hold `name`'s): its stacked
        copy, when one was kept (`unbind(keep=True)`), moves to the slot."""
        self._forget(module)
        self._bound[name] = module
        if getattr(self, "_onepass", None) is not None:
            self._onepass.bank.unpark(module_name(name), module)

    def unbind(self, name: str, *, keep: bool = False) -> None:
        """`name` leaves its slot. `keep`: it stays on the device with the same tensors (the
        slot goes to another adapter), so its stacked copy is kept, under its own module
        name, until it is bound again or unloaded (`unload_adapter` forgets it), the last
        `Bank.keep` of them: adapters that take turns in few slots (a Zipf tail) are
        copied once, not at every rebind."""
        module = self._bound.pop(name, None)
        if module is None:
            return
        if keep and getattr(self, "_onepass", None) is not None:
            self._onepass.bank.park(module, module_name(name))
        else:
            self._forget(module)

    def _forget(self, module: str) -> None:
        """The tensors behind `module` changed: drop its stacked copy (one-pass path)."""
        if getattr(self, "_onepass", None) is not None:
            self._onepass.forget(module)

    def stack(self, name: str) -> None:
        """Copy `name`'s tensors into the one-pass stacks now, when that path runs it (else
        its first pass would), so that `stack_bytes` counts them."""
        module = self.module_of(name)
        if self._onepass is not None and self._compat(module).key == ONEPASS_KEY:
            self._onepass.bank.ensure(module)

    def stack_bytes(self) -> int:
        """Bytes the one-pass stacks hold (spare rows and padding included)."""
        return 0 if self._onepass is None else self._onepass.bank.nbytes

    def load_adapter(self, name: str, path: Path) -> int:
        """Load a stored adapter + head as `name` (the library path); the bytes it added."""
        if not (path / "adapter_config.json").is_file():
            # Without this check the library would look the path up on the hub.
            raise InvalidAdapter(f"adapter files of {name!r} not found at {path}")
        self.unload_adapter(name)  # also forgets its compat key
        try:
            added = self.load_module(module_name(name), path)
        except Exception as exc:
            self.unload_adapter(name)
            reason = " ".join(str(exc).split())[:300]
            raise InvalidAdapter(f"adapter {name!r} cannot be loaded: {reason}") from None
        return sum(t.numel() * t.element_size() for t in added)

    def load_module(self, module: str, path: Path) -> list[Any]:
        """The library's `load_adapter` of `path` as `module` (+ head), moved to the model's
        device and dtype, in eval mode; the tensors it added. Walks the whole model: slow."""
        self._forget(module)
        before = {id(t) for _, t in self._named_tensors()}
        self.model.load_adapter(str(path), load_as=module, use_safetensors=True)
        added = []
        for _, tensor in self._named_tensors():
            if id(tensor) not in before:
                tensor.data = tensor.data.to(device=self.device, dtype=self.dtype)
                added.append(tensor)
        for name, sub in self.model.named_modules():
            if sub.training and f".{module}." in f".{name}.":
                sub.eval()
        return added

    def build_slot(self, module: str, config: dict, head: dict) -> list[Any]:
        """A new adapter + head `module` built from configs (no weights read: the slot is
        pointed at an adapter's tensors next), on the model's device, in eval mode; the
        tensors it added (those under a module path holding the segment `module`)."""
        self.model.add_adapter(module, config=dict(config))
        self.model.add_prediction_head_from_config(module, dict(head))
        added: list[Any] = []
        seen: set[int] = set()
        for name, sub in self.model.named_modules():
            if module not in name.split("."):
                continue
            sub.eval()
            for tensor in [*sub._parameters.values(), *sub._buffers.values()]:
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    dtype = self.dtype if tensor.is_floating_point() else tensor.dtype
                    tensor.data = tensor.data.to(device=self.device, dtype=dtype)
                    added.append(tensor)
        return added

    def unload_module(self, module: str) -> bool:
        """Delete adapter + head `module` from the model; idempotent."""
        removed = False
        self._forget(module)
        self._compats.pop(module, None)
        if module in self.model.adapters_config.adapters:
            self.model.delete_adapter(module)
            removed = True
        if module in self.model.heads:
            self.model.delete_head(module)
            removed = True
        return removed

    def unload_adapter(self, name: str) -> bool:
        """Delete the adapter and its head (library path); idempotent. True when removed."""
        return self.unload_module(module_name(name))

    def batch_key(self, adapter: str) -> Hashable:
        """Which body pass `adapter`'s rows run in (equal keys share one); None: not known yet.

        Read-only, safe from any thread: the key is noted when the adapter is decoded
        (`note_key`, from its config) or first run, and forgotten when it leaves memory.
        """
        key = self._keys.get(adapter)
        if key is not None:
            return key
        compat = self._compats.get(module_name(adapter))
        return None if compat is None else compat.key

    def note_key(self, adapter: str, key: Hashable | None) -> None:
        if key is None:
            self._keys.pop(adapter, None)
        else:
            self._keys[adapter] = key

    def _named_tensors(self) -> list[tuple[str, Any]]:
        return [*self.model.named_parameters(), *self.model.named_buffers()]


def module_name(name: str) -> str:
    """The adapter's name inside the model: torch module names cannot hold '.'.

    Store names use [a-z0-9._-]; escaping '_' as '__' and '.' as '_d' is one-to-one, so two
    store names never share a module (plain '.' -> '_' would merge 'a.b' with 'a_b').
    """
    return name.replace("_", "__").replace(".", "_d")
