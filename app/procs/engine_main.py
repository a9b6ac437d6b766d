"""The engine process: `python -m app.procs.engine_main RUNTIME_DIR` (the supervisor starts it).

It loads the base model, builds the serving stack as one process does (`build_serving`:
adapter tiers and loader thread, batcher with its planner, inference thread and cost model)
and hosts the per-key LocalLimiter and KeyShares of every API process. It answers on a ROUTER
socket (`wire` messages, each turn's in one frame: a request whose adapters are in memory
is queued with no task, others await their reads; a `Cancel` drops it); beats every BEAT_S.
SIGTERM stops it: no new requests, the batcher stops, the sockets close.
Exit code 3: the base model cannot be loaded (the supervisor gives up rather than restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import logging.config
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import torch
import zmq
import zmq.asyncio

from adapters_store import StoreError
from app.bootstrap import Serving, build_serving, load_engine
from app.config import EngineView, Settings, engine_threads
from app.metrics import Metrics
from app.procs import wire
from app.procs.engine_client import socket_paths
from app.procs.key_shares import KeyShares
from app.procs.titles import set_title, stop_with_parent
from app.serving.engine import Engine
from app.serving.errors import BaseModelLoadError, InferenceFailed, ServiceError
from app.serving.passes import Classified
from app.serving.planning import Request, Timing
from app.tenancy.limiter import Ask, Bucket, Hold, LocalLimiter

log = logging.getLogger("app.procs.engine")
CANNOT_LOAD = 3
LOADED = "engine.loaded"  # a file in the runtime folder: the base model loaded (once)


def describe(engine: Engine) -> dict[str, Any]:
    return {
        "base_ref": engine.base_ref.model_dump(),
        "device": str(engine.device),
        "dtype": str(engine.dtype),
        "max_length": engine.max_length,
    }


def answer_of(request_id: int, outcome: Classified | Exception, timing: Timing) -> wire.Answer:
    """The wire answer of a classify request: its result or its error, and its timings."""
    if isinstance(outcome, Classified):
        answer = wire.Answer(request_id, outcome)
    elif isinstance(outcome, (StoreError, ServiceError)):
        answer = wire.Answer(request_id, failure=wire.failure_of(outcome))
    else:
        log.error("classifying failed", exc_info=outcome)
        failure = wire.failure_of(InferenceFailed("inference failed; see the server log"))
        answer = wire.Answer(request_id, failure=failure)
    answer.queue_ms, answer.inference_ms = timing.queue_ms, timing.inference_ms
    return answer


class EngineServer:
    """The engine's side of the wire: requests in, answers and heartbeats out."""

    def __init__(self, serving: Serving, engine: Engine, ctx: Any, runtime: Path, share: KeyShares):
        self.serving, self.batcher, self.cache = serving, serving.batcher, serving.cache
        self.limiter = LocalLimiter()
        self.shares = share  # each key's share of the queue, across every API process
        self.info = describe(engine)
        self.boot = uuid.uuid4().hex
        requests, beats = socket_paths(runtime)
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(requests)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(beats)
        self.tasks: dict[tuple[bytes, int], asyncio.Task] = {}  # awaited work (cold, calls)
        self.requests: dict[tuple[bytes, int], Request] = {}  # queued with no task
        self.outbox: dict[bytes, list] = {}  # replies of this turn, per API process (one frame)
        self.calls = {
            "ensure": self._ensure,
            "unload": self._unload,
            "residency": self._residency,
            "take": self._take,
            "release": self._release,
        }

    async def serve(self, stop: asyncio.Event) -> None:
        work = [asyncio.create_task(self._receive()), asyncio.create_task(self._beat())]
        await stop.wait()
        for task in work:
            task.cancel()
        for task in [*work, *self.tasks.values()]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _beat(self) -> None:
        beat = wire.encode(wire.Beat(self.boot, self.info))
        while True:
            await self.pub.send(beat)
            await asyncio.sleep(wire.BEAT_S)

    async def _receive(self) -> None:
        while True:
            who, *frames = await self.router.recv_multipart()  # an API process's turn
            for frame in frames:  # one frame a turn
                messages, malformed = wire.to_engine_turn(frame)
                if malformed:
                    log.warning("dropped %d malformed message(s) from an API process", malformed)
                for message in messages:
                    self._take_in(who, message)

    def _take_in(self, who: bytes, message: wire.ToEngine) -> None:
        key = (who, message.id)
        if isinstance(message, wire.Cancel):
            self.shares.release(key)
            request = self.requests.pop(key, None)
            if request is not None:
                self.batcher.requests.count("cancelled")
                self.batcher.requests.drop(request)
            elif (task := self.tasks.get(key)) is not None:
                task.cancel()
            return
        if message.boot != self.boot:  # sent to the engine before this one: answered 503
            return
        if not isinstance(message, wire.Classify):
            work = self._call(message)
        elif (over := self.shares.take(key, message)) is not None:  # over the key's share
            self._post(who, wire.Answer(message.id, failure=over))
            return
        elif self._queue(who, message):  # queued at once: no task
            return
        else:
            work = self._classify(message)
        task = asyncio.create_task(self._answer(who, work))
        self.tasks[key] = task
        task.add_done_callback(lambda _, key=key, work=work: self._ended(key, work))

    def _ended(self, key: tuple[bytes, int], work: Any) -> None:
        self.tasks.pop(key, None)
        self.shares.release(key)
        if inspect.getcoroutinestate(work) == inspect.CORO_CREATED:  # cancelled before it ran
            work.close()
            self.batcher.requests.count("cancelled")

    def _queue(self, who: bytes, message: wire.Classify) -> bool:
        """Queue a request whose adapters are in memory, with no task: its future's callback
        answers. False: an adapter must be read first (the awaited path)."""
        if not all(map(self.cache.in_memory, message.adapters)):
            return False
        ids, key = wire.unpack_ids(message.ids, message.lengths), (who, message.id)
        try:
            request = self.batcher.enqueue(ids, message.adapters, tenant=message.tenant)
        except (StoreError, ServiceError) as exc:
            self.shares.release(key)
            self._post(who, wire.Answer(message.id, failure=wire.failure_of(exc)))
            return True
        self.requests[key] = request
        request.future.add_done_callback(lambda _: self._finished(key, message, len(ids)))
        return True

    def _finished(self, key: tuple[bytes, int], message: wire.Classify, n_texts: int) -> None:
        self.shares.release(key)
        request = self.requests.pop(key, None)
        if request is None:  # cancelled: nobody to answer
            return
        timing = Timing()
        try:
            outcome = self.batcher.requests.finish(request, message.adapters, n_texts, timing)
        except Exception as exc:
            outcome = exc
        answer = answer_of(message.id, outcome, timing)
        self._post(key[0], answer)

    def _post(self, who: bytes, reply: wire.Answer | wire.Reply) -> None:
        """Send `reply` with the others of this turn of the loop: one message per API process."""
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self.outbox.setdefault(who, []).append(reply)

    def _flush(self) -> None:
        boxes, self.outbox = self.outbox, {}
        if self.router.closed:  # stopping: the API processes answer what is left
            return
        for who, replies in boxes.items():
            self.router.send_multipart([who, wire.encode_turn(replies, wire.failed_in_place)])

    async def _answer(self, who: bytes, work: Any) -> None:
        try:
            reply = await work
        except asyncio.CancelledError:  # the API process gave up on it: nobody to answer
            return
        self._post(who, reply)

    async def _classify(self, message: wire.Classify) -> wire.Answer:
        timing = Timing()
        try:
            outcome = await self.batcher.classify_ids(
                ids=wire.unpack_ids(message.ids, message.lengths),
                adapters=message.adapters,
                timing=timing,
                tenant=message.tenant,
            )
        except Exception as exc:
            outcome = exc
        return answer_of(message.id, outcome, timing)

    async def _call(self, message: wire.Call) -> wire.Reply:
        try:
            op = self.calls[message.op]
            return wire.Reply(message.id, result=await op(*message.args))
        except (StoreError, ServiceError) as exc:
            return wire.Reply(message.id, failure=wire.failure_of(exc))
        except Exception:
            log.exception("engine call %r failed", message.op)
            failure = wire.failure_of(InferenceFailed("the engine call failed; see the log"))
            return wire.Reply(message.id, failure=failure)

    async def _ensure(self, name: str) -> None:
        await self.batcher.run_exclusive(self.cache.ensure, name)

    async def _unload(self, name: str) -> None:
        await self.batcher.run_exclusive(self.cache.unload, name)

    async def _residency(self) -> dict[str, Any]:
        resident = self.cache.snapshot()
        used = {name: self.cache.last_used(name) for name in resident}
        return {
            "resident": msgspec.to_builtins(resident),
            "last_used": {name: t for name, t in used.items() if t is not None},
        }

    async def _take(self, ask: dict[str, Any]) -> dict[str, Any] | None:
        buckets = tuple(msgspec.convert(b, Bucket) for b in ask.pop("buckets"))
        hold = self.limiter.take_now(Ask(buckets=buckets, **ask))
        return None if hold is None else {"tenant": hold.tenant, "n": hold.n}

    async def _release(self, tenant: str, n: int) -> None:
        self.limiter.release_now(Hold(tenant, n))


