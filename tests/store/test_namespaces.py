"""Namespaced adapter names (`team-a/sentiment`): names, folders, the listing index, patterns,
hub import; and the patterns a key's `adapters=` option holds."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from adapters_store import AdapterStore, BaseModelRef, Filters, InvalidName
from adapters_store import format as fmt
from adapters_store.fit import check_adapter_fits
from adapters_store.hub import import_from_hub
from adapters_store.patterns import literal_prefix, matches
from tests.support.hub import cache_repo

BASE = BaseModelRef(id="tiny", fingerprint="f" * 16)
NAMES = ["alpha", "team-a", "team-a/sentiment", "team-a/topic.v2", "team-b/sentiment", "zeta"]


@pytest.fixture(scope="module")
def saved(factory, tmp_path_factory) -> Path:
    return factory.save("demo", tmp_path_factory.mktemp("saved") / "demo", seed=1)


@pytest.fixture
def store(tmp_path, saved) -> AdapterStore:
    store = AdapterStore(tmp_path / "store")
    for name in NAMES:
        store.add(name, saved, base_model=BASE)
    return store


@pytest.mark.parametrize(
    "name", ["a/b", "team-a/sentiment", "0/x_y.z-1", "a" * 64 + "/" + "b" * 64]
)
def test_namespaced_names_are_valid(name):
    assert fmt.validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "a/b/c",  # one level only
        "/a",
        "a/",
        "a//b",
        "../a",
        "a/..",
        "a/.hidden",
        "a/-x",
        "A/b",
        "a\\b",
        "a~b",  # the folder separator
        "a@3",  # a version selector (issue 22), never part of a name
        "a/b@prod",
        "a/archive",  # a word the routes put after a name
        "a/versions",
        "a/ready",
        "a" * 65 + "/b",
    ],
)
def test_invalid_names(name):
    with pytest.raises(InvalidName):
        fmt.validate_name(name)


def test_route_words_stay_valid_without_a_namespace():
    assert fmt.validate_name("archive") == "archive"


def test_a_namespaced_adapter_is_one_flat_folder(store):
    folders = sorted(p.name for p in store.root.iterdir() if not p.name.startswith("."))
    assert folders == sorted(n.replace("/", "~") for n in NAMES)
    stored = store.get("team-a/sentiment")
    assert stored.path == store.root / "team-a~sentiment"
    assert stored.manifest.name == "team-a/sentiment"
    assert store.exists("team-a/sentiment") and not store.exists("team-a/other")
    assert store.verify("team-a/sentiment").name == "team-a/sentiment"


def test_missing_namespaced_adapter_is_named_as_asked(store):
    with pytest.raises(fmt.AdapterNotFound) as caught:
        store.get("team-c/x")
    assert caught.value.message == "adapter 'team-c/x' not found"


def test_replace_delete_and_version_memory(store, saved):
    assert store.add("team-a/sentiment", saved, base_model=BASE, overwrite=True).version == 2
    store.delete("team-a/sentiment")
    assert not store.exists("team-a/sentiment")
    assert store.add("team-a/sentiment", saved, base_model=BASE).version == 3


def test_listing_index_names_sort_and_prefix_filter(store):
    page = store.page(100)
    assert [e.name for e in page.entries] == sorted(NAMES)
    assert [e.name for e in store.page(100, filters=Filters(prefix="team-a/")).entries] == [
        "team-a/sentiment",
        "team-a/topic.v2",
    ]
    store.index.refresh()  # a full rescan reads the folders back to the same names
    assert [e.name for e in store.page(100).entries] == sorted(NAMES)
    assert [m.name for m in store.list()] == [fmt.name_of_folder(n) for n in sorted(
        n.replace("/", "~") for n in NAMES
    )]  # fmt: skip


def test_export_of_a_namespaced_adapter(store, tmp_path):
    out = store.export_archive("team-b/sentiment", tmp_path / "out.zip")
    assert out.is_file()
    imported = store.import_archive("team-c/copy", out)
    assert imported.name == "team-c/copy"


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (("team-a/*",), ["team-a/sentiment", "team-a/topic.v2"]),
        (("*",), ["alpha", "team-a", "zeta"]),
        (("*/*",), ["team-a/sentiment", "team-a/topic.v2", "team-b/sentiment"]),
        (("*/sentiment", "zeta"), ["team-a/sentiment", "team-b/sentiment", "zeta"]),
        (("team-?/sentiment",), ["team-a/sentiment", "team-b/sentiment"]),
        (("team-a",), ["team-a"]),
        (("team-a*",), ["team-a"]),
        (("team-z/*",), []),
        ((), []),
    ],
)
def test_patterns_filter_the_listing_with_correct_totals_and_pages(store, patterns, expected):
    assert [n for n in NAMES if matches(patterns, n)] == expected
    filters = Filters(patterns=patterns)
    assert store.page(100, filters=filters).total == len(expected)
    seen, after = [], None
    while True:  # a page of one at a time: keyset paging through the filtered range
        page = store.page(1, after, filters)
        assert page.total == len(expected)
        seen += [e.name for e in page.entries]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == expected


def test_pattern_characters_are_literal_but_wildcards():
    assert matches(("a.b",), "a.b") and not matches(("a.b",), "axb")
    assert not matches(("[a]",), "a")
    assert literal_prefix("team-a/*") == "team-a/"
    assert literal_prefix("t?am/*") == "t"
    assert literal_prefix("zeta") == "zeta"


def test_hub_import_under_a_namespaced_name(store, factory, saved, tmp_path):
    cache = tmp_path / "hub-cache"
    cache_repo(cache, "org/repo", saved)
    check = functools.partial(check_adapter_fits, factory.model.config)
    manifest = import_from_hub(
        store, "team-h/imported", "org/repo", expected_base=None, check=check, cache_dir=cache
    )
    assert manifest.name == "team-h/imported" and manifest.source == "hub"
    assert (store.root / "team-h~imported" / fmt.MANIFEST).is_file()
    assert "team-h/imported" in [e.name for e in store.page(100).entries]


def test_any_adapter_name_reads_one_folder_as_its_name(tmp_path) -> None:
    from adapters_store.format import any_adapter_name

    assert any_adapter_name(tmp_path) is None
    (tmp_path / ".tombstones").mkdir()
    (tmp_path / "stray-file").write_text("")
    assert any_adapter_name(tmp_path) is None  # the store's own folders and files are not adapters
    (tmp_path / "team-a~sentiment").mkdir()
    assert any_adapter_name(tmp_path) == "team-a/sentiment"
