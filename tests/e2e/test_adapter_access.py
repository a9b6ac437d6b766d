"""Adapter access per key, against a real `python -m app`: every route and protocol that names an
adapter x every kind of key. A name the key's patterns do not cover answers byte for byte what a
missing adapter answers (so a key learns nothing of the adapters beyond its patterns), listings
leave it out with correct totals and pages, and namespaced names route everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from adapters_store import AdapterStore
from tests.support.server import running_server
from tests.support.tiny import keyword_dataset, write_jsonl

ALL_KEY = "all-adapters-key-0123456789abcdefghij"
PATTERN_KEY = "pattern-key-0123456789abcdefghijklmno"
NOTHING_KEY = "nothing-key-0123456789abcdefghijklmno"
SCOPES = "admin+classify+download"
KEYS_FILE = f"""# adapter access test
{ALL_KEY} {SCOPES}
{PATTERN_KEY} {SCOPES} adapters=team-a/*,alpha rps=1000
{NOTHING_KEY} {SCOPES} adapters=team-z/*
"""
STORED = ["alpha", "beta", "team-a/sentiment", "team-a/topic", "team-b/sentiment"]
MISSING = "team-a/nope"  # stored nowhere, and covered by the pattern key's patterns
ALLOWED = {  # key kind -> the stored adapters it may use
    "no-keys": set(STORED),
    "all": set(STORED),
    "pattern": {"alpha", "team-a/sentiment", "team-a/topic"},
    "nothing": set(),
}
KEY_OF = {"no-keys": None, "all": ALL_KEY, "pattern": PATTERN_KEY, "nothing": NOTHING_KEY}
OIP_BODY = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["good"]}]}

Request = tuple[str, str, dict]


def _other(name: str) -> str:
    """A second adapter for a multi-adapter request, after the one the table asks about."""
    return "team-a/topic" if name == "alpha" else "alpha"


ROUTES: dict[str, Callable[[str], Request]] = {
    "adapter info": lambda n: ("GET", f"/adapters/{n}", {}),
    "download": lambda n: ("GET", f"/adapters/{n}/archive", {}),
    "download tar.gz": lambda n: ("GET", f"/adapters/{n}/archive?format=tar.gz", {}),
    "classify": lambda n: ("POST", "/classify", {"json": {"adapter": n, "inputs": "good"}}),
    "classify several": lambda n: (
        "POST",
        "/classify",
        {"json": {"adapters": [n, _other(n)], "inputs": ["good", "bad"]}},
    ),
    "hf inference": lambda n: ("POST", f"/models/{n}", {"json": {"inputs": "good"}}),
    "oip metadata": lambda n: ("GET", f"/v2/models/{n}", {}),
    "oip version metadata": lambda n: ("GET", f"/v2/models/{n}/versions/1", {}),
    "oip ready": lambda n: ("GET", f"/v2/models/{n}/ready", {}),
    "oip version ready": lambda n: ("GET", f"/v2/models/{n}/versions/1/ready", {}),
    "oip infer": lambda n: ("POST", f"/v2/models/{n}/infer", {"json": OIP_BODY}),
    "oip version infer": lambda n: ("POST", f"/v2/models/{n}/versions/1/infer", {"json": OIP_BODY}),
    "load": lambda n: ("POST", f"/adapters/{n}/load", {}),
    "unload": lambda n: ("POST", f"/adapters/{n}/unload", {}),
    "delete": lambda n: ("DELETE", f"/adapters/{n}", {}),  # only tried on names it may not use
}
# Routes that create the name: for a name the key may not use, the 404 of a missing adapter.
CREATE_ROUTES: dict[str, Callable[[str], Request]] = {
    "upload": lambda n: (
        "POST",
        "/adapters",
        {"data": {"name": n}, "files": {"file": ("a.zip", b"not a zip")}},
    ),
    "hub import": lambda n: ("POST", "/adapters/import", {"json": {"name": n, "repo_id": "o/r"}}),
    "train job": lambda n: (
        "POST",
        "/train-jobs",
        {"json": {"name": n, "dataset": "rows.jsonl", "eval_split": None}},
    ),
}


def _data_dir(tmp_path_factory, factory, label: str) -> Path:
    data = tmp_path_factory.mktemp(label)
    store = AdapterStore(data / "adapters")
    for seed, name in enumerate(STORED, start=1):
        factory.add_to_store(store, name, seed=seed)
    write_jsonl(data / "datasets" / "rows.jsonl", keyword_dataset(40, seed=1))
    return data


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, factory, tiny_model_dir):
    data = _data_dir(tmp_path_factory, factory, "access-keyed")
    keys = data / "keys.txt"
    keys.write_text(KEYS_FILE)
    env = {"APP_EMBEDDED_WORKER": "false", "APP_API_KEYS_FILE": keys}
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def keyless(tmp_path_factory, factory, tiny_model_dir):
    data = _data_dir(tmp_path_factory, factory, "access-keyless")
    env = {"APP_EMBEDDED_WORKER": "false"}
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as srv:
        yield srv


@pytest.fixture(params=list(KEY_OF), scope="module")
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def call(kind, request):
    server = request.getfixturevalue("keyless" if kind == "no-keys" else "keyed")
    client = httpx.Client(base_url=server.url, timeout=60)
    if KEY_OF[kind]:
        client.headers["Authorization"] = f"Bearer {KEY_OF[kind]}"

    def _call(method: str, path: str, kwargs: dict, *, as_all: bool = False) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ALL_KEY}"} if as_all and KEY_OF[kind] else {}
        return client.request(method, path, headers=headers, **kwargs)

    yield _call
    client.close()


def _missing_answer(call, route: Callable[[str], Request], name: str) -> tuple[int, str, bytes]:
    """What the server answers when `name` is missing: MISSING asked with the all-adapters key
    (or none), the name then written in."""
    missing = call(*route(MISSING), as_all=True)
    assert missing.status_code == 404, missing.text
    body = missing.content.replace(MISSING.encode(), name.encode())
    return missing.status_code, missing.headers["content-type"], body


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_route_answers_an_adapter_the_key_may_not_use_as_missing(kind, call, route):
    for name in STORED:
        if name in ALLOWED[kind]:
            if route != "delete":
                answer = call(*ROUTES[route](name))
                assert answer.status_code == 200, (kind, route, name, answer.text)
            continue
        denied = call(*ROUTES[route](name))
        answer = (denied.status_code, denied.headers["content-type"], denied.content)
        assert answer == _missing_answer(call, ROUTES[route], name), (kind, route, name)


@pytest.mark.parametrize("route", list(CREATE_ROUTES))
def test_a_key_cannot_create_an_adapter_outside_its_patterns(kind, call, route):
    for name in ["team-b/new", "gamma", "team-a/new"]:
        answer = call(*CREATE_ROUTES[route](name))
        if kind == "nothing" or (kind == "pattern" and not name.startswith("team-a/")):
            expected = _missing_answer(call, ROUTES["adapter info"], name)
            assert (answer.status_code, answer.headers["content-type"], answer.content) == expected
        else:  # refused or accepted for its own reasons (the zip, the hub), never 404
            assert answer.status_code != 404, (kind, route, name, answer.text)


def _listed(call, **params) -> list[str]:
    names, totals, cursor = [], set(), None
    while True:  # one adapter a page: the cursors walk the filtered listing
        query = {"limit": 1, **params, **({"cursor": cursor} if cursor else {})}
        page = call("GET", "/adapters", {"params": query}).json()
        names += [a["name"] for a in page["adapters"]]
        totals.add(page["total"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert totals == {len(names)}, (names, totals)  # every page counts the same
            return names


def test_the_listing_shows_only_what_the_key_may_use(kind, call):
    expected = sorted(ALLOWED[kind])
    whole = call("GET", "/adapters", {}).json()
    assert [a["name"] for a in whole["adapters"]] == expected
    assert whole["total"] == len(expected)
    assert _listed(call) == expected
    first = call("GET", "/adapters", {"params": {"limit": 1}}).json()
    assert first["total"] == len(expected)
    assert (first["next_cursor"] is not None) == (len(expected) > 1)
    in_team_a = [n for n in expected if n.startswith("team-a/")]
    assert _listed(call, prefix="team-a/") == in_team_a
    assert call("GET", "/adapters", {"params": {"prefix": "team-b/"}}).json()["total"] == len(
        [n for n in expected if n.startswith("team-b/")]
    )


def test_training_jobs_of_other_adapters_are_missing_jobs(kind, call):
    if kind == "no-keys":
        pytest.skip("one key sees every job: covered by the jobs tests")
    ids = {}
    for name in ["team-a/trained", "team-b/trained"]:
        body = {"name": name, "dataset": "rows.jsonl", "eval_split": None}
        created = call("POST", "/train-jobs", {"json": body}, as_all=True)
        assert created.status_code in (202, 409), created.text
        jobs = call("GET", "/train-jobs", {}, as_all=True).json()["jobs"]
        ids[name] = next(j["id"] for j in jobs if j["adapter"]["name"] == name)
    listed = {j["adapter"]["name"] for j in call("GET", "/train-jobs", {}).json()["jobs"]}
    mine = {"all": set(ids), "pattern": {"team-a/trained"}, "nothing": set()}[kind]
    assert listed & set(ids) == mine
    if kind != "all":  # the jobs other tests queued too: only those of its own adapters
        assert all(n.startswith("team-a/") or n == "alpha" for n in listed), listed
        assert kind == "pattern" or not listed
    absent = call("GET", "/train-jobs/0123456789abcdef", {}, as_all=True)
    assert absent.status_code == 404
    for name, job_id in ids.items():
        got = call("GET", f"/train-jobs/{job_id}", {})
        if name in mine:
            assert got.status_code == 200 and got.json()["adapter"]["name"] == name
            continue
        expected = absent.content.replace(b"0123456789abcdef", job_id.encode())
        assert (got.status_code, got.content) == (404, expected)
        cancel = call("POST", f"/train-jobs/{job_id}/cancel", {})
        assert (cancel.status_code, cancel.content) == (404, expected)
        assert call("GET", f"/train-jobs/{job_id}", {}, as_all=True).json()["status"] == "queued"


def test_namespaced_names_route_in_every_protocol(keyless):
    client = httpx.Client(base_url=keyless.url, timeout=60)
    name = "team-a/sentiment"
    scores = client.post("/classify", json={"adapter": name, "inputs": "good"}).json()
    assert scores["adapter"] == name
    hf = client.post(f"/models/{name}", json={"inputs": "good"}).json()
    assert hf[0][0] == scores["predictions"][0][0]  # the best label of the only input
    oip = client.post(f"/v2/models/{name}/infer", json=OIP_BODY).json()
    assert oip["model_name"] == name
    encoded = client.get(f"/adapters/{quote(name, safe='')}")  # as the console asks for it
    assert encoded.status_code == 200 and encoded.json()["name"] == name
    archive = client.get(f"/adapters/{name}/archive")
    assert archive.status_code == 200
    assert "team-a~sentiment-v1.zip" in archive.headers["content-disposition"]
    # the route words end a path: adapter `alpha`'s archive, never an adapter `alpha/archive`
    assert client.get("/adapters/alpha/archive").status_code == 200
    assert client.get("/v2/models/alpha/ready").json() == {"name": "alpha", "ready": True}
    assert client.get("/v2/models/team-a/sentiment/ready").json()["name"] == name
    bad = client.get("/adapters/a/b/c")
    assert bad.status_code == 404  # three levels: no route
    invalid = client.get("/adapters/Team-A/x")
    assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "invalid_name"
    upload = client.post(
        "/adapters", data={"name": "team-a/archive"}, files={"file": ("a.zip", b"x")}
    )
    assert upload.status_code == 422 and upload.json()["error"]["code"] == "invalid_name"
    client.close()
