"""Versions kept per adapter, selectors, aliases, splits: the store side (versions.py)."""

from __future__ import annotations

import os
import random
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest

from adapters_store import (
    AdapterNotFound,
    AdapterStore,
    InvalidName,
    InvalidRoute,
    VersionInUse,
)
from adapters_store import format as fmt
from adapters_store.routing import Routes, check_split, parse, pick


@pytest.fixture(scope="module")
def saved(factory, tmp_path_factory) -> Path:
    return factory.save("demo", tmp_path_factory.mktemp("saved") / "demo", seed=1)


@pytest.fixture
def store(tmp_path) -> AdapterStore:
    return AdapterStore(tmp_path / "store", keep_versions=3)


def _put(store: AdapterStore, saved: Path, name: str = "demo", times: int = 1) -> int:
    for _ in range(times):
        version = store.import_dir(name, saved, overwrite=True).version
    return version


def test_the_last_n_versions_are_kept_and_the_older_pruned(store, saved):
    assert _put(store, saved, times=5) == 5
    assert store.versions.numbers("demo") == [3, 4, 5]
    assert store.get("demo").manifest.version == 5
    for n in (3, 4, 5):
        stored = store.get(f"demo@{n}")
        assert stored.manifest.version == n and stored.manifest.name == "demo"
        assert store.verify(f"demo@{n}").version == n
    with pytest.raises(AdapterNotFound):
        store.get("demo@2")
    assert not list(store.root.glob(".versions/.tmp-*")) and not list(store.root.glob(".trash-*"))


def test_the_latest_is_linked_not_copied(store, saved):
    _put(store, saved)
    latest = os.stat(store.root / "demo" / fmt.MANIFEST)
    kept = os.stat(store.root / ".versions" / "demo@1" / fmt.MANIFEST)
    assert (latest.st_ino, latest.st_dev) == (kept.st_ino, kept.st_dev)


def test_listing_and_index_show_each_adapter_once_at_its_latest(store, saved):
    _put(store, saved, "demo", times=4)
    _put(store, saved, "other", times=2)
    store.index.refresh()
    page = store.page(10)
    assert [(e.name, e.version) for e in page.entries] == [("demo", 4), ("other", 2)]
    assert page.total == 2
    assert [m.name for m in store.list()] == ["demo", "other"]


@pytest.mark.parametrize(
    "selector",
    [
        "demo@",
        "demo@@1",
        "demo@Prod",
        "demo@0",
        "demo@1x",
        "demo@-1",
        "demo@01",
        "@1",
        "demo@\u0661",
    ],
)
def test_malformed_selectors_are_invalid_names(store, selector):
    with pytest.raises(InvalidName):
        parse(selector)


def test_selectors_resolve_to_concrete_versions(store, saved):
    _put(store, saved, times=3)
    versions = store.versions
    assert versions.resolve("demo") == "demo"  # no split: the latest, as before
    assert versions.resolve("demo@2") == "demo@2"
    assert versions.resolve("demo@latest") == "demo"
    versions.set_alias("demo", "prod", 2)
    assert versions.resolve("demo@prod") == "demo@2"
    assert store.get("demo@prod").manifest.version == 2
    with pytest.raises(AdapterNotFound):
        versions.resolve("demo@canary")
    with pytest.raises(AdapterNotFound):
        versions.resolve("demo@9")
    with pytest.raises(AdapterNotFound):
        versions.resolve("missing@1")


def test_aliases_move_and_pin_their_version_past_retention(store, saved):
    _put(store, saved, times=3)
    versions = store.versions
    versions.set_alias("demo", "prod", 1)
    _put(store, saved, times=2)  # 4, 5: version 1 stays, pinned by prod
    assert versions.numbers("demo") == [1, 3, 4, 5]
    versions.set_alias("demo", "prod", 5)  # moving it: instant, nothing re-uploaded
    assert versions.resolve("demo@prod") == "demo@5"
    _put(store, saved)  # 6: now 1 is unpinned and old
    assert versions.numbers("demo") == [4, 5, 6]
    with pytest.raises(AdapterNotFound):
        versions.set_alias("demo", "prod", 1)
    with pytest.raises(InvalidRoute):
        versions.set_alias("demo", "latest", 5)
    with pytest.raises(InvalidRoute):
        versions.set_alias("demo", "Bad", 5)
    versions.delete_alias("demo", "prod")
    with pytest.raises(AdapterNotFound):
        versions.delete_alias("demo", "prod")


def test_a_split_routes_the_bare_name_and_pins_its_targets(store, saved):
    _put(store, saved, times=2)
    versions = store.versions
    versions.set_alias("demo", "canary", 2)
    versions.set_split("demo", [("1", 90), ("canary", 10)])
    assert {versions.resolve("demo") for _ in range(200)} == {"demo@1", "demo@2"}
    with pytest.raises(VersionInUse):
        versions.delete_alias("demo", "canary")
    with pytest.raises(VersionInUse):
        versions.delete_version("demo", 1)
    _put(store, saved, times=3)
    assert 1 in versions.numbers("demo")
    versions.clear_split("demo")  # rollback: the next request gets the latest
    assert versions.resolve("demo") == "demo"
    with pytest.raises(AdapterNotFound):
        versions.set_split("demo", [("9", 1)])


