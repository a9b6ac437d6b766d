"""The engine as the use case sees it: a small protocol (as vLLM's `EngineClient`).

app.serving.batcher.Batcher implements it in process, app.cluster.router.ClusterBatcher over Ray
replicas; an engine-process client would be a third. app.inference imports no implementation.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol

from app.serving.engine import Text
from app.serving.passes import Classified
from app.serving.planning import Timing


class Classifier(Protocol):
    """Classifies texts with adapters (bare names or `name@N`); raises domain errors."""

    @property
    def running(self) -> bool:
        """Whether it takes requests (the base model is loaded and warmed up, the loop runs)."""
        ...

    async def classify(
        self,
        *,
        texts: Sequence[Text],
        adapters: Sequence[str],
        truncation: bool = True,
        timing: Timing | None = None,
        tenant: Hashable = None,
    ) -> Classified:
        """Cancelling the call drops its queued texts; `timing` is filled in also on failure."""
        ...
