"""The request queue's deadlines: one sweep every SWEEP_S fails what is past its deadline and
forgets what finished; no timer per request is left behind."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.metrics import Metrics
from app.serving.errors import RequestTimeout
from app.serving.planning import Limits
from app.serving.requests import SWEEP_S, RequestQueue


def test_the_sweep_fails_what_is_past_its_deadline_and_forgets_the_rest():
    metrics = Metrics()

    async def scenario():
        queue = RequestQueue(Limits(32, 4096, 0.005, 64, timeout_s=0.2), metrics)
        started = time.monotonic()
        late = queue.enqueue([[1, 2]], ["a"])
        dropped = queue.enqueue([[3]], ["a"])
        queue.drop(dropped)  # its client went away: not a timeout
        with pytest.raises(RequestTimeout):
            await late.future
        waited = time.monotonic() - started
        await asyncio.sleep(2 * SWEEP_S)
        return waited, queue

    waited, queue = asyncio.run(scenario())
    assert 0.2 <= waited < 0.2 + SWEEP_S + 0.5  # at its deadline, within a sweep (loaded box)
    assert not queue.in_flight and queue._sweep is None  # nothing held, no timer armed
    timeouts = metrics.rejected.labels("timeout")._value.get()
    assert timeouts == 1  # the late one only
