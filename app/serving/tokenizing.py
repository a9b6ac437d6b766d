"""Tokenising requests on the tokenizer thread: in turns, under each request's deadline.

A request is tokenised a chunk of texts at a time (`TOKENIZE_CHUNK_CHARS` characters): the
tokenizer thread is FIFO, so concurrent requests take turns chunk by chunk and a huge request
delays a small one by a chunk, not by all of it. The request's deadline covers the wait.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from concurrent.futures import Executor

from app.serving.engine import Engine, Text
from app.serving.errors import RequestTimeout

TOKENIZE_CHUNK_CHARS = 32_768  # one turn on the tokenizer thread (a few ms)


async def tokenize_in_turns(
    executor: Executor,
    engine: Engine,
    texts: Sequence[Text],
    *,
    truncation: bool,
    deadline: float,
) -> list[list[int]]:
    """Token ids of `texts` (TextTooLong from the engine; RequestTimeout past `deadline`)."""
    loop = asyncio.get_running_loop()
    ids: list[list[int]] = []
    try:
        async with asyncio.timeout(deadline - time.monotonic()):  # no extra task or hop
            for first, chunk in chunk_texts(texts, TOKENIZE_CHUNK_CHARS):
                work = functools.partial(engine.tokenize, chunk, truncation=truncation, first=first)
                ids += await loop.run_in_executor(executor, work)
    except TimeoutError:
        raise RequestTimeout("the deadline passed while tokenising") from None
    return ids


def chunk_texts(texts: Sequence[Text], max_chars: int) -> list[tuple[int, list[Text]]]:
    """Consecutive runs of `texts` of at most `max_chars` characters (a longer text alone),
    each with the index of its first text."""
    chunks: list[tuple[int, list[Text]]] = []
    size = 0
    for index, text in enumerate(texts):
        if not chunks or size + len(text) > max_chars:
            chunks.append((index, []))
            size = 0
        chunks[-1][1].append(text)
        size += len(text)
    return chunks
