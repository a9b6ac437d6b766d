"""A namespaced adapter serves exactly what the same adapter serves under a plain name, for each
adapter method (slot and library paths), alone and beside others in one request."""

from __future__ import annotations

import pytest

TEXTS = ["a good film", "an awful plot", "fine"]
METHODS = ["seq_bn", "lora", "prefix_tuning", "ia3"]


@pytest.fixture(scope="module")
def names():
    return {m: (f"plain-{m.replace('_', '-')}", f"team-a/{m.replace('_', '-')}") for m in METHODS}


def _scores(client, body: dict) -> dict:
    answer = client.post("/classify", json={**body, "inputs": TEXTS, "top_k": None})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _flat(predictions: list[list[dict]]) -> list[tuple[str, float]]:
    return [(p["label"], p["score"]) for ranked in predictions for p in ranked]


def test_namespaced_adapters_score_like_plain_ones(serve, factory, names):
    with serve() as client:
        store = client.app.state.store
        for seed, (method, pair) in enumerate(names.items(), start=11):
            for name in pair:
                factory.add_to_store(store, name, seed=seed, config=method)
        for plain, spaced in names.values():
            alone = _scores(client, {"adapter": spaced})
            assert alone["adapter"] == spaced
            assert alone["predictions"] == _scores(client, {"adapter": plain})["predictions"]
        together = _scores(client, {"adapters": [n for _, n in names.values()] + ["alpha"]})
        for (plain, spaced), result in zip(names.values(), together["results"], strict=False):
            assert result["adapter"] == spaced
            expected = _flat(_scores(client, {"adapter": plain})["predictions"])
            got = _flat(result["predictions"])  # mixed passes: equal within float error
            assert [label for label, _ in got] == [label for label, _ in expected]
            assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-5)
        listed = client.get("/adapters", params={"prefix": "team-a/"}).json()
        assert [a["name"] for a in listed["adapters"]] == sorted(n for _, n in names.values())


def test_upload_download_and_reupload_under_namespaced_names(serve, factory, tmp_path):
    archive = factory.archive("up", tmp_path / "up.zip", seed=5)
    with serve() as client:
        with archive.open("rb") as f:
            created = client.post("/adapters", data={"name": "team-u/up"}, files={"file": f})
        assert created.status_code == 201, created.text
        assert created.json()["name"] == "team-u/up"
        assert client.get("/adapters/team-u/up").json()["version"] == 1
        download = client.get("/adapters/team-u/up/archive")
        assert download.status_code == 200
        assert 'filename="team-u~up-v1.zip"' in download.headers["content-disposition"]
        files = {"file": ("copy.zip", download.content)}
        again = client.post("/adapters", data={"name": "team-v/copy"}, files=files)
        assert again.status_code == 201, again.text
        texts = {"inputs": ["good"], "top_k": None}
        first = client.post("/classify", json={"adapter": "team-u/up", **texts}).json()
        second = client.post("/classify", json={"adapter": "team-v/copy", **texts}).json()
        assert first["predictions"] == second["predictions"]
        assert client.delete("/adapters/team-u/up").status_code == 200
        assert client.get("/adapters/team-u/up").status_code == 404
