"""The quotas of one app (app/tenancy/quotas.py) without HTTP: defaults, the key's share of the
queue, the checks before the body, holds given back on failure and on cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.config import Settings
from app.security import KeyLimits, Principal
from app.tenancy.limiter import RateLimited, TooManyInFlight
from app.tenancy.quotas import Quotas


def quotas(tmp_path, **settings) -> Quotas:
    base = {"data_dir": tmp_path, "quota_refusal_delay_s": 0, "max_queue": 10}
    return Quotas(Settings(**{**base, **settings}))


def key(name: str = "k1", **limits) -> Principal:
    return Principal(name, frozenset({"classify"}), None, KeyLimits(**limits))


def test_keys_without_options_get_the_defaults(tmp_path):
    q = quotas(tmp_path, default_key_rps=3, default_key_inflight=7)
    assert q.limits(key()) == KeyLimits(rps=3, tps=None, inflight=7)
    assert q.limits(key(rps=9, tps=2)) == KeyLimits(rps=9, tps=2, inflight=7)
    assert quotas(tmp_path).limits(key()) == KeyLimits()  # default: unlimited


def test_a_key_holds_at_most_its_share_of_the_queue(tmp_path):
    async def go():
        q = quotas(tmp_path, key_queue_share=0.5)  # 5 of 10 texts
        async with q.texts(key(), 4):
            with pytest.raises(TooManyInFlight) as refused:
                async with q.texts(key(), 2):
                    pass
            assert "share of the queue (5 texts)" in refused.value.message
            async with q.texts(key(), 1):
                with pytest.raises(TooManyInFlight):
                    q.check_room(key())  # at its share: refused before the body
                async with q.texts(key("other"), 5):  # another key has its own share
                    pass
        async with q.texts(key(), 9):  # alone, a request larger than the share runs
            pass

    asyncio.run(go())


def test_holds_are_given_back_when_the_request_fails_or_is_cancelled(tmp_path):
    async def go():
        q = quotas(tmp_path)
        with pytest.raises(ValueError):
            async with q.texts(key(inflight=2), 2):
                raise ValueError("the batcher failed")

        async def waits() -> None:
            async with q.texts(key(inflight=2), 2):
                await asyncio.sleep(30)

        task = asyncio.ensure_future(waits())
        await asyncio.sleep(0.05)
        with pytest.raises(TooManyInFlight):
            q.check_room(key(inflight=2))
        task.cancel()  # the client went away
        await asyncio.gather(task, return_exceptions=True)
        q.check_room(key(inflight=2))
        assert q.queue.counts.holding("k1") == 0 and q.limiter.holding("k1") == 0

    asyncio.run(go())


def test_a_refusal_is_answered_after_the_pause(tmp_path):
    async def go():
        q = quotas(tmp_path, quota_refusal_delay_s=0.3)
        await q.check_request(key(rps=1))
        with pytest.raises(RateLimited):
            await q.check_request(key(rps=1))  # the middleware pauses before answering
        async with q.texts(key(tps=1), 3):
            pass
        started = time.monotonic()
        with pytest.raises(RateLimited):
            async with q.texts(key(tps=1), 1):
                pass
        assert time.monotonic() - started >= 0.25
        assert q.queue.counts.holding("k1") == 0  # not held while the answer waited

    asyncio.run(go())
