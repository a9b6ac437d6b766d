"""Per-key limits (app/tenancy/limiter.py, app/tenancy/limiter_redis.py): the same rules in
process and in a real redis-server on 127.0.0.1, where two limiters stand for two API processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from app.tenancy.limiter import Ask, Bucket, LocalLimiter, RateLimited, TooManyInFlight
from app.tenancy.limiter_redis import RedisLimiter
from tests.support.jobs import redis_or_skip
from tests.support.server import free_port


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_or_skip(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def pair(request):
    """Two limiters sharing one state: one LocalLimiter twice, or two RedisLimiters."""
    if request.param == "local":
        limiter = LocalLimiter()
        return limiter, limiter
    url, prefix = request.getfixturevalue("redis_url"), f"t-{uuid.uuid4().hex[:8]}"
    return (
        RedisLimiter(url, lease_s=30, prefix=prefix),
        RedisLimiter(url, lease_s=30, prefix=prefix),
    )


def run(coroutine):
    return asyncio.run(coroutine)


async def outcome(limiter, ask: Ask):
    """The hold, or the refusal (not raised)."""
    try:
        return await limiter.take(ask)
    except RateLimited as exc:
        return exc


def rps(rate: float, tenant: str = "k1") -> Ask:
    return Ask(tenant, (Bucket("rps", rate, 1),))


def test_a_bucket_allows_its_burst_then_refuses_with_retry_after(pair):
    async def go():
        a, b = pair
        results = [await outcome((a, b)[i % 2], rps(4)) for i in range(6)]
        assert results[:4] == [None] * 4  # both "processes" drew from one bucket of 4
        assert all(isinstance(r, RateLimited) for r in results[4:])
        assert results[4].retry_after_s == 1 and results[4].code == "rate_limited"
        assert await outcome(a, rps(4, tenant="k2")) is None  # another key, its own bucket
        await asyncio.sleep(0.3)  # 4/s: one token back after 0.25 s
        assert await outcome(b, rps(4)) is None
        assert isinstance(await outcome(a, rps(4)), RateLimited)

    run(go())


def test_a_request_larger_than_the_burst_passes_and_its_debt_delays_the_next(pair):
    async def go():
        a, b = pair
        assert await outcome(a, Ask("k", (Bucket("tps", 2, 7),))) is None
        refused = await outcome(b, Ask("k", (Bucket("tps", 2, 1),)))
        assert isinstance(refused, RateLimited)
        assert refused.retry_after_s == 3  # from -5 tokens to 1 at 2/s: 3 s
        assert "2 texts per second" in refused.message

    run(go())


def test_all_or_nothing(pair):
    """A check refused on one bucket takes nothing from the others."""

    async def go():
        a, b = pair
        assert await outcome(a, Ask("k", (Bucket("tps", 3, 3),))) is None
        both = Ask("k", (Bucket("rps", 1, 1), Bucket("tps", 3, 1)))
        assert isinstance(await outcome(b, both), RateLimited)
        assert await outcome(a, rps(1, tenant="k")) is None  # the rps token is still there

    run(go())


def test_texts_in_flight_are_held_until_released(pair):
    async def go():
        a, b = pair
        first = await outcome(a, Ask("k", inflight_limit=4, inflight=3))
        refused = await outcome(b, Ask("k", inflight_limit=4, inflight=2))
        assert isinstance(refused, TooManyInFlight) and refused.retry_after_s == 1
        second = await outcome(b, Ask("k", inflight_limit=4, inflight=1))
        assert first is not None and second is not None
        await a.release(first)
        await a.release(first)  # twice: no effect
        third = await outcome(a, Ask("k", inflight_limit=4, inflight=3))
        assert third is not None
        await b.release(second)
        await a.release(third)
        big = await outcome(b, Ask("k", inflight_limit=4, inflight=9))  # alone: it may run
        assert big is not None
        assert isinstance(await outcome(a, Ask("k", inflight_limit=4, inflight=1)), RateLimited)
        await b.release(big)
        assert await outcome(a, Ask("k", inflight_limit=4, inflight=4)) is not None

    run(go())


@pytest.mark.redis
def test_a_hold_whose_process_died_lapses_with_its_lease(redis_url):
    prefix = f"t-{uuid.uuid4().hex[:8]}"

    async def go():
        dead = RedisLimiter(redis_url, lease_s=0.3, prefix=prefix)
        alive = RedisLimiter(redis_url, lease_s=30, prefix=prefix)
        assert await dead.take(Ask("k", inflight_limit=2, inflight=2)) is not None
        with pytest.raises(TooManyInFlight):
            await alive.take(Ask("k", inflight_limit=2, inflight=1))
        await asyncio.sleep(0.5)  # the dead process never released: its lease ran out
        hold = await alive.take(Ask("k", inflight_limit=2, inflight=2))
        await alive.release(hold)
        await dead.close()
        await alive.close()

    run(go())


def test_redis_down_falls_back_to_limits_in_this_process(caplog):
    """No Redis: requests are still served and the limit still holds, per process."""

    async def go():
        limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", lease_s=30)
        started = time.monotonic()
        results = [await outcome(limiter, rps(2)) for _ in range(4)]
        assert results[:2] == [None, None]
        assert all(isinstance(r, RateLimited) for r in results[2:])
        hold = await limiter.take(Ask("k", inflight_limit=1, inflight=1))
        await limiter.release(hold)  # released in process
        assert await limiter.take(Ask("k", inflight_limit=1, inflight=1)) is not None
        assert time.monotonic() - started < 2  # one failed connection, then no more tries
        await limiter.close()

    with caplog.at_level(logging.WARNING, logger="app.tenancy.limiter_redis"):
        run(go())
    warnings = [r for r in caplog.records if "Redis did not answer" in r.getMessage()]
    assert len(warnings) == 1


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """A redis-server that answers nothing (SIGSTOP) until the block ends (SIGCONT)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.redis
def test_releases_lost_in_a_redis_stall_are_given_back_when_it_answers(tmp_path):
    """Redis frozen (SIGSTOP) while two requests end: their releases time out. Before: another
    process was refused (too_many_in_flight) for the rest of the lease (60 s here); now the
    releases are retried and the key's texts are free within a couple of seconds of SIGCONT."""
    with redis_or_skip(tmp_path) as url:  # its own redis-server: this test freezes it
        pid = redis.Redis.from_url(url).info("server")["process_id"]

        async def go():
            one, other = (RedisLimiter(url, lease_s=60, prefix="stall") for _ in range(2))
            holds = [await one.take(Ask("k", inflight_limit=8, inflight=4)) for _ in range(2)]
            with frozen(pid):
                for hold in holds:
                    await one.release(hold)  # no answer within TIMEOUT_S
            resumed, refused = time.monotonic(), 0
            ask = Ask("k", inflight_limit=8, inflight=8)
            while isinstance(hold := await outcome(other, ask), RateLimited):
                assert isinstance(hold, TooManyInFlight) and time.monotonic() - resumed < 3, hold
                refused += 1
                await asyncio.sleep(0.1)
            await other.release(hold)
            await one.close()
            await other.close()
            return hold, refused

        hold, refused = run(go())
        assert hold.member is not None  # taken in Redis, not by the fallback in process
        assert refused < 30


