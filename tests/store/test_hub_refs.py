"""What a hub import may name: repo ids, revisions, subfolders (issue 26 #1), as text."""

from __future__ import annotations

import pytest

from adapters_store import HubError
from adapters_store.hub_refs import check_repo_id, check_revision, check_subfolder

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "revision", [None, "main", "v1.0", "refs/pr/1", "release_2+cu118", "feature/x-y", COMMIT]
)
def test_branches_tags_and_commits_pass(revision):
    assert check_revision(revision) == revision


@pytest.mark.parametrize(
    "revision",
    [
        "", "/abs/path", "/tmp/store/team-a~mine/README.md", "../x", "a/../b", "a..b",
        "refs\\heads\\main", "main\n", "main\r", " main", "main ", "ma in", "a//b", "a/",
        ".hidden", "a/.b", "x.lock", "a/x.lock/b", "-x", "+x", "x.", "@{0}", "ma\x00in",
        "main\t", "a:b", "a~1", "a^", "a?", "a*", "a[b", "é", "a" * 256,
    ],
)  # fmt: skip
def test_paths_and_odd_revisions_are_refused(revision):
    with pytest.raises(HubError, match="revision"):
        check_revision(revision)


@pytest.mark.parametrize("repo_id", ["gpt2", "AdapterHub/roberta-base-pf-imdb", "o/x.y_z"])
def test_repo_ids_pass(repo_id):
    assert check_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    "repo_id",
    [
        "", "org/", "/org/x", "org/x/y", "../org/x", "org/..", "a--b/c", "org/x ", " org/x",
        "org/x\n", "org\\x", "org/x.", "o/" + "x" * 95, "org/é",
    ],
)  # fmt: skip
def test_bad_repo_ids_are_refused(repo_id):
    with pytest.raises(HubError, match="repo_id"):
        check_repo_id(repo_id)


@pytest.mark.parametrize(
    ("subfolder", "checked"),
    [(None, None), ("", None), ("demo", "demo"), ("demo/", "demo"), ("a b/c_d.e", "a b/c_d.e")],
)
def test_subfolders_pass(subfolder, checked):
    assert check_subfolder(subfolder) == checked


@pytest.mark.parametrize(
    "subfolder",
    ["/etc", "..", "a/../b", ".", "a/./b", "a//b", " demo", "demo ", "demo\n", "a*", "a\\b"],
)
def test_bad_subfolders_are_refused(subfolder):
    with pytest.raises(HubError, match="subfolder"):
        check_subfolder(subfolder)
