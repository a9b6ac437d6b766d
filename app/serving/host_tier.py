"""The host tier: decoded adapters in host RAM, least recently used first, under a byte budget.

Filled by the loader thread (`AdapterCache.prefetch`) and by device evictions; emptied by the
inference thread when it moves an adapter onto the device. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from app.serving.decode import Decoded


class HostTier:
    def __init__(self, budget: int, *, on_drop: Callable[[], None] | None = None) -> None:
        self.budget = budget
        self._on_drop = on_drop
        self._items: OrderedDict[str, Decoded] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def put(self, decoded: Decoded) -> None:
        """Keep `decoded` (the newest); drop the least recent ones past the budget (never the
        one just put, so an adapter larger than the budget still reaches the device)."""
        with self._lock:
            self._pop(decoded.name)
            self._items[decoded.name] = decoded
            self._used += decoded.nbytes
            while self._used > self.budget and len(self._items) > 1:
                self._pop(next(iter(self._items)))
                if self._on_drop is not None:
                    self._on_drop()

    def pop(self, name: str) -> Decoded | None:
        with self._lock:
            return self._pop(name)

    def _pop(self, name: str) -> Decoded | None:
        decoded = self._items.pop(name, None)
        if decoded is not None:
            self._used -= decoded.nbytes
        return decoded
