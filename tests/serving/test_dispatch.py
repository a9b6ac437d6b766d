"""When a batch is cut (`Batcher`, `planning.dispatch_delay`): it waits for as many rows as
were in the engine lately, queued and running, so a closed loop of clients shares one pass."""

from __future__ import annotations

import asyncio

from adapters_store import AdapterStore
from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher
from app.serving.engine import Engine
from app.serving.planning import Limits


def test_two_halves_of_a_closed_loop_merge_into_one_pass(tiny_model_dir, factory, tmp_path):
    """32 clients, then 32 more while the first pass runs; each asks again as soon as it is
    answered. Waiting only for the last batch's size kept them as two batches of 32 that
    alternate, each queued while the other ran; the engine's recent concurrency (64) merges
    them: after the first pass, passes carry all 64."""
    engine = Engine.load(base_model=str(tiny_model_dir), max_length=64)
    store = AdapterStore(tmp_path / "adapters")
    factory.add_to_store(store, "alpha", seed=1)
    cache = AdapterCache(engine=engine, store=store, max_count=4, max_bytes=1 << 30)
    limits = Limits(max_batch_size=64, max_batch_tokens=1 << 16, max_wait_s=0.2, max_queue=256,
                    timeout_s=60.0)  # fmt: skip
    metrics = Metrics()
    sizes: list[int] = []
    forward = engine.forward

    def counted(segments):
        sizes.append(sum(len(s.ids) for s in segments))
        return forward(segments)

    engine.forward = counted  # a spy: the real forward runs

    async def client(batcher: Batcher, rounds: int) -> None:
        for _ in range(rounds):
            await batcher.classify(texts=["the same short text"], adapters=["alpha"])

    async def scenario() -> None:
        batcher = Batcher(engine=engine, cache=cache, store=store, limits=limits, metrics=metrics)
        await batcher.start()
        await batcher.calibration
        sizes.clear()  # the warm-up's passes
        first = [asyncio.create_task(client(batcher, 12)) for _ in range(32)]
        while not sizes:  # the first half's pass runs: the second half queues behind it
            await asyncio.sleep(0.0005)
        second = [asyncio.create_task(client(batcher, 12)) for _ in range(32)]
        try:
            await asyncio.wait_for(asyncio.gather(*first, *second), 60)
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert sum(sizes) == 64 * 12
    # The first half's pass, then all 64 (the last pass may be cut short): measured 2 passes
    # that are not 64, against 12 of 18 with the last batch's size for the next one's.
    assert sum(size != 64 for size in sizes) <= 3, sizes
