"""The one thread that owns the model: forward passes, and exclusive work between them."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache
from app.serving.engine import Engine, Segment
from app.serving.errors import InferenceFailed
from app.serving.passes import BatchResult, fail, run_batch
from app.serving.planning import Item, group_segments

log = logging.getLogger(__name__)
T = TypeVar("T")
Groups = list[tuple[str, list[int]]]


class InferenceThread:
    def __init__(self, engine: Engine, cache: AdapterCache, metrics: Metrics | None) -> None:
        self.engine, self.cache, self.metrics = engine, cache, metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the inference thread, between passes (loads, unloads, checks)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def run_pass(self, batch: list[Item]) -> tuple[Groups, BatchResult] | None:
        """One batch, as per-adapter segments, through `run_batch`: its row groups and result.

        A bug (not a model error: run_batch catches those) fails the batch's requests and
        returns None; the service keeps serving.
        """
        groups = group_segments([item.adapter for item in batch])
        segments = [Segment(name, [batch[i].ids for i in rows]) for name, rows in groups]
        try:
            result = await self.run(run_batch, self.engine, self.cache, segments, self.metrics)
        except Exception:
            log.exception("batch of %d texts failed", len(batch))
            failure = InferenceFailed("inference failed; see the server log")
            for item in batch:
                fail(item.request, failure)
            return None
        return groups, result

    async def shutdown(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, True)
