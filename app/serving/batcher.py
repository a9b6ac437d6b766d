"""Dynamic batching: concurrent requests share forward passes; one thread owns the model.

Requests are tokenised in turns (`app.serving.tokenizing`; `classify_ids` takes ids tokenised
elsewhere: app.procs) while their cold adapters are read (`AdapterCache.prefetch`), then split
into items (one text for one adapter) in a bounded FIFO queue. An asyncio loop cuts batches,
plans their passes (`app.serving.planning`, with this device's cost model: timed in the warm-up
that readiness waits for, `app.serving.warm_up`, re-fitted live, `app.serving.cost_learning`;
while API keys contend, batches are cut to short time slices, `app.serving.slicing`) and
hands each pass to the single inference thread (`app.serving.passes.run_batch`). A light key's
request that arrives while another key's pass runs may run between two of its layers
(`app.serving.preempt`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

from adapters_store import AdapterStore
from app.metrics import Metrics
from app.serving import planning
from app.serving.adapter_cache import AdapterCache
from app.serving.cost_learning import DeviceCosts
from app.serving.costs import PassCost
from app.serving.engine import Engine, Text
from app.serving.errors import RequestTimeout, ServiceStopping
from app.serving.fairness import FairShare, late_rows, refund, warm_first
from app.serving.inference_thread import InferenceThread
from app.serving.passes import BatchResult, Classified, deliver, run_passes
from app.serving.planning import Item, Limits, Timing
from app.serving.requests import RequestQueue
from app.serving.slicing import slice_budget
from app.serving.tokenizing import Tokenizer
from app.serving.warm_up import rehearse, thaw, warm_up

log = logging.getLogger(__name__)
T = TypeVar("T")


class Batcher:
    def __init__(
        self,
        *,
        engine: Engine,
        cache: AdapterCache,
        store: AdapterStore,
        limits: Limits,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.store = store
        self.limits = limits
        self.metrics = metrics
        self.requests = RequestQueue(limits, metrics)  # admission, deadlines, results
        self._fair = FairShare()  # tenants' shares of the queue (app.serving.fairness)
        # The rows a batch waits for (`dispatch_delay`): the most queued + running since the
        # last cut (its size alone let 64 clients settle into two alternating batches of 32).
        self._expected, self._running = 1, 0
        self._task: asyncio.Task | None = None
        self.costs = DeviceCosts(engine, limits)
        self.calibration: asyncio.Task | None = None  # the warm-up, while it runs
        self.warmed = False
        self._stopping = False
        nested_done = self._nested_done if limits.preempt else None
        self._inference = InferenceThread(engine, cache, metrics, nested_done)
        self._left: list[Item] = []  # offered to the last pass, which ended first
        self._tokenizer = Tokenizer(engine)

    @property
    def running(self) -> bool:
        """Takes requests: the loop runs and the warm-up has ended (what readiness reads)."""
        return self.warmed and self._task is not None and not self._task.done()

    @property
    def queued(self) -> int:
        return len(self.requests.items)

    async def start(self) -> None:
        """Start the loop, and the warm-up unless `warm_up` ran already (again: no-op)."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._loop(), name="batcher")
        if not self.warmed:
            self.calibration = asyncio.create_task(self.run_exclusive(self.warm_up))

    def warm_up(self) -> None:
        """Blocks (`app.serving.warm_up`): on the inference thread, or before `start`."""
        warm_up(self.costs, lambda: self._stopping)
        rehearse(self.engine, self.cache, self.store)
        self.warmed = True

    @property
    def pass_cost(self) -> PassCost:
        """The model the passes are planned with now."""
        return self.costs.model

    async def stop(self) -> None:
        self._stopping = True
        for task in (self.calibration, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.requests.fail_all(ServiceStopping("the service is shutting down"))
        await self._inference.shutdown()
        self._tokenizer.close()
        self.cache.close()
        thaw()

    async def run_exclusive(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the inference thread (between batches): loads, unloads, checks."""
        return await self._inference.run(fn, *args, **kwargs)

    async def classify(
        self,
        *,
        texts: Sequence[Text],
        adapters: Sequence[str],
        truncation: bool = True,
        timing: Timing | None = None,
        tenant: Hashable = None,
    ) -> Classified:
        """Classify `texts` with each adapter; raises domain errors (not found, full, ...).
        Cancelling the call drops its queued texts before any forward. `timing` is filled in
        also on failure. Tenants (API key ids) share a contended queue fairly."""
        deadline = time.monotonic() + self.limits.timeout_s
        size = len(texts) * len(adapters)
        self.requests.check_room(size)
        try:
            # Cold adapters are read from the store on the loader thread meanwhile: the
            # inference thread never waits for a disk, and unknown names fail here (404).
            decoding = self._prefetch(adapters)
            self.requests.tokenizing += size  # counted against the queue's cap while tokenised
            tokenizing = time.monotonic()
            try:
                ids = await self._tokenize(texts, truncation, deadline)
            finally:
                if timing is not None:
                    timing.tokenize_ms = (time.monotonic() - tokenizing) * 1000
                self.requests.tokenizing -= size
                if decoding is not None:
                    await decoding
        except asyncio.CancelledError:
            self.requests.count("cancelled")
            raise
        return await self._submit(ids, adapters, deadline, timing, tenant)

    async def classify_ids(self, *, ids, adapters, timing=None, tenant=None) -> Classified:
        """`classify` of ids tokenised elsewhere (app.procs): same queue, deadline, cancel."""
        deadline = time.monotonic() + self.limits.timeout_s
        self.requests.check_room(len(ids) * len(adapters))
        return await self._submit(ids, adapters, deadline, timing, tenant, self._prefetch(adapters))

    def _prefetch(self, adapters: Sequence[str]) -> asyncio.Future | None:
        cold = [name for name in adapters if not self.cache.in_memory(name)]
        return asyncio.ensure_future(self.cache.prefetch(cold)) if cold else None

    async def _submit(self, ids, adapters, deadline, timing, tenant, decoding=None) -> Classified:
        try:
            if decoding is not None:
                await decoding
            request = self.enqueue(ids, adapters, tenant=tenant, deadline=deadline)
            try:
                await asyncio.shield(request.future)  # results may still arrive: don't cancel it
            except asyncio.CancelledError:
                self.requests.drop(request, timing)
                raise
            except Exception:  # failed (timed out, ...): `finish` raises it, timing filled in
                pass
        except asyncio.CancelledError:
            self.requests.count("cancelled")
            raise
        return self.requests.finish(request, adapters, len(ids), timing)

    def enqueue(self, ids, adapters, *, tenant=None, deadline=None) -> planning.Request:
        """Queue ids whose adapters are in memory (`RequestQueue.enqueue`; its future completes
        with the results). While another key's pass runs, a light key's rows may run between
        two of its layers (`app.serving.preempt`)."""
        request = self.requests.enqueue(ids, adapters, tenant=tenant, deadline=deadline)
        self._expected = max(self._expected, len(self.requests.items) + self._running)
        self._offer([tenant])
        return request

    def _offer(self, tenants: Iterable[Hashable]) -> None:
        """While a pass runs, offer it the rows of each light key of `tenants` (armed only
        with `Limits.preempt`)."""
        self._inference.preemption.offer_light(self.requests, tenants)

    async def _tokenize(
        self, texts: Sequence[Text], truncation: bool, deadline: float
    ) -> list[list[int]]:
        try:
            return await self._tokenizer.tokenize(texts, truncation=truncation, deadline=deadline)
        except RequestTimeout:
            raise self.requests.timed_out() from None

    async def _loop(self) -> None:
        while True:
            await self.requests.wake.wait()
            queue = self.requests.items
            oldest = queue[0].enqueued if queue else time.monotonic()
            delay = planning.dispatch_delay(
                queued=len(queue),
                oldest_age=time.monotonic() - oldest,
                max_batch_size=self.limits.max_batch_size,
                max_wait=self.limits.max_wait_s,
                expected=self._expected,
            )
            if delay > 0:
                self.requests.gauge()
                self.requests.wake.clear()
                if delay != math.inf:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):  # no task per wait (wait_for's)
                            await self.requests.wake.wait()
                    self.requests.wake.set()  # re-check the queue either way
                continue
            now, cost = time.monotonic(), self.pass_cost  # tenants contend: time slices
            batch, expired = planning.collect(
                queue,
                now=now,
                max_batch_size=self.limits.max_batch_size,
                max_batch_tokens=self.limits.max_batch_tokens,
                key=self.engine.batch_key,
                fair=self._fair,
                budget=slice_budget(self.requests.recent.active(now), cost),
                cost=cost,
                slowdown=self.limits.slice_slowdown,
            )
            self.requests.expire(expired)
            self.requests.gauge()
            if not batch:
                continue
            self._expected = self._running = len(batch)
            try:
                await self._run_batch(batch)
            finally:
                self._running = 0

    async def _run_batch(self, batch: list[Item]) -> None:
        cost, key = self.pass_cost, self.engine.batch_key

        def plan(rows: list[int]) -> list[list[int]]:
            items = [batch[i] for i in rows]
            lengths, tenants = [len(i.ids) for i in items], [i.request.tenant for i in items]
            return planning.plan_batch(lengths, [key(i.adapter) for i in items], cost, tenants)

        cold = late_rows(batch, lambda name: self.cache.in_memory(name, device=True))
        passes = [[batch[i] for i in rows] for rows in warm_first(cold, plan)]
        arrivals = self.requests.arrivals
        rest = await run_passes(passes, self._run, lambda: self.requests.arrivals != arrivals)
        if rest:  # requests arrived mid-batch: the rest is planned again with them
            refund(rest, self._fair)  # its tokens are charged when it is taken again
            self.requests.requeue(rest)

    async def _run(self, batch: list[Item]) -> None:
        batch = [item for item in batch if not item.request.done]  # gone since collected
        if not batch:
            return
        preemption = self._inference.preemption
        if self.limits.preempt:
            preemption.arm(batch)
            self._offer(dict.fromkeys(item.request.tenant for item in self._left))
        try:
            ran = await self._inference.run_pass(batch)
        finally:
            self._left, nested = preemption.disarm()
            if self._left:  # offered, but the pass ended first: the batch's next pass may
                self.requests.requeue(self._left)
        if ran is None:
            return
        self._settle(batch, ran)
        result = ran[1]
        if not nested and not any(isinstance(o, BaseException) for o in result.outcomes):
            width = max(len(item.ids) for item in batch)  # every row ran: a pass of this shape
            self.costs.observe(len(batch), width, result.forward_s)

    def _settle(self, batch: list[Item], ran: Any) -> None:
        """Deliver a pass's results to its rows (`ran`: run_pass's answer)."""
        groups, result = ran
        for (_, rows), outcome in zip(groups, result.outcomes, strict=True):
            self._deliver([batch[i] for i in rows], outcome, result)

    def _nested_done(self, rows: list[Item], ran: Any) -> None:
        """A nested pass's result (None: its rows could not run nested and go back first)."""
        if ran is None:
            self.requests.requeue(rows)
        else:
            self._settle(rows, ran)

    def _deliver(self, items: list[Item], outcome: Any, result: BatchResult) -> None:
        redo = deliver(items, outcome, result, self.metrics)
        if redo:  # the adapter was replaced between passes of these requests: run them again
            log.info("adapter replaced mid-request: re-running %d texts", len(redo))
            self.requests.requeue(redo)
