"""Each API key's share of the engine's queue, counted in the engine across every API process
(`APP_KEY_QUEUE_SHARE` of `APP_MAX_QUEUE` texts; the rule is app.tenancy.quotas.QueueShare's).

A `Classify` that names a key holds its texts x adapters from its arrival until it is answered,
cancelled or dropped; one over the key's share is answered at once with TooManyInFlight (429;
the API process pauses before it answers, as for its own refusals). Each API process still
counts its own part first (it refuses before reading a body), never later than the engine.
"""

from __future__ import annotations

from collections.abc import Hashable

from app.config import Settings
from app.metrics import Metrics
from app.procs import wire
from app.tenancy.limiter import Hold, RateLimited
from app.tenancy.quotas import QueueShare


class KeyShares:
    def __init__(self, settings: Settings, metrics: Metrics | None) -> None:
        self.share = QueueShare(settings, metrics)  # refusals counted as rate_limited
        self.holds: dict[Hashable, Hold] = {}  # by request (API process, id)

    def take(self, request: Hashable, message: wire.Classify) -> wire.Failure | None:
        """Hold `message`'s texts for its key; the failure to answer when over the share."""
        if message.tenant is None:
            return None
        n = (len(message.lengths) // 4) * len(message.adapters)  # int32 lengths: texts
        try:
            self.holds[request] = self.share.take(message.tenant, n)
        except RateLimited as exc:
            return wire.failure_of(exc)
        return None

    def release(self, request: Hashable) -> None:
        """The request ended (answered, cancelled, dropped); a no-op when it held nothing."""
        hold = self.holds.pop(request, None)
        if hold is not None:
            self.share.release(hold)
