"""Per-key limits shared through Redis (`APP_REDIS_URL`): every API process enforces one limit.

The rules are app/tenancy/limiter.py's; each check is one Lua script, so it is atomic across any
number of processes and hosts, and time is the Redis server's clock (`TIME`), so the hosts'
clocks need not agree. Keys (one hash tag per API key, so a Redis Cluster keeps a key's state
on one shard): `{prefix}:{KEYID}:rps` and `:tps` (hashes: tokens, ts; they expire when the
bucket would be full again), `:held` (texts in flight) and `:leases` (a sorted set of the holds,
scored by when their lease ends).

A hold is released by `release` when its request ends, failed or not, or when the client went
away (the caller's `finally`). A hold whose process died is never released: its lease ends
(`lease_s`, the request timeout plus a margin) and the next check drops it. A release that
Redis did not confirm (an error, a stall past `TIMEOUT_S`), and the hold of a check that failed
or was cancelled after its script was sent (Redis may have run it), wait in a pending list that
a background task retries every `RETRY_PENDING_S` until Redis answers: a stall does not leave
the key's texts held for the rest of the lease (releasing a hold twice, or one never taken, is
a no-op).

Redis down (an error or no answer within `TIMEOUT_S`): the limits are enforced by this process
alone (`LocalLimiter`), so each process allows the whole limit, for `RETRY_S` seconds; then
Redis is tried again. Serving goes on; a warning is logged (at most every `WARN_EVERY_S`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from app.tenancy.limiter import Ask, Hold, LocalLimiter, refused_bucket, refused_inflight

log = logging.getLogger(__name__)
DEFAULT_PREFIX = "adapter-serve:quota"
TIMEOUT_S = 0.5
RETRY_S = 5.0
RETRY_PENDING_S = 0.5
MAX_PENDING = 10_000  # releases kept for retrying; past this the oldest lapse with their lease
WARN_EVERY_S = 30.0

# KEYS: the buckets' hashes, then (when ARGV[2] >= 0) the held counter and the leases set.
# ARGV: buckets, in-flight limit (-1: none), texts to hold, hold member, lease ms, then
# (rate, cost) per bucket. Reply: {1, 0, 0} taken; {0, retry ms, bucket} or {2, 1000, 0}.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m, limit, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease = tonumber(ARGV[5])
local levels, wait, short = {}, 0, 0
for i = 1, m do
  local rate, cost = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens = tonumber(state[1]) or rate
  local elapsed = math.max(now - (tonumber(state[2]) or now), 0) / 1000
  tokens = math.min(rate, tokens + elapsed * rate)
  levels[i] = tokens
  local need = math.min(cost, rate)
  if tokens < need and (need - tokens) / rate >= wait then
    wait, short = (need - tokens) / rate, i
  end
end
if short > 0 then return {0, math.ceil(wait * 1000), short} end
if limit >= 0 then
  local held_key, leases_key = KEYS[m + 1], KEYS[m + 2]
  local over = redis.call('ZRANGEBYSCORE', leases_key, '-inf', now)
  if #over > 0 then
    local gone = 0
    for _, member in ipairs(over) do
      gone = gone + tonumber(string.match(member, '|(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', leases_key, '-inf', now)
    redis.call('DECRBY', held_key, gone)
  end
  local held = math.max(tonumber(redis.call('GET', held_key) or '0'), 0)
  if held > 0 and held + n > limit then return {2, 1000, 0} end
  redis.call('ZADD', leases_key, now + lease, ARGV[4])
  redis.call('SET', held_key, held + n, 'PX', lease + 1000)
  redis.call('PEXPIRE', leases_key, lease + 1000)
end
for i = 1, m do
  local rate, cost = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  local level = levels[i] - cost
  redis.call('HSET', KEYS[i], 'tokens', level, 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil((rate - level) / rate * 1000) + 1000)
end
return {1, 0, 0}
"""

