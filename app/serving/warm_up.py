"""The warm-up before the service says it is ready: nothing a first request would wait for.

`warm_up(costs, stop)` blocks; the batcher runs it on the inference thread at start-up (the
Ray replica in its constructor, before Ray routes to it), and readiness waits for it:

- the first forward (allocator, kernels; on a GPU, CUDA's set-up) and the pass cost model's
  calibration within its budget (`DeviceCosts.calibrate`; its first forward is the warm-up
  one). Without calibration, one forward of the smallest shape;
- then what start-up built (the model, torch, transformers: ~500k objects with the tiny model)
  leaves the cyclic GC's full collections (`gc.freeze`). Each full collection walks every
  tracked object with the GIL held, stalling the event loop and the forward alike: 0.2-1.2 s
  here, once every few thousand requests (issue 28's tail). Frozen without a full collection
  first (that would be one such stall, in a process already serving, e.g. the tests'): what
  start-up left as cyclic garbage stays. `thaw` undoes it when the batcher stops.

A failure is logged and the service serves anyway (planning with a fixed pass overhead).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from adapters_store import AdapterStore
from adapters_store.format import any_adapter_name
from app.serving.adapter_cache import AdapterCache
from app.serving.cost_learning import DeviceCosts
from app.serving.costs import forward_timer
from app.serving.engine import Engine, Segment

log = logging.getLogger(__name__)


def warm_up(costs: DeviceCosts, stop: Callable[[], bool]) -> None:
    started = time.monotonic()
    try:
        if costs.limits.calibrate:
            costs.calibrate(stop)
        else:
            forward_timer(costs.engine)(1, min(16, costs.engine.max_length))
    except Exception:
        log.exception("warm-up failed; serving without it")
    log.info(
        "warm-up done in %.2f s (%d objects kept out of the GC's full collections)",
        time.monotonic() - started,
        freeze_heap(),
    )


def rehearse(engine: Engine, cache: AdapterCache, store: AdapterStore) -> None:
    """A first request rehearsed: an adapter of the store (the first folder listed) activated,
    run on one short text and forgotten, uncounted (`AdapterCache.rehearse`). The adapter
    path's first calls cost the tiny model's first request ~6 ms more than a new adapter on a
    warm server (in process, measured); paid here instead. Nothing when the store is empty or
    the adapter cannot be used (another base's, a broken one): the first request pays then."""
    try:
        name = any_adapter_name(store.root)  # not the listing index: it may be rebuilding
        if name is not None:
            ids, started = engine.tokenize(["warm up"]), time.monotonic()
            cache.rehearse(name, lambda: engine.forward([Segment(name, ids)]))
            log.info("rehearsed a first request (adapter %s, %.1f ms; uncounted, forgotten)",
                     name, (time.monotonic() - started) * 1000)  # fmt: skip
    except Exception as exc:
        log.info("no first request rehearsed: %s", exc)


def freeze_heap() -> int:
    """Keep what start-up built out of the GC's full collections; -> objects frozen. The API
    processes of app.procs call it too, once their tokenizer loaded (transformers' import)."""
    gc.collect(1)  # the young generations only: a full collection would stall every thread
    gc.freeze()
    return gc.get_freeze_count()


def thaw() -> None:
    """Give what `warm_up` froze back to the GC (the service stops)."""
    gc.unfreeze()
