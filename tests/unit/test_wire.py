"""The engine process's wire (app/procs/wire.py): messages round-trip exactly, token ids pack
and unpack, and every domain error comes back as its own class with its code, message and
retry hint, so the HTTP answer is the one a single process gives."""

from __future__ import annotations

import math

import pytest

from adapters_store import AdapterNotFound, InvalidName, StoreError
from app.api.errors import STATUS_BY_CODE, domain_error_response
from app.procs import wire
from app.serving.errors import (
    InferenceFailed,
    NonFiniteScores,
    QueueFull,
    RequestTimeout,
    ServiceError,
    ServiceStopping,
)
from app.serving.passes import AdapterResult, Classified
from app.tenancy.limiter import RateLimited, TooManyInFlight


def test_a_classified_answer_round_trips_exactly():
    classified = Classified(
        [
            AdapterResult("one", 3, {0: "no", 1: "yes"}, [[0.1, -2.5e-300], [1 / 3, 7.0]]),
            AdapterResult(
                "emotions",
                1,
                {0: "joy", 1: "anger"},
                [[math.pi, -math.e]],
                task="multi_label",
                thresholds={0: 0.3, 1: 0.5},
            ),
        ],
        queue_ms=1.25,
        inference_ms=0.5,
    )
    message = wire.Answer(7, classified, queue_ms=1.25, inference_ms=0.5)
    back = wire.from_engine(wire.encode(message))
    assert back == message
    assert back.classified.results[1].logits[0][0] == math.pi  # bit for bit
    assert isinstance(back.classified.results[0].labels, dict)
    assert list(back.classified.results[0].labels) == [0, 1]  # int keys stay ints


@pytest.mark.parametrize(
    "ids", [[[0, 5, 2]], [[0, 2], [], [0, 70_000, 2**31 - 1, 2]], [], [[1] * 512] * 64]
)
def test_token_ids_pack_and_unpack(ids):
    flat, lengths = wire.pack_ids(ids)
    assert len(flat) == 4 * sum(map(len, ids))  # one int32 buffer
    assert wire.unpack_ids(flat, lengths) == ids
    request = wire.Classify(1, flat, lengths, ["a", "b"], False, "key-1")
    back = wire.to_engine(wire.encode(request))
    assert back == request and wire.unpack_ids(back.ids, back.lengths) == ids


@pytest.mark.parametrize(
    "error",
    [
        AdapterNotFound("adapter 'x' not found"),
        InvalidName("bad name"),
        QueueFull("the queue is full"),
        RequestTimeout("no result within 30 s"),
        NonFiniteScores("NaN"),
        ServiceStopping("the service is shutting down"),
        RateLimited("over the limit", retry_after_s=7),
        TooManyInFlight("too many", retry_after_s=1),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_engine_error_comes_back_as_its_own_class(error):
    failure = wire.failure_of(error)
    back = wire.error_of(wire.from_engine(wire.encode(wire.Reply(1, failure=failure))).failure)
    assert type(back) is type(error)
    assert back.code == error.code and back.message == error.message
    assert getattr(back, "retry_after_s", None) == getattr(error, "retry_after_s", None)
    want, got = domain_error_response(error), domain_error_response(back)
    assert (got.status_code, got.body) == (want.status_code, want.body)
    assert dict(got.headers) == dict(want.headers)


def test_every_domain_error_class_is_in_the_registry():
    classes = wire.error_classes()
    for cls in (AdapterNotFound, QueueFull, RateLimited, TooManyInFlight, StoreError):
        assert classes[f"{cls.__module__}.{cls.__qualname__}"] is cls
    assert all(issubclass(c, (StoreError, ServiceError)) for c in classes.values())


def test_an_unknown_class_keeps_its_code_and_message():
    failure = wire.Failure("elsewhere.Gone", "queue_full", "full", 2)
    back = wire.error_of(failure)
    assert isinstance(back, wire.RemoteFailure)
    assert (back.code, back.message, back.retry_after_s) == ("queue_full", "full", 2)
    assert STATUS_BY_CODE[back.code] == domain_error_response(back).status_code == 503


def test_one_turn_travels_as_one_frame_and_a_malformed_message_drops_alone():
    flat, lengths = wire.pack_ids([[0, 5, 2]])
    turn = [wire.Classify(1, flat, lengths, ["a"]), wire.Cancel(1), wire.Call(2, "residency")]
    assert wire.to_engine_turn(wire.encode(turn)) == (turn, 0)
    answers = [wire.Answer(1, failure=wire.failure_of(QueueFull("full"))), wire.Reply(2, {})]
    assert wire.from_engine_turn(wire.encode(answers)) == (answers, 0)
    mixed = wire.encode([turn[0], {"not": "a message"}, 7, turn[1]])
    assert wire.to_engine_turn(mixed) == ([turn[0], turn[1]], 2)
    assert wire.to_engine_turn(b"\xc1") == ([], 1)  # not msgpack at all
    assert wire.to_engine_turn(wire.encode(turn[0]))[0] == []  # a message, not a list of them


def test_a_reply_that_cannot_be_encoded_fails_alone():
    fine, broken = wire.Reply(1, {"a": 1}), wire.Reply(2, result=object())
    refused = []
    frame = wire.encode_turn([fine, broken], lambda m, exc: refused.append(m))
    assert wire.from_engine_turn(frame) == ([fine], 0) and refused == [broken]
    replies, _ = wire.from_engine_turn(wire.encode_turn([broken, fine], wire.failed_in_place))
    assert [r.id for r in replies] == [2, 1] and replies[1] == fine
    assert type(wire.error_of(replies[0].failure)) is InferenceFailed
