"""The versions router and selectors in every classify protocol, on the real app (in-process)."""

from __future__ import annotations

import pytest

from tests.api.test_auth import ADMIN, KEYS, READER, _bearer

TEXTS = ["great phone", "awful battery"]


@pytest.fixture
def versioned(serve, factory):
    """alpha at versions 1 (seed 1, from the seeded store) and 2 (seed 11)."""
    with serve(keep_versions=3) as client:
        first = _classify(client, "alpha")
        factory.add_to_store(client.app.state.store, "alpha", seed=11, overwrite=True)
        client.first = first  # the predictions of version 1
        yield client


def _classify(client, adapter: str, **headers) -> dict:
    r = client.post("/classify", json={"adapter": adapter, "inputs": TEXTS}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_version_selector_serves_that_version(versioned):
    old = _classify(versioned, "alpha@1")
    assert (old["adapter"], old["version"]) == ("alpha@1", 1)
    assert old["predictions"] == versioned.first["predictions"]
    new = _classify(versioned, "alpha")
    assert (new["adapter"], new["version"]) == ("alpha", 2)
    assert new["predictions"] != old["predictions"]
    assert _classify(versioned, "alpha@2")["predictions"] == new["predictions"]
    assert _classify(versioned, "alpha@latest")["version"] == 2
    many = versioned.post("/classify", json={"adapters": ["alpha@1", "alpha"], "inputs": TEXTS})
    assert [(r["adapter"], r["version"]) for r in many.json()["results"]] == [
        ("alpha@1", 1),
        ("alpha", 2),
    ]


def test_versions_listing(versioned):
    r = versioned.get("/adapters/alpha/versions")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["latest"], body["keep"]) == ("alpha", 2, 3)
    assert [v["version"] for v in body["versions"]] == [2, 1]
    assert [v["share"] for v in body["versions"]] == [1.0, 0.0]
    assert body["aliases"] == {} and body["split"] == []
    assert versioned.get("/adapters/nope/versions").status_code == 404
    assert versioned.get("/adapters/Bad!/versions").status_code == 422


def test_moving_an_alias_is_a_rollback_on_the_next_request(versioned):
    r = versioned.put("/adapters/alpha/aliases/prod", json={"version": 2})
    assert r.status_code == 200 and r.json()["aliases"] == {"prod": 2}
    assert _classify(versioned, "alpha@prod")["version"] == 2
    r = versioned.put("/adapters/alpha/aliases/prod", json={"version": 1})
    assert [v["aliases"] for v in r.json()["versions"]] == [[], ["prod"]]
    rolled = _classify(versioned, "alpha@prod")
    assert rolled["version"] == 1 and rolled["predictions"] == versioned.first["predictions"]
    assert versioned.delete("/adapters/alpha/aliases/prod").json()["aliases"] == {}
    gone = versioned.post("/classify", json={"adapter": "alpha@prod", "inputs": "x"})
    assert gone.status_code == 404


def test_a_split_routes_the_bare_name_and_clearing_it_rolls_back(versioned):
    r = versioned.put("/adapters/alpha/split", json={"weights": {"1": 100, "2": 0}})
    assert r.status_code == 200, r.text
    assert [(s["target"], s["version"], s["share"]) for s in r.json()["split"]] == [
        ("1", 1, 1.0),
        ("2", 2, 0.0),
    ]
    assert _classify(versioned, "alpha")["version"] == 1
    assert _classify(versioned, "alpha@2")["version"] == 2  # an explicit version wins
    assert versioned.delete("/adapters/alpha/split").json()["split"] == []
    assert _classify(versioned, "alpha")["version"] == 2


def test_a_routing_key_sticks_to_one_version(versioned):
    versioned.put("/adapters/alpha/split", json={"weights": {"1": 50, "2": 50}})
    seen = {}
    for i in range(16):
        key = f"user-{i}"
        versions = {_classify(versioned, "alpha", **{"X-Routing-Key": key})["version"]} | {
            _classify(versioned, "alpha", **{"X-Routing-Key": key})["version"] for _ in range(3)
        }
        assert len(versions) == 1, key
        seen[key] = versions.pop()
    assert set(seen.values()) == {1, 2}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("put", "/adapters/alpha/aliases/prod", {"version": 9}, 404),
        ("put", "/adapters/alpha/aliases/latest", {"version": 1}, 422),
        ("put", "/adapters/alpha/aliases/Prod", {"version": 1}, 422),
        ("put", "/adapters/nope/aliases/prod", {"version": 1}, 404),
        ("delete", "/adapters/alpha/aliases/prod", None, 404),
        ("put", "/adapters/alpha/split", {"weights": {}}, 422),
        ("put", "/adapters/alpha/split", {"weights": {"1": 0}}, 422),
        ("put", "/adapters/alpha/split", {"weights": {"canary": 1}}, 404),
        ("delete", "/adapters/alpha/versions/2", None, 409),
        ("delete", "/adapters/alpha/versions/7", None, 404),
    ],
)
def test_errors(versioned, method, path, body, status):
    kwargs = {"json": body} if body is not None else {}
    r = getattr(versioned, method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert "code" in r.json()["error"]


def test_in_use_versions_and_aliases_are_refused(versioned):
    versioned.put("/adapters/alpha/aliases/canary", json={"version": 1})
    versioned.put("/adapters/alpha/split", json={"weights": {"2": 90, "canary": 10}})
    assert versioned.delete("/adapters/alpha/aliases/canary").status_code == 409
    assert versioned.delete("/adapters/alpha/versions/1").status_code == 409
    versioned.delete("/adapters/alpha/split")
    versioned.delete("/adapters/alpha/aliases/canary")
    r = versioned.delete("/adapters/alpha/versions/1")
    assert r.status_code == 200 and [v["version"] for v in r.json()["versions"]] == [2]


def test_every_protocol_takes_selectors(versioned):
    versioned.put("/adapters/alpha/aliases/prod", json={"version": 1})
    hf = versioned.post("/models/alpha@prod", json={"inputs": TEXTS})
    assert hf.status_code == 200 and hf.headers["x-adapter-version"] == "1"
    oip = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": TEXTS}]}
    for path, version in [
        ("/v2/models/alpha/versions/1/infer", "1"),
        ("/v2/models/alpha/versions/prod/infer", "1"),
        ("/v2/models/alpha@1/infer", "1"),
        ("/v2/models/alpha/infer", "2"),
    ]:
        r = versioned.post(path, json=oip)
        assert r.status_code == 200, (path, r.text)
        assert r.json()["model_version"] == version, path
    assert versioned.get("/v2/models/alpha/versions/1/ready").status_code == 200
    assert versioned.post("/v2/models/alpha/versions/5/infer", json=oip).status_code == 404


def test_the_versions_routes_need_admin(serve):
    with serve(api_keys=KEYS) as client:
        reader, admin = _bearer(READER), _bearer(ADMIN)
        assert client.get("/adapters/alpha/versions", headers=reader).status_code == 403
        r = client.put("/adapters/alpha/aliases/p", json={"version": 1}, headers=reader)
        assert r.status_code == 403
        assert client.put("/adapters/alpha/split", json={"weights": {"1": 1}}).status_code == 401
        r = client.put("/adapters/alpha/aliases/p", json={"version": 1}, headers=admin)
        assert r.status_code == 200
        r = client.post("/classify", json={"adapter": "alpha@p", "inputs": "x"}, headers=reader)
        assert r.status_code == 200 and r.json()["version"] == 1
