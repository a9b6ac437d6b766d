"""GET /datasets and the console's static routes, on the real app (in-process)."""

from __future__ import annotations

import csv
import json
import os

import pytest

from tests.support.tiny import write_jsonl

ADMIN = "admin-key-0123456789abcdef"
READER = "reader-key-0123456789abcdef"
KEYS = f"{ADMIN}:admin+classify,{READER}:classify"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
SCRIPT = "<script>document.title='pwned'</script>"


@pytest.fixture
def roots(tmp_path):
    """Two data roots with files, a secret file outside them, and links pointing out."""
    first, second, outside = tmp_path / "r1", tmp_path / "r2", tmp_path / "outside"
    for folder in (first / "nested", second, outside):
        folder.mkdir(parents=True)
    rows = [{"review": f"row {i} {SCRIPT}", "stars": i % 2} for i in range(12)]
    write_jsonl(first / "reviews.jsonl", rows)
    with (second / "tweets.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "tweet", "category"])
        writer.writeheader()
        writer.writerows({"id": i, "tweet": "a long tweet text", "category": "x"} for i in range(3))
    (first / "nested" / "arr.json").write_text(json.dumps([{"text": "t", "label": "a"}]))
    (first / "notes.txt").write_text("not a dataset")
    write_jsonl(outside / "secret.jsonl", [{"text": "SECRET", "label": 1}])
    os.symlink(outside / "secret.jsonl", first / "link.jsonl")
    os.symlink(outside, first / "linkdir")
    return first, second, outside


@pytest.fixture
def client_roots(serve, roots):
    first, second, _ = roots
    with serve(api_keys=KEYS, data_roots=[first, second]) as client:
        yield client


def test_lists_files_under_the_roots_only(client_roots, roots):
    r = client_roots.get("/datasets", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    names = [d["name"] for d in body["datasets"]]
    assert names == ["nested/arr.json", "reviews.jsonl", "tweets.csv"]
    assert "SECRET" not in r.text
    by_name = {d["name"]: d for d in body["datasets"]}
    reviews = by_name["reviews.jsonl"]
    assert reviews["format"] == "jsonl"
    assert reviews["columns"] == ["review", "stars"]
    assert len(reviews["rows"]) == 5
    assert reviews["rows"][0]["review"] == f"row 0 {SCRIPT}"  # data, returned as is
    assert (reviews["text_column"], reviews["label_column"]) == ("review", "stars")
    assert reviews["path"] == str((roots[0] / "reviews.jsonl").resolve())
    tweets = by_name["tweets.csv"]
    assert tweets["columns"] == ["id", "tweet", "category"]
    assert (tweets["text_column"], tweets["label_column"]) == ("tweet", "category")
    assert by_name["nested/arr.json"]["rows"] == [{"text": "t", "label": "a"}]


def test_one_file_and_traversal_refused(client_roots, roots):
    ok = client_roots.get(
        "/datasets/file", params={"path": "reviews.jsonl", "rows": 12}, headers=AUTH
    )
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["rows"]) == 12
    outside = roots[2] / "secret.jsonl"
    for path in (
        "../outside/secret.jsonl",
        str(outside),
        "link.jsonl",
        "linkdir/secret.jsonl",
        "/etc/passwd",
        "bad\x00name.jsonl",
        "a" * 5000 + ".jsonl",
    ):
        r = client_roots.get("/datasets/file", params={"path": path}, headers=AUTH)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["code"] == "dataset_forbidden"
        assert "SECRET" not in r.text
    missing = client_roots.get("/datasets/file", params={"path": "nope.jsonl"}, headers=AUTH)
    assert missing.json()["error"]["code"] == "dataset_not_found"
    not_data = client_roots.get("/datasets/file", params={"path": "notes.txt"}, headers=AUTH)
    assert not_data.json()["error"]["code"] == "dataset_not_found"


@pytest.mark.parametrize("path", ["/datasets", "/datasets/file?path=reviews.jsonl"])
def test_datasets_need_the_admin_scope(client_roots, path):
    assert client_roots.get(path).status_code == 401
    reader = client_roots.get(path, headers={"Authorization": f"Bearer {READER}"})
    assert reader.status_code == 403
    assert reader.json()["error"]["code"] == "forbidden"


def test_console_needs_no_key_and_has_a_strict_csp(client_roots):
    page = client_roots.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert '<script type="module" src="/console/app.js">' in page.text
    script = client_roots.get("/console/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    for bad in ("/console/index.html", "/console/..%2Fapi%2Fconsole.py", "/console/nope.js"):
        assert client_roots.get(bad).status_code == 404, bad


TEAM = "team-admin-key-0123456789abcdef"
TEAM_AUTH = {"Authorization": f"Bearer {TEAM}"}


@pytest.fixture
def client_team(serve, roots, tmp_path):
    """Keys from a file: the full admin, a team's admin (`adapters=team-a/*`), a reader."""
    keys = tmp_path / "keys.txt"
    keys.write_text(
        f"{ADMIN} admin+classify\n{TEAM} admin+classify adapters=team-a/*\n{READER} classify\n"
    )
    with serve(api_keys_file=keys, data_roots=[roots[0], roots[1]]) as client:
        yield client


def test_only_a_key_for_every_adapter_sees_the_servers_paths(client_team, roots, tmp_path):
    """Issue 26 #1: `roots` (and each file's absolute path) told a team's admin key where the
    server keeps its data, and so where the store lies."""
    full = client_team.get("/datasets", headers=AUTH).json()
    assert full["roots"] == [str(roots[0].resolve()), str(roots[1].resolve())]
    team = client_team.get("/datasets", headers=TEAM_AUTH)
    assert team.status_code == 200, team.text
    assert str(tmp_path) not in team.text  # no root, no absolute path
    body = team.json()
    assert body["roots"] == []
    assert [(d["name"], d["path"], d["root"]) for d in body["datasets"]] == [
        ("nested/arr.json", "nested/arr.json", ""), ("reviews.jsonl", "reviews.jsonl", ""),
    ]  # fmt: skip
    one = client_team.get("/datasets/file", params={"path": "reviews.jsonl"}, headers=TEAM_AUTH)
    assert one.status_code == 200 and one.json()["path"] == "reviews.jsonl"
    absolute = str(roots[0].resolve() / "reviews.jsonl")
    probe = client_team.get("/datasets/file", params={"path": absolute}, headers=TEAM_AUTH)
    assert probe.status_code == 422 and probe.json()["error"]["code"] == "dataset_forbidden"
    reader = client_team.get("/datasets", headers={"Authorization": f"Bearer {READER}"})
    assert reader.status_code == 403 and str(tmp_path) not in reader.text
