"""The one thread that owns the model: forward passes, and exclusive work between them; a
light key's short pass between two layers of a long one (`app.serving.preempt`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache
from app.serving.decode import stamp_of
from app.serving.engine import Engine, Segment
from app.serving.errors import InferenceFailed
from app.serving.passes import BatchResult, fail, run_batch
from app.serving.planning import Item, group_segments
from app.serving.preempt import Preemption

log = logging.getLogger(__name__)
T = TypeVar("T")
Groups = list[tuple[str, list[int]]]
Ran = tuple[Groups, BatchResult]
NestedDone = Callable[[list[Item], "Ran | None"], None]


class InferenceThread:
    def __init__(
        self,
        engine: Engine,
        cache: AdapterCache,
        metrics: Metrics | None,
        nested_done: NestedDone | None = None,
    ) -> None:
        """`nested_done(rows, ran)` (event loop) gets each nested pass's rows and result, or
        None where they could not run nested; without it no pass is nested."""
        self.engine, self.cache, self.metrics = engine, cache, metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._nested_done = nested_done
        self._loop: asyncio.AbstractEventLoop | None = None
        self.preemption = Preemption(self._nested)
        if nested_done is not None:
            engine.between_layers(self.preemption.poll)

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the inference thread, between passes (loads, unloads, checks)."""
        loop = self._loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def run_pass(self, batch: list[Item]) -> Ran | None:
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

    def _nested(self, rows: list[Item]) -> None:
        """Between two layers of a pass: `rows` as a pass of their own where they can run
        there (`app.serving.preempt`); the result (or None) goes to the event loop."""
        groups = group_segments([item.adapter for item in rows])
        names = [name for name, _ in groups]
        ran = None
        if self.engine.nestable(names) and all(map(self._in_place, names)):
            segments = [Segment(name, [rows[i].ids for i in part]) for name, part in groups]
            try:
                ran = groups, run_batch(self.engine, self.cache, segments, self.metrics)
            except Exception:  # a bug: the rows go back to the queue, the outer pass goes on
                log.exception("nested pass of %d texts failed", len(rows))
        if self.metrics and ran is not None:
            self.metrics.nested_passes.inc()
        assert self._loop is not None and self._nested_done is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: the service stopped
            self._loop.call_soon_threadsafe(self._nested_done, rows, ran)

    def _in_place(self, name: str) -> bool:
        """Whether the store's version of `name` is in its slot: `AdapterCache.ensure` finds
        it there and activates nothing (a slot is released when its adapter leaves the
        device; adapters outside slots are never `nestable`)."""
        return self.cache.slots.bound(name, stamp_of(self.cache.store, name))

    async def shutdown(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, True)
