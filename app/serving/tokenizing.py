"""Tokenising on one thread, many requests per tokenizer call, under each request's deadline.

Requests hand their texts to `Tokenizer.tokenize` in chunks of at most `TOKENIZE_CHUNK_CHARS`
characters. The tokenizer thread takes every chunk waiting when it wakes (up to `TURN_CHARS`,
first come first served) and tokenises them in one batch call per truncation mode: a batch call
costs a fraction per text of one call per request, and under load many requests wait at once.
A huge request delays a small one by a turn, not by all of it. Results go back to the event
loop with one wake-up per turn. A chunk whose request gave up (deadline, disconnect) is skipped.
When a batch call fails (a text too long, a text the tokenizer refuses), the turn is tokenised
again a request at a time, so only the request holding the bad text fails, with a 4xx naming it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.serving.errors import InvalidText, RequestTimeout, ServiceError
from app.serving.text_encoding import Text

log = logging.getLogger(__name__)
TOKENIZE_CHUNK_CHARS = 32_768  # a request's texts are queued in chunks of this many characters
TURN_CHARS = 65_536  # what one turn of the tokenizer thread takes (a few ms of work)


@dataclass(eq=False)
class Chunk:
    texts: list[Text]  # a text, or a (text, text_pair)
    first: int  # index of texts[0] in its request
    truncation: bool
    future: asyncio.Future
    chars: int


class Encodes(Protocol):
    """What tokenising needs: an `Engine` in process, a `TextEncoder` in an API process."""

    def tokenize(
        self, texts: Sequence[Text], *, truncation: bool = True, first: int = 0
    ) -> list[list[int]]: ...


class Tokenizer:
    """The tokenizer thread and its inbox; `tokenize` is called on the event loop."""

    def __init__(self, encoder: Encodes, *, name: str = "tokenize") -> None:
        self.encoder = encoder
        self._inbox: queue.SimpleQueue[Chunk | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._closing = False

    def close(self) -> None:
        """Stop the thread after the turn it is in (chunks still queued are dropped)."""
        if self._started:
            self._inbox.put(None)

    async def tokenize(
        self, texts: Sequence[Text], *, truncation: bool, deadline: float
    ) -> list[list[int]]:
        """Token ids of `texts` (TextTooLong from the engine; RequestTimeout past `deadline`)."""
        if not self._started:
            self._started = True
            self._thread.start()
        loop = asyncio.get_running_loop()
        chunks = [
            Chunk(part, first, truncation, loop.create_future(), sum(map(_chars, part)))
            for first, part in chunk_texts(texts, TOKENIZE_CHUNK_CHARS)
        ]
        for chunk in chunks:
            self._inbox.put(chunk)
        ids: list[list[int]] = []
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                for chunk in chunks:
                    ids += await chunk.future
        except TimeoutError:
            raise RequestTimeout("the deadline passed while tokenising") from None
        finally:
            for chunk in chunks:
                chunk.future.cancel()  # no-op when done; else the thread skips it
        return ids

    # ---- the tokenizer thread ----------------------------------------------------------------
    def _run(self) -> None:
        held: Chunk | None = None
        while True:
            first = held or self._inbox.get()
            if first is None:
                return
            turn, held = self._take(first)
            if turn:
                loop = turn[0].future.get_loop()
                results = self._encode(turn)
                try:
                    loop.call_soon_threadsafe(_settle, turn, results)
                except RuntimeError:  # the loop closed: nobody waits any more
                    return
            if self._closing:
                return

    def _take(self, first: Chunk) -> tuple[list[Chunk], Chunk | None]:
        """The chunks of one turn (live ones only) and the first chunk of the next, if any."""
        turn = [first] if not first.future.done() else []
        chars = first.chars
        while chars < TURN_CHARS:
            try:
                chunk = self._inbox.get_nowait()
            except queue.Empty:
                return turn, None
            if chunk is None:
                self._closing = True
                return turn, None
            if chunk.future.done():
                continue
            if turn and chars + chunk.chars > TURN_CHARS:
                return turn, chunk
            turn.append(chunk)
            chars += chunk.chars
        return turn, None

    def _encode(self, turn: list[Chunk]) -> list[Any]:
        """Per chunk: its token ids, or the exception it fails with."""
        results: list[Any] = [None] * len(turn)
        for truncation in (True, False):
            picked = [i for i, chunk in enumerate(turn) if chunk.truncation is truncation]
            if not picked:
                continue
            texts = [text for i in picked for text in turn[i].texts]
            try:
                ids = self.encoder.tokenize(texts, truncation=truncation)
            except Exception as exc:  # some chunk's text fails: find which, one by one
                if not isinstance(exc, ServiceError):
                    log.warning("tokenising %d texts failed (%s): one request at a time",
                                len(texts), type(exc).__name__)  # fmt: skip
                for i in picked:
                    results[i] = self._encode_one(turn[i])
                continue
            start = 0
            for i in picked:
                results[i] = ids[start : start + len(turn[i].texts)]
                start += len(turn[i].texts)
        return results

    def _encode_one(self, chunk: Chunk) -> Any:
        """The chunk's ids, or the error it fails with (its own; never another request's)."""
        try:
            texts, first = chunk.texts, chunk.first
            return self.encoder.tokenize(texts, truncation=chunk.truncation, first=first)
        except ServiceError as exc:
            return exc
        except Exception as exc:
            return self._culprit(chunk, exc)

    def _culprit(self, chunk: Chunk, exc: Exception) -> BaseException:
        """The error of the first text of `chunk` that fails alone: InvalidText (a 4xx) naming
        it; `exc` itself (a 500) when none does, as a tokenizer bug."""
        for offset, text in enumerate(chunk.texts):
            index = chunk.first + offset
            try:
                self.encoder.tokenize([text], truncation=chunk.truncation, first=index)
            except ServiceError as error:
                return error
            except Exception as error:
                return InvalidText(
                    f"inputs[{index}] cannot be tokenised ({type(error).__name__}): send "
                    "valid Unicode text (no lone surrogates such as \\ud800)"
                )
        log.error("tokenising a request failed", exc_info=exc)
        return exc


def _settle(turn: list[Chunk], results: list[Any]) -> None:
    """On the event loop: hand each chunk its ids (or its error)."""
    for chunk, result in zip(turn, results, strict=True):
        if chunk.future.done():
            continue
        if isinstance(result, BaseException):
            chunk.future.set_exception(result)
        else:
            chunk.future.set_result(result)


def _chars(text: Text) -> int:
    return len(text) if isinstance(text, str) else sum(map(len, text))


def chunk_texts(texts: Sequence[Text], max_chars: int) -> list[tuple[int, list[Text]]]:
    """Consecutive runs of `texts` of at most `max_chars` characters (a longer text alone),
    each with the index of its first text."""
    chunks: list[tuple[int, list[Text]]] = []
    size = 0
    for index, text in enumerate(texts):
        chars = _chars(text)
        if not chunks or size + chars > max_chars:
            chunks.append((index, []))
            size = 0
        chunks[-1][1].append(text)
        size += chars
    return chunks
