"""The engine as an API process sees it: `EngineClient`, a third `Classifier` (beside the
in-process Batcher and the Ray ClusterBatcher), and the stand-ins the routes read.

The client tokenises here (its own tokenizer thread, `app.serving.tokenizing.Tokenizer` over a
`TextEncoder` of the base model's tokenizer and the engine's `max_length`) and sends token ids
to the engine. Cancelling `classify` (the HTTP client went away) sends a `Cancel`: the engine
drops the request's queued texts before any forward and counts it as `cancelled` (a cancel
while tokenising here, before the engine saw it, is counted here). The engine's
heartbeat says it is up: silence for BEAT_LOST_S, or a new boot id, fails every pending call
with a 503 that says why, `running` turns false (`/readyz` red), and the next beat (the
restarted engine) makes it true again. The store on disk is the truth: nothing is lost.

`EngineInfo` stands where the Engine stands for /readyz and uploads; the other stand-ins
(the cache's, the limiter's) are app.procs.stand_ins's."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from adapters_store import BaseModelRef
from app.procs import wire
from app.serving.errors import RequestTimeout, ServiceError
from app.serving.passes import Classified
from app.serving.planning import Timing
from app.serving.text_encoding import Text, TextEncoder
from app.serving.tokenizing import Tokenizer
from app.serving.warm_up import freeze_heap, thaw

log = logging.getLogger(__name__)
ENGINE_GONE = "the inference engine stopped; it is being restarted"
STARTING = "the inference engine is starting; retry shortly"


class EngineUnavailable(ServiceError):
    code = "unavailable"  # 503
    retry_after_s = 1


@dataclass(frozen=True)
class EngineInfo:
    """What /readyz and the upload checks read off the engine (`state.engine`)."""

    base_ref: BaseModelRef
    device: str
    dtype: str
    max_length: int
    base_config: Any


def socket_paths(runtime: Path) -> tuple[str, str]:
    """The engine's request socket and heartbeat socket in the private runtime folder."""
    return f"ipc://{runtime / 'engine.sock'}", f"ipc://{runtime / 'beat.sock'}"


