"""One batch on the inference thread: make its adapters resident, run the forward passes.

The batch arrives as per-adapter segments. Normally all segments share one forward pass
(BatchSplit); when the resident budget cannot hold every adapter of the batch at once, the
segments are run in several passes, each over as many adapters as fit. A segment whose adapter
cannot be used (deleted, invalid, made for another base) fails alone; a forward pass that
raises fails the segments it carried; a row whose logits are NaN or infinite fails its own
request (`NonFiniteScores`, 422), never the JSON encoding of the answer. No HTTP here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapters_store import StoreError
from adapters_store.rendering import Head
from app.metrics import Metrics, observe_many
from app.serving.adapter_cache import AdapterCache, CacheFull, Resident
from app.serving.engine import Engine, Segment
from app.serving.errors import InferenceFailed, NonFiniteScores, ServiceError
from app.serving.planning import Item, Request, settle

log = logging.getLogger(__name__)


# Made per row or per request on the engine's hot path: plain slotted dataclasses (a frozen
# one's __init__ sets each field through object.__setattr__, ~3x the cost); never mutated.
@dataclass(slots=True)
class Outcome:
    """The result for one input: the head's logits, the adapter version and head that made them."""

    logits: list[float]
    version: int
    head: Head


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[list[Outcome] | BaseException]  # per segment
    started: float  # time.monotonic()
    seconds: float
    forward_s: tuple[float, ...] = ()  # each forward pass that ran (more than one: cache full)


@dataclass(slots=True)
class AdapterResult:
    adapter: str
    version: int
    labels: dict[int, str]
    logits: list[list[float]]  # per input (adapters_store.rendering turns them into scores)
    task: str = "single_label"
    thresholds: dict[int, float] | None = None

    @property
    def head(self) -> Head:
        return Head(self.labels, self.task, self.thresholds)


@dataclass(slots=True)
class Classified:
    results: list[AdapterResult]
    queue_ms: float
    inference_ms: float


def run_batch(
    engine: Engine, cache: AdapterCache, segments: Sequence[Segment], metrics: Metrics | None
) -> BatchResult:
    started = time.monotonic()
    outcomes: list[Any] = [None] * len(segments)
    group: list[tuple[int, Resident]] = []
    forwards: list[float] = []
    for index, segment in enumerate(segments):
        pinned = {segments[i].adapter for i, _ in group}
        try:
            try:
                resident = cache.ensure(segment.adapter, pinned=pinned)
            except CacheFull:
                forwards += _forward(engine, segments, group, outcomes, metrics)
                group = []
                resident = cache.ensure(segment.adapter)
        except (StoreError, ServiceError) as exc:
            outcomes[index] = exc
            continue
        except Exception:
            log.exception("loading adapter %r failed", segment.adapter)
            outcomes[index] = InferenceFailed("inference failed; see the server log")
            continue
        group.append((index, resident))
    forwards += _forward(engine, segments, group, outcomes, metrics)
    seconds = time.monotonic() - started
    return BatchResult(outcomes, started=started, seconds=seconds, forward_s=tuple(forwards))


def _forward(
    engine: Engine,
    segments: Sequence[Segment],
    group: list[tuple[int, Resident]],
    outcomes: list[Any],
    metrics: Metrics | None,
) -> list[float]:
    """One forward pass over `group`; its duration ([] when none ran, or it failed)."""
    if not group:
        return []
    started = time.perf_counter()
    try:
        logits = engine.forward([segments[i] for i, _ in group])
    except Exception:
        log.exception("forward pass failed for adapters %s", [r.name for _, r in group])
        failure = InferenceFailed("inference failed; see the server log")
        for index, _ in group:
            outcomes[index] = failure
        return []
    elapsed = time.perf_counter() - started
    for (index, resident), rows in zip(group, logits, strict=True):
        head = Head(resident.labels, resident.task, resident.thresholds)
        outcomes[index] = [Outcome(row, resident.version, head) for row in rows]
    if metrics:
        metrics.batch_size.observe(sum(len(segments[i].ids) for i, _ in group))
        metrics.batch_adapters.observe(len(group))
        metrics.inference_seconds.observe(elapsed)
    return [elapsed]


