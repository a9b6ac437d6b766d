"""The tokenizer thread batches several requests per call: a text the tokenizer refuses (a lone
surrogate) must fail only the request that sent it, with a 4xx naming the text (issue 26: a key
sending one got 68 of another key's 756 requests answered 500)."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.serving.engine import Engine
from app.serving.errors import InvalidText, TextTooLong
from app.serving.tokenizing import Chunk, Tokenizer

BAD = "bad \ud800 text"


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir), max_length=16)


def _turn(*requests: tuple[list, bool]) -> list[Chunk]:
    loop = asyncio.new_event_loop()
    try:
        return [Chunk(texts, 0, trunc, loop.create_future(), 0) for texts, trunc in requests]
    finally:
        loop.close()


def test_a_refused_text_fails_only_its_own_request(engine):
    good, pairs = ["a good film", "great"], [("a", "b"), "c"]
    turn = _turn((good, True), (["fine", BAD], True), (pairs, True), (["ok"], False))
    results = Tokenizer(engine)._encode(turn)
    assert results[0] == engine.tokenize(good)
    assert results[2] == engine.tokenize(pairs)
    assert results[3] == engine.tokenize(["ok"], truncation=False)
    assert isinstance(results[1], InvalidText), results[1]
    assert "inputs[1]" in results[1].message and "surrogate" in results[1].message


def test_a_pair_with_a_refused_text_and_a_long_text_are_told_apart(engine):
    long = " ".join(["word"] * 50)
    turn = _turn(([("x", BAD)], False), ([long], False), (["short"], False))
    results = Tokenizer(engine)._encode(turn)
    assert isinstance(results[0], InvalidText) and "inputs[0]" in results[0].message
    assert isinstance(results[1], TextTooLong)
    assert results[2] == engine.tokenize(["short"], truncation=False)


def test_through_the_thread_the_bad_request_gets_its_error(engine):
    async def main() -> tuple:
        tokenizer = Tokenizer(engine)
        deadline = time.monotonic() + 30
        try:
            return await asyncio.gather(
                tokenizer.tokenize(["fine", BAD], truncation=True, deadline=deadline),
                tokenizer.tokenize(["a good film"], truncation=True, deadline=deadline),
                return_exceptions=True,
            )
        finally:
            tokenizer.close()

    bad, good = asyncio.run(main())
    assert isinstance(bad, InvalidText) and "inputs[1]" in bad.message
    assert good == engine.tokenize(["a good film"])