class EngineClient:
    def __init__(self, runtime: Path, *, base_model: str, timeout_s: float) -> None:
        self.runtime, self.base_model, self.timeout_s = runtime, base_model, timeout_s
        self.info: EngineInfo | None = None
        self.on_info: Callable[[EngineInfo], None] | None = None
        self._boot: str | None = None
        self._last_beat = 0.0
        self._pending: dict[int, asyncio.Future] = {}
        self._outbox: list[Any] = []  # messages of this turn of the loop (`_post`): one frame
        self._ids = itertools.count(1)
        self._tokenizer: Tokenizer | None = None
        self._tasks: list[asyncio.Task] = []
        self._ctx: zmq.asyncio.Context | None = None
        self.metrics: Any = None  # the API process's Metrics: cancels before the engine saw it

    # ---- the Classifier protocol -----------------------------------------------------------
    @property
    def running(self) -> bool:
        up = time.monotonic() - self._last_beat < wire.BEAT_LOST_S
        return up and self._tokenizer is not None

    @property
    def down_reason(self) -> str:
        return STARTING if self._tokenizer is None else ENGINE_GONE

    async def classify(
        self,
        *,
        texts: Sequence[Text],
        adapters: Sequence[str],
        truncation: bool = True,
        timing: Timing | None = None,
        tenant: Hashable = None,
    ) -> Classified:
        self._check_up()
        assert self._tokenizer is not None
        timing = timing or Timing()
        started = time.monotonic()
        try:
            ids = await self._tokenizer.tokenize(
                texts, truncation=truncation, deadline=started + self.timeout_s
            )
        except asyncio.CancelledError:  # the engine never saw it: counted here, as one process
            if self.metrics is not None:
                self.metrics.rejected.labels("cancelled").inc()
            raise
        finally:
            timing.tokenize_ms = (time.monotonic() - started) * 1000
        return await self.classify_ids(ids, adapters, truncation, timing, tenant)

    async def classify_ids(self, ids, adapters, truncation=True, timing=None, tenant=None):
        """`classify` of ids tokenised already (bench/engine_load.py feeds the engine so)."""
        self._check_up()
        flat, lengths = wire.pack_ids(ids)
        who = None if tenant is None else str(tenant)
        message = wire.Classify(next(self._ids), flat, lengths, list(adapters), truncation, who,
                                self._boot or "")  # fmt: skip
        answer = await self._ask(message)
        if timing is not None:
            timing.queue_ms, timing.inference_ms = answer.queue_ms, answer.inference_ms
        if answer.failure is not None:
            raise wire.error_of(answer.failure)
        assert answer.classified is not None
        return answer.classified

    # ---- what the admin routes use of the batcher ------------------------------------------
    async def run_exclusive(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """`fn` is a stand-in's method (`EngineResidency.ensure`/`unload`): it runs in the
        engine by name, between batches, as in one process. An unload while the engine is down
        has nothing to do (a restarted engine starts empty; names resolve against the store,
        so a deleted adapter is never served): deleting an adapter needs no engine."""
        try:
            return await self.call(fn.__name__, *args)
        except EngineUnavailable:
            if fn.__name__ != "unload":
                raise
            return None

    async def call(self, op: str, *args: Any) -> Any:
        self._check_up()
        reply = await self._ask(wire.Call(next(self._ids), op, list(args), self._boot or ""))
        if reply.failure is not None:
            raise wire.error_of(reply.failure)
        return reply.result

    # ---- the connection ------------------------------------------------------------------
    async def start(self) -> None:
        self._ctx = zmq.asyncio.Context()
        requests, beats = socket_paths(self.runtime)
        self._socket = self._ctx.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(requests)
        self._beats = self._ctx.socket(zmq.SUB)
        self._beats.setsockopt(zmq.LINGER, 0)
        self._beats.setsockopt(zmq.SUBSCRIBE, b"")
        self._beats.connect(beats)
        # The tokenizer loads meanwhile (seconds: transformers' import), as the engine does.
        self._loading = asyncio.ensure_future(asyncio.to_thread(self._load))
        for work in (self._receive(), self._listen(), self._watch()):
            task = asyncio.create_task(work)
            task.add_done_callback(_log_crash)
            self._tasks.append(task)
        # Accept connections only with the tokenizer loaded and, when the engine is up
        # already (this process restarted), its first beat heard: no 503 from a new process
        # beside ready ones. While the engine loads, answer 503 rather than keep clients waiting.
        await asyncio.shield(self._loading)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3 * wire.BEAT_S):
                while not self.running:
                    await asyncio.sleep(wire.BEAT_S / 10)

    async def close(self) -> None:
        for task in [*self._tasks, self._loading]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_pending("the service is shutting down")
        if self._tokenizer is not None:
            self._tokenizer.close()
            thaw()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)  # its two sockets closed, then the context

    def _check_up(self) -> None:
        if not self.running:
            raise EngineUnavailable(self.down_reason)

    async def _ask(self, message: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending[message.id] = future
        try:
            self._post(message)
            async with asyncio.timeout(self.timeout_s + 10):  # the engine answers by its timeout
                return await future
        except TimeoutError:
            raise RequestTimeout(f"no answer from the engine within {self.timeout_s:g} s") from None
        except asyncio.CancelledError:
            # Cancelling this task cancelled `future` too: unanswered unless it has a result.
            answered = future.done() and not future.cancelled()
            if not answered and isinstance(message, wire.Classify):
                self._post(wire.Cancel(message.id))
            raise
        finally:
            self._pending.pop(message.id, None)

    def _post(self, message: Any) -> None:
        """Send with the other messages of this turn of the loop: one frame to the engine."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if not self._socket.closed:
            self._socket.send(wire.encode_turn(messages, self._unsendable))

    def _unsendable(self, message: Any, exc: Exception) -> None:  # its caller gets the error
        if (future := self._pending.get(message.id)) is not None and not future.done():
            future.set_exception(exc)

    async def _receive(self) -> None:
        while True:
            replies, malformed = wire.from_engine_turn(await self._socket.recv())  # one turn's
            if malformed:  # their callers time out
                log.warning("dropped %d malformed message(s) from the engine", malformed)
            for reply in replies:
                future = self._pending.get(reply.id)
                if future is not None and not future.done():
                    future.set_result(reply)

    async def _listen(self) -> None:
        while True:
            beat = wire.from_engine(await self._beats.recv())
            if not isinstance(beat, wire.Beat):
                continue
            if beat.boot != self._boot:
                if self._boot is not None:  # a new engine: the old one's calls never answer
                    self._fail_pending(ENGINE_GONE)
                    log.warning("the inference engine restarted; serving again")
                self._boot = beat.boot
                if self._tokenizer is None:
                    await self._prepare(beat.info)
            self._last_beat = time.monotonic()

    def _load(self) -> tuple[Any, Any]:
        """The base model's tokenizer and config (for upload checks): no weights."""
        from transformers import AutoConfig, AutoTokenizer

        base = self.base_model
        return AutoTokenizer.from_pretrained(base), AutoConfig.from_pretrained(base)

    async def _prepare(self, info: dict[str, Any]) -> None:
        """The tokenizer with the engine's token cap, once, at the first beat."""
        tokenizer, config = await self._loading
        encoder = TextEncoder(tokenizer, info["max_length"])
        self.info = EngineInfo(
            base_ref=BaseModelRef.model_validate(info["base_ref"]),
            device=info["device"],
            dtype=info["dtype"],
            max_length=info["max_length"],
            base_config=config,
        )
        tokenizer = Tokenizer(encoder)
        # Its thread started and its first call made now, not in the first request (~15 ms).
        await tokenizer.tokenize(["warm up"], truncation=True, deadline=time.monotonic() + 60)
        self._tokenizer = tokenizer
        if self.on_info is not None:
            self.on_info(self.info)
        # As the engine's warm-up does: an API process holds ~480k tracked objects by now
        # (transformers, FastAPI); one full collection of them held the GIL for 1.5 s on the
        # loaded 2-core box, a stall of every request in this process.
        log.debug("%d objects kept out of the GC's full collections", freeze_heap())

    async def _watch(self) -> None:
        """Fail pending calls as soon as the engine falls silent (within BEAT_LOST_S)."""
        was_up = False
        while True:
            await asyncio.sleep(wire.BEAT_S / 2)
            up = self.running
            if was_up and not up:
                log.warning("no heartbeat from the inference engine: %s", ENGINE_GONE)
                self._fail_pending(ENGINE_GONE)
            was_up = up

    def _fail_pending(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(EngineUnavailable(reason))


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("engine client task %s failed", task.get_name(), exc_info=task.exception())