@pytest.mark.redis
def test_a_check_cancelled_in_a_redis_stall_gives_its_hold_back(tmp_path):
    """A client leaves while its check waits on a frozen Redis, which runs the check when it
    resumes. Before: the texts stayed held for the lease; now the hold is given back."""
    with redis_or_skip(tmp_path) as url:
        client = redis.Redis.from_url(url, socket_timeout=5)
        pid = client.info("server")["process_id"]

        async def go():
            limiter = RedisLimiter(url, lease_s=60, prefix="gone")
            await limiter.release(await limiter.take(Ask("k", inflight_limit=8, inflight=1)))
            with frozen(pid):
                task = asyncio.ensure_future(limiter.take(Ask("k", inflight_limit=8, inflight=3)))
                await asyncio.sleep(0.1)  # sent, unanswered
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            await asyncio.sleep(2)
            await limiter.close()

        run(go())
        assert client.get("gone:{k}:held") is None
        assert client.zcard("gone:{k}:leases") == 0


def test_local_buckets_refill_with_the_clock():
    now = [0.0]
    limiter = LocalLimiter(clock=lambda: now[0])
    assert limiter.take_now(rps(2)) is None
    assert limiter.take_now(rps(2)) is None
    with pytest.raises(RateLimited):
        limiter.take_now(rps(2))
    now[0] = 10.0  # refilled, but never above the burst
    assert limiter.take_now(rps(2)) is None
    assert limiter.take_now(rps(2)) is None
    with pytest.raises(RateLimited):
        limiter.take_now(rps(2))