def deliver(
    items: Sequence[Item], outcome: Any, result: BatchResult, metrics: Metrics | None
) -> list[Item]:
    """Hand a pass's results (or its error) to the requests of `items`; the items to run
    again (`settle`: rows an older adapter version made)."""
    redo: list[Item] = []
    waits: list[float] = []
    for position, item in enumerate(items):
        request = item.request
        if request.done:
            continue
        waited = result.started - item.enqueued
        request.queue_ms = max(request.queue_ms, waited * 1000)
        request.inference_ms = max(request.inference_ms, result.seconds * 1000)
        if isinstance(outcome, BaseException):
            fail(request, outcome)
            continue
        waits.append(waited)
        row = outcome[position]
        if not all(map(math.isfinite, row.logits)):
            fail(request, _non_finite(item.adapter, row.version))
            continue
        redo += settle(item, row)
        if request.remaining == 0:
            request.done = True
            request.future.set_result(None)
    if metrics and waits:
        observe_many(metrics.queue_seconds, waits)
    return redo


def _non_finite(adapter: str, version: int) -> NonFiniteScores:
    return NonFiniteScores(
        f"adapter {adapter!r} (version {version}) gave a NaN or infinite score: its weights "
        "cannot be served; upload it again (uploads refuse non-finite weights)"
    )


def fail(request: Request, exc: BaseException) -> None:
    request.done = True
    if not request.future.done():
        request.future.set_exception(exc)


def assemble(
    outcomes: Sequence[Outcome],
    adapters: Sequence[str],
    n_texts: int,
    queue_ms: float,
    inference_ms: float,
) -> Classified:
    """Per adapter, the results of one request (outcomes ordered adapter-major)."""
    results = []
    for a, name in enumerate(adapters):
        rows = outcomes[a * n_texts : (a + 1) * n_texts]
        latest = rows[0]
        for row in rows:  # the newest (the first of them) if a replace raced
            if row.version > latest.version:
                latest = row
        head = latest.head
        logits = [row.logits for row in rows]
        results.append(AdapterResult(name, latest.version, head.labels, logits, head.task,
                                     head.thresholds))  # fmt: skip
    return Classified(results, queue_ms, inference_ms)


REPLAN_S = 0.1  # what the rest of a batch may still take when a request arrives mid-batch


async def run_passes(
    passes: list[list[Item]],
    run: Callable[[list[Item]], Awaitable[None]],
    arrived: Callable[[], bool],
) -> list[Item]:
    """Run a batch's `passes` in order: the rows left unrun, or [] when all ran.

    When `arrived()` (requests queued since the batch was cut) and the rest would take over
    `REPLAN_S` (at the last pass's time each), it stops: the rest goes back to the queue and is
    planned again with the newcomers, so a short request rides in the next pass instead of
    waiting for every pass of a batch cut into many (issue 28).

    A row goes back once at most (`Item.sent_back`): a batch holding rows that went back
    runs to its end. Passes run shortest first, so without that the longest texts of a busy
    queue's batches went back at every batch for as long as requests kept arriving (MiniLM's
    Zipf p99 was 1.5-3.1 s; 0.56-0.76 s with the rule). Running the passes of rows that went
    back first, before the rest of their batch, cost a 64-client MiniLM flood of one key a
    third of its answers while a light key was active (3 runs against 3; docs/benchmarks.md).
    """
    for k, items in enumerate(passes):
        started = time.monotonic()
        await run(items)
        rest = [item for later in passes[k + 1 :] for item in later]
        if not rest or any(item.sent_back for item in rest) or not arrived():
            continue
        if (time.monotonic() - started) * (len(passes) - k - 1) > REPLAN_S:
            for item in rest:
                item.sent_back = True
            return rest
    return []