# KEYS: held counter, leases set. ARGV: hold member, texts. A lease already dropped: nothing.
RELEASE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  if redis.call('DECRBY', KEYS[1], tonumber(ARGV[2])) <= 0 then redis.call('DEL', KEYS[1]) end
end
return 0
"""

ERRORS = (redis.RedisError, OSError)


class RedisLimiter:
    def __init__(
        self,
        url: str,
        *,
        lease_s: float,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.lease_ms, self.prefix, self.clock = url, int(lease_s * 1000), prefix, clock
        self.local = LocalLimiter(clock=clock)  # while Redis is down
        self._client: Any = None
        self._scripts: tuple[Any, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_until = 0.0
        self._warned_at = -WARN_EVERY_S
        self._pending: dict[str, tuple[str, int]] = {}  # member -> (tenant, texts)
        self._retrying: asyncio.Task | None = None

    def _redis(self) -> tuple[Any, Any]:
        """The scripts, on a client of the running event loop (made at the first check)."""
        loop = asyncio.get_running_loop()
        if self._scripts is None or self._loop is not loop:
            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
            )
            self._scripts = (
                self._client.register_script(TAKE),
                self._client.register_script(RELEASE),
            )
            self._loop = loop
        return self._scripts

    def keys(self, tenant: str, *names: str) -> list[str]:
        return [f"{self.prefix}:{{{tenant}}}:{name}" for name in names]

    async def take(self, ask: Ask) -> Hold | None:
        if self.clock() < self._down_until:
            return self.local.take_now(ask)
        limit = ask.inflight_limit
        keys = self.keys(ask.tenant, *(b.name for b in ask.buckets))
        member = ""
        if limit is not None:
            keys += self.keys(ask.tenant, "held", "leases")
            member = f"{uuid.uuid4().hex}|{ask.inflight}"
        args: list[Any] = [len(ask.buckets), -1 if limit is None else limit, ask.inflight]
        args += [member, self.lease_ms]
        for bucket in ask.buckets:
            args += [repr(float(bucket.rate)), repr(float(bucket.cost))]
        try:
            status, retry_ms, index = await self._redis()[0](keys=keys, args=args)
        except (*ERRORS, asyncio.CancelledError) as exc:
            if member:  # the script may have run: its hold is given back when Redis answers
                self._later(ask.tenant, member, ask.inflight)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._down(exc)
            return self.local.take_now(ask)
        if status == 0:
            raise refused_bucket(ask.buckets[int(index) - 1], int(retry_ms) / 1000)
        if status == 2:
            raise refused_inflight(limit or 0)
        return Hold(ask.tenant, ask.inflight, member) if limit is not None else None

    async def release(self, hold: Hold) -> None:
        if hold.member is None:  # taken in process while Redis was down
            self.local.release_now(hold)
            return
        if hold.released:
            return
        hold.released = True
        if not await self._release(hold.tenant, hold.member, hold.n):
            self._later(hold.tenant, hold.member, hold.n)

    async def _release(self, tenant: str, member: str, n: int) -> bool:
        """Give the hold back in Redis; False when Redis did not confirm it."""
        try:
            keys = self.keys(tenant, "held", "leases")
            await self._redis()[1](keys=keys, args=[member, n])
        except ERRORS as exc:
            self._down(exc)
            return False
        return True

    def _later(self, tenant: str, member: str, n: int) -> None:
        """Retry this release until Redis confirms it (the retrying task runs while any wait)."""
        if len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        self._pending[member] = (tenant, n)
        loop, task = asyncio.get_running_loop(), self._retrying
        if task is None or task.done() or task.get_loop() is not loop:
            self._retrying = loop.create_task(self._retry_pending())

    async def _retry_pending(self) -> None:
        while self._pending:
            await asyncio.sleep(RETRY_PENDING_S)
            for member, (tenant, n) in list(self._pending.items()):
                if not await self._release(tenant, member, n):
                    break
                self._pending.pop(member, None)
            else:  # Redis answers again: the next checks use it
                self._down_until = 0.0

    def _down(self, exc: BaseException) -> None:
        now = self.clock()
        self._down_until = now + RETRY_S
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "quotas: Redis did not answer (%s); enforcing the per-key limits in this "
                "process alone for %g s",
                type(exc).__name__,
                RETRY_S,
            )

    async def close(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
        if self._client is not None:
            client, self._client, self._scripts = self._client, None, None
            await client.aclose()