async def run(settings: Settings, engine: Engine, runtime: Path) -> None:
    serving = build_serving(settings, engine, Metrics(top_adapters=settings.metrics_top_adapters))
    await serving.batcher.start()
    ctx = zmq.asyncio.Context()
    shares = KeyShares(settings, serving.batcher.metrics)
    server = EngineServer(serving, engine, ctx, runtime, shares)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    log.info("engine serving base model %s on %s (%s, %d torch threads)", engine.base_ref.id,
             engine.device, engine.dtype, torch.get_num_threads())  # fmt: skip
    try:
        await server.serve(stop)
    finally:
        await serving.batcher.stop()
        server.router.close(0)
        server.pub.close(0)
        ctx.term()


def main(argv: list[str]) -> int:
    runtime = Path(argv[0])
    set_title("adapter-serve: engine")
    stop_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the supervisor decides
    settings = Settings()
    if settings.torch_threads is None:  # the API processes keep their cores
        cores = len(os.sched_getaffinity(0))
        settings.torch_threads = engine_threads(cores, settings.api_workers or 1)
    from app.observability.logs import logging_config

    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))
    try:
        engine = load_engine(EngineView.of(settings))
    except BaseModelLoadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return CANNOT_LOAD
    (runtime / LOADED).touch()  # the supervisor starts the API processes now
    asyncio.run(run(settings, engine, runtime))
    log.info("engine stopped (pid %d)", os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
