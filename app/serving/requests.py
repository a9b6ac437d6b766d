"""The batcher's queue of requests: admission, deadlines, results and cancellation.

A request is admitted whole or not at all (`check_room`: RequestTooLarge, QueueFull), queued
as one item per (adapter, text), and failed at its deadline by one sweep of the event loop
every SWEEP_S over the requests in flight (no task and no timer per request: the engine
process queues thousands a second from a socket callback, and scheduling and cancelling a
timer took ~2 us a request, ~4% of its event loop's work). Its future
completes when every item has a result; `finish` turns it into a `Classified`, `drop` takes
the items of a request nobody waits for out of the queue before any forward. Each request's
tenant and shape are noted (`app.serving.slicing.RecentTenants`): the batcher slices its
passes while several tenants contend.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable, Sequence

from app.metrics import Metrics
from app.serving import planning
from app.serving.errors import QueueFull, RequestTimeout, check_room
from app.serving.passes import Classified, assemble, fail
from app.serving.planning import Item, Limits, Request, Timing
from app.serving.slicing import RecentTenants

SWEEP_S = 0.1  # the most a request fails later than its deadline


class RequestQueue:
    def __init__(self, limits: Limits, metrics: Metrics | None) -> None:
        self.limits, self.metrics = limits, metrics
        self.items: deque[Item] = deque()
        self.tokenizing = 0  # texts x adapters of requests being tokenised (count as queued)
        self.wake = asyncio.Event()  # set when items arrive: the batcher's loop looks
        self.arrivals = 0  # requests queued so far (a batch cut into slow passes re-plans)
        self.recent = RecentTenants()  # who queued lately: contending tenants get time slices
        self.in_flight: set[Request] = set()  # queued, not finished: the sweep checks them
        self._sweep: asyncio.TimerHandle | None = None

    def check_room(self, n: int) -> None:
        try:
            check_room(n, waiting=len(self.items) + self.tokenizing, cap=self.limits.max_queue)
        except QueueFull:
            self.count("queue_full")
            raise

    def enqueue(
        self, ids: list[list[int]], adapters: Sequence[str], *, tenant: Hashable = None,
        deadline: float | None = None,
    ) -> Request:  # fmt: skip
        """Queue ids whose adapters are read already; raises when there is no room."""
        now = time.monotonic()
        deadline = deadline or now + self.limits.timeout_s
        self.check_room(len(ids) * len(adapters))
        loop = asyncio.get_running_loop()
        request = planning.new_request(
            loop.create_future(), ids, adapters, deadline=deadline, tenant=tenant
        )
        self.in_flight.add(request)
        if self._sweep is None:
            self._sweep = loop.call_later(SWEEP_S, self._expire_due)
        self.items.extend(request.items)
        self.arrivals += 1
        self.recent.note(tenant, len(request.items), max(map(len, ids), default=0), now)
        self.wake.set()  # the loop updates the queue-depth gauge
        return request

    def _expire_due(self) -> None:
        """Fail the requests past their deadline; forget the finished ones (the sweep)."""
        self._sweep, now = None, time.monotonic()
        for request in [r for r in self.in_flight if r.done or r.deadline <= now]:
            self.in_flight.discard(request)
            if not request.done and not request.future.done():  # (done: answered or dropped)
                fail(request, self.timed_out())
        if self.in_flight:
            self._sweep = asyncio.get_running_loop().call_later(SWEEP_S, self._expire_due)

    def finish(
        self, request: Request, adapters: Sequence[str], n_texts: int, timing: Timing | None
    ) -> Classified:
        """The Classified of a completed request, or its error raised; `timing` filled in."""
        self.drop(request, timing)
        error = request.future.exception()
        if error is not None:
            raise error
        return assemble(request.results, adapters, n_texts, request.queue_ms, request.inference_ms)

    def drop(self, request: Request, timing: Timing | None = None) -> None:
        """Nobody waits for `request` any more: its queued items go before any forward."""
        self.in_flight.discard(request)
        request.done = True
        if request.remaining > 0 and any(item.request is request for item in self.items):
            self.items = deque(item for item in self.items if item.request is not request)
        if timing is not None:
            timing.inference_ms = request.inference_ms
            waited = (time.monotonic() - request.items[0].enqueued) * 1000 if request.items else 0
            timing.queue_ms = request.queue_ms if request.inference_ms > 0 else waited

    def timed_out(self) -> RequestTimeout:
        self.count("timeout")
        limit = self.limits.timeout_s
        return RequestTimeout(f"no result within {limit:g} s; the service is overloaded")

    def expire(self, expired: list[Item]) -> None:
        for item in expired:
            if not item.request.done:
                self.count("timeout")
                fail(item.request, RequestTimeout("the request timed out in the queue"))

    def requeue(self, items: list[Item]) -> None:
        """Run `items` again, first (an adapter was replaced between passes of a request)."""
        self.items.extendleft(reversed(items))
        self.gauge()
        self.wake.set()

    def take(self, items: list[Item]) -> None:
        """Take `items` out of the queue to run now (`app.serving.preempt`)."""
        gone = set(map(id, items))
        self.items = deque(item for item in self.items if id(item) not in gone)
        self.gauge()

    def fail_all(self, exc: BaseException) -> None:
        while self.items:
            fail(self.items.popleft().request, exc)
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def gauge(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(len(self.items))

    def count(self, reason: str) -> None:
        if self.metrics:
            self.metrics.rejected.labels(reason).inc()
