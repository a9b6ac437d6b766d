"""GET /adapters through the real app: pages, cursors, filters, residency and refusals."""

from __future__ import annotations

import pytest

from tests.api.conftest import LABELS3


def _names(body: dict) -> list[str]:
    return [a["name"] for a in body["adapters"]]


def _get(client, **params) -> dict:
    r = client.get("/adapters", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _walk(client, **params) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        body = _get(client, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(_names(body))
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


@pytest.fixture
def many(client, factory):
    """alpha, beta, gamma (seq_bn, trained) + lora-a, lora-b (lora) + up (uploaded)."""
    store = client.app.state.store
    factory.add_to_store(store, "lora-a", seed=4, config="lora")
    factory.add_to_store(store, "lora-b", seed=5, config="lora")
    upload = factory.archive("up", store.root.parent / "up.zip", seed=6).read_bytes()
    r = client.post("/adapters", files={"file": ("up.zip", upload)}, data={"name": "up"})
    assert r.status_code == 201, r.text
    return client


ALL = ["alpha", "beta", "gamma", "lora-a", "lora-b", "up"]


def test_without_limit_the_whole_list_as_before(client):
    body = _get(client)
    assert _names(body) == ["alpha", "beta", "gamma"]
    assert body["next_cursor"] is None and body["total"] == 3
    beta = body["adapters"][1]
    assert beta["labels"] == {str(k): v for k, v in LABELS3.items()}
    assert beta["adapter_config"] == "seq_bn" and beta["size_bytes"] > 0
    assert beta == client.get("/adapters/beta").json()


def test_the_list_shows_residency(client):
    assert not any(a["resident"] for a in _get(client)["adapters"])
    r = client.post("/classify", json={"adapter": "beta", "inputs": "fine"})
    assert r.status_code == 200
    shown = {
        a["name"]: (a["resident"], a["last_used"] is not None)
        for a in _get(client, limit=2)["adapters"]
    }
    assert shown == {"alpha": (False, False), "beta": (True, True)}


@pytest.mark.parametrize(
    ("params", "pages"),
    [
        ({"limit": 1}, [[n] for n in ALL]),
        ({"limit": 4}, [ALL[:4], ALL[4:]]),
        ({"limit": 6}, [ALL]),
        ({"limit": 1000}, [ALL]),
        ({}, [ALL]),
        ({"limit": 1, "prefix": "lora-"}, [["lora-a"], ["lora-b"]]),
        ({"limit": 2, "method": "seq_bn"}, [["alpha", "beta"], ["gamma", "up"]]),
        ({"method": "lora"}, [["lora-a", "lora-b"]]),
        ({"limit": 1, "source": "uploaded"}, [["up"]]),
        ({"source": "hub"}, [[]]),
        ({"prefix": "g", "method": "seq_bn", "source": "trained"}, [["gamma"]]),
        ({"prefix": "nothing"}, [[]]),
        ({"prefix": "", "method": ""}, [ALL]),
    ],
)
def test_pages_and_filters(many, params, pages):
    assert _walk(many, **params) == pages
    assert _get(many, **params)["total"] == sum(len(p) for p in pages)


def test_a_cursor_stays_valid_while_adapters_come_and_go(many, factory):
    store = many.app.state.store
    first = _get(many, limit=2)
    assert _names(first) == ["alpha", "beta"]
    many.delete("/adapters/alpha")  # seen
    many.delete("/adapters/lora-a")  # not seen yet
    factory.add_to_store(store, "aaa", seed=7)  # before the cursor: not in this walk
    factory.add_to_store(store, "zed", seed=8)  # after it
    second = _get(many, limit=2, cursor=first["next_cursor"])
    assert _names(second) == ["gamma", "lora-b"] and second["total"] == 6
    third = _get(many, limit=2, cursor=second["next_cursor"])
    assert _names(third) == ["up", "zed"] and third["next_cursor"] is None


def _refused(client, params: dict, *words: str) -> None:
    r = client.get("/adapters", params=params)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    for word in words:
        assert word in error["message"], error["message"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": 0}, ["limit", "greater than or equal to 1"]),
        ({"limit": -5}, ["limit"]),
        ({"limit": 1001}, ["limit", "less than or equal to 1000"]),
        ({"limit": "ten"}, ["limit", "integer"]),
        ({"cursor": "not-a-cursor"}, ["cursor", "next_cursor"]),
        ({"cursor": "eyJhZnRlciI6IDF9"}, ["cursor"]),  # base64 JSON, but not ours
        ({"source": "stolen"}, ["source"]),
        ({"prefix": "x" * 130}, ["prefix"]),  # a namespace, "/" and a name: 129
    ],
)
def test_bad_limits_and_cursors_are_422_with_a_reason(client, params, words):
    _refused(client, params, *words)


def test_a_cursor_is_bound_to_its_filters(many):
    cursor = _get(many, limit=1, prefix="lora")["next_cursor"]
    assert _names(_get(many, limit=1, prefix="lora", cursor=cursor)) == ["lora-b"]
    _refused(many, {"limit": 1, "cursor": cursor}, "cursor", "other filters")
    _refused(many, {"limit": 1, "prefix": "lora", "method": "lora", "cursor": cursor}, "filters")
