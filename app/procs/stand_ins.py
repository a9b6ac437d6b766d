"""What an API process has instead of the in-process parts the routes read (app.procs).

`EngineResidency` stands where the AdapterCache stands for the admin routes: `ensure`/`unload`
travel by name through `EngineClient.run_exclusive` and run in the engine between batches;
`fetch` gets the engine's residency for a page in one call. `EngineLimiter` stands where the
in-process LocalLimiter stands: the engine hosts one LocalLimiter for every API process, so a
key's quota holds across them (the Redis limiter is shared already and stays).

While the engine is down (restarting), routes that need no inference keep answering: the
residency is empty (a restarted engine starts with nothing resident) and the key's limits are
enforced by this process alone (its own LocalLimiter, each process allowing the whole limit, as
the Redis limiter does while Redis is down) until the engine beats again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from app.procs.engine_client import EngineUnavailable
from app.serving.errors import ServiceError
from app.serving.residents import Resident
from app.tenancy.limiter import Ask, Hold, LocalLimiter

if TYPE_CHECKING:
    from app.procs.engine_client import EngineClient

IN_ENGINE = "engine"  # Hold.member of a hold the engine's limiter holds


class EngineResidency:
    """The AdapterCache stand-in of an API process."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client

    def ensure(self, name: str) -> None:  # runs in the engine (EngineClient.run_exclusive)
        raise NotImplementedError

    def unload(self, name: str) -> None:  # runs in the engine (EngineClient.run_exclusive)
        raise NotImplementedError

    async def fetch(self) -> Residency:
        if not self.client.running:
            return Residency({}, {})
        try:
            data = await self.client.call("residency")
        except EngineUnavailable:  # it went away meanwhile
            return Residency({}, {})
        return Residency(msgspec.convert(data["resident"], dict[str, Resident]), data["last_used"])


@dataclass(frozen=True)
class Residency:
    """One fetch of the engine's residency, with the AdapterCache's read methods."""

    resident: dict[str, Resident]
    used: dict[str, float]

    def snapshot(self) -> dict[str, Resident]:
        return self.resident

    def last_used(self, name: str) -> float | None:
        return self.used.get(name)


class EngineLimiter:
    """The per-key limiter the engine hosts (one LocalLimiter for every API process); this
    process's own while the engine is down. Holds taken in the engine carry `IN_ENGINE`."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client
        self.local = LocalLimiter()

    async def take(self, ask: Ask) -> Hold | None:
        if self.client.running:
            try:
                held = await self.client.call("take", msgspec.to_builtins(ask))
            except EngineUnavailable:  # it went away meanwhile
                return self.local.take_now(ask)
            return None if held is None else Hold(held["tenant"], held["n"], IN_ENGINE)
        return self.local.take_now(ask)

    async def release(self, hold: Hold) -> None:
        if hold.member != IN_ENGINE:
            self.local.release_now(hold)
        elif not hold.released:
            hold.released = True
            with contextlib.suppress(ServiceError):  # the engine restarted: nothing is held
                await self.client.call("release", hold.tenant, hold.n)

    async def close(self) -> None:
        pass
