"""Which adapters keep their own Prometheus label (`app.metrics`): the busiest ones.

A server of thousands of adapters cannot give each its own series (every series costs the
scraper memory), so `TopAdapters` follows the traffic with a bounded counter (the
space-saving algorithm: at most `capacity` names, a new name takes the place of the least
counted one and inherits its count) and re-ranks every `window` observations: the `size`
names with the most texts keep a label (a name already labelled counts double in that
ranking, so that near-ties do not flip labels back and forth), counts are then halved so
that recent traffic weighs most. Until the first re-ranking, the first `size` names seen
get a label, so a server with fewer adapters than `size` labels all of them at once.
A name that loses its label is passed to `on_drop` (its series are removed).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

OTHER = "other"


class TopAdapters:
    def __init__(
        self,
        size: int,
        *,
        window: int | None = None,
        capacity: int | None = None,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.size = size
        self.window = window or max(1000, 50 * size)
        self.capacity = capacity or max(64, 4 * size)
        self.on_drop = on_drop
        self.counts: dict[str, float] = {}
        self.labelled: set[str] = set()
        self._seen = 0

    def label(self, name: str) -> str:
        """`name` when it has its own label now, else `other`."""
        return name if name in self.labelled else OTHER

    def count(self, name: str, weight: float = 1.0) -> None:
        """Traffic for `name` (e.g. its texts in one answered request)."""
        counts = self.counts
        if name in counts:
            counts[name] += weight
        elif len(counts) < self.capacity:
            counts[name] = weight
        else:  # space-saving: replace the least counted name, keep its count as a floor
            victim = min(counts, key=counts.__getitem__)
            counts[name] = counts.pop(victim) + weight
        if len(self.labelled) < self.size and name not in self.labelled:
            self.labelled.add(name)
        self._seen += 1
        if self._seen >= self.window:
            self.rerank()

    def rerank(self) -> None:
        """Give labels to the `size` busiest names (incumbents favoured); decay the counts."""
        self._seen = 0
        labelled = self.labelled

        def weight(name: str) -> float:
            return self.counts[name] * (2 if name in labelled else 1)

        top = set(heapq.nlargest(self.size, self.counts, key=weight))
        dropped = labelled - top
        self.labelled = top
        if self.on_drop is not None:
            for name in sorted(dropped):
                self.on_drop(name)
        self.counts = {k: v / 2 for k, v in self.counts.items() if v >= 1}