@pytest.mark.parametrize(
    "weights",
    [[], [("1", 0)], [("1", 1), ("1", 2)], [("1", -1)], [("x!", 1)], [("1", 1.5)], [("1", True)]],
)
def test_invalid_splits(weights):
    with pytest.raises(InvalidRoute):
        check_split(weights)


def test_weighted_random_and_hashed_keys_follow_the_weights():
    split = check_split([("3", 90), ("4", 10)])
    rng = random.Random(7)
    drawn = Counter(pick(split, "demo", None, rng) for _ in range(20_000))
    assert 0.88 < drawn["3"] / 20_000 < 0.92
    keyed = Counter(pick(split, "demo", f"user-{i}") for i in range(20_000))
    assert 0.88 < keyed["3"] / 20_000 < 0.92


def test_a_key_keeps_its_version_and_a_weight_change_moves_only_keys_between():
    before = check_split([("3", 90), ("4", 10)])
    after = check_split([("3", 80), ("4", 20)])
    keys = [f"k{i}" for i in range(5_000)]
    first = {k: pick(before, "demo", k) for k in keys}
    assert all(pick(before, "demo", k) == first[k] for k in keys)
    moved = [k for k in keys if pick(after, "demo", k) != first[k]]
    assert all(first[k] == "3" for k in moved)  # 4 keeps all its keys
    assert 0.07 < len(moved) / len(keys) < 0.13


def test_a_store_from_before_versions_keeps_working(store, saved):
    _put(store, saved, times=2)
    shutil.rmtree(store.root / ".versions")  # as an older release left it: one folder each
    legacy = AdapterStore(store.root, keep_versions=3)
    assert legacy.get("demo").manifest.version == 2
    assert legacy.versions.resolve("demo@2") == "demo@2"  # adopted on first use
    assert legacy.get("demo@2").manifest.version == 2
    shutil.rmtree(store.root / ".versions")
    assert legacy.import_dir("demo", saved, overwrite=True).version == 3
    assert legacy.versions.numbers("demo") == [2, 3]  # the replaced folder was kept as @2
    assert legacy.get("demo@2").manifest.version == 2


def test_delete_forgets_versions_and_routes(store, saved):
    _put(store, saved, times=2)
    store.versions.set_alias("demo", "prod", 1)
    store.delete("demo")
    assert store.versions.numbers("demo") == []
    assert not store.versions.routes_path("demo").exists()
    assert _put(store, saved) == 3  # numbering continues; no stale alias comes back
    assert store.versions.routes("demo") == Routes()
    with pytest.raises(InvalidName):
        store.delete("demo@3")


def test_cleanup_removes_what_a_dead_writer_left(store, saved):
    _put(store, saved)
    (store.root / ".versions" / ".tmp-0123").mkdir()
    (store.root / ".versions" / ".trash-0123").mkdir()
    assert store.cleanup() == 2
    assert store.versions.numbers("demo") == [1] and store.get("demo@1").manifest.version == 1


def test_delete_one_version(store, saved):
    _put(store, saved, times=3)
    with pytest.raises(VersionInUse):
        store.versions.delete_version("demo", 3)
    store.versions.delete_version("demo", 2)
    assert store.versions.numbers("demo") == [1, 3]
    with pytest.raises(AdapterNotFound):
        store.versions.delete_version("demo", 2)


def test_concurrent_replaces_keep_distinct_complete_versions(tmp_path, saved):
    store = AdapterStore(tmp_path / "store", keep_versions=4)
    errors: list[BaseException] = []

    def writer() -> None:
        own = AdapterStore(store.root, keep_versions=4)  # as another process would
        try:
            for _ in range(3):
                own.import_dir("demo", saved, overwrite=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert store.get("demo").manifest.version == 12
    assert store.versions.numbers("demo") == [9, 10, 11, 12]
    for n in (9, 10, 11, 12):
        assert store.verify(f"demo@{n}").version == n


def test_namespaced_adapters_keep_versions_aliases_and_splits(store, saved):
    """`team-a/demo` (one folder `team-a~demo`) has versions like any name, never a nested path."""
    assert _put(store, saved, name="team-a/demo", times=4) == 4
    assert store.versions.numbers("team-a/demo") == [2, 3, 4]
    assert store.get("team-a/demo@3").manifest.version == 3
    store.versions.set_alias("team-a/demo", "prod", 2)
    assert store.versions.resolve("team-a/demo@prod") == "team-a/demo@2"
    store.versions.set_split("team-a/demo", [("3", 100)])
    assert store.versions.resolve("team-a/demo") == "team-a/demo@3"
    assert (
        not (store.root / "team-a").exists() and not (store.root / ".versions" / "team-a").exists()
    )
    assert (store.root / ".versions" / "team-a~demo@2").is_dir()
    assert [a.name for a in store.list()] == ["team-a/demo"]
