"""The listing index (adapters_store/index.py): paging, filters, cursors that survive changes,
writers in other processes, writers that do not know the index, rebuilds, and scale."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters_store import AdapterStore, BaseModelRef, Filters, HubOrigin
from adapters_store import index as index_module
from tests.support.server import REPO

BASE = BaseModelRef(id="tiny", fingerprint="f" * 16)


@pytest.fixture(scope="module")
def saved(factory, tmp_path_factory) -> Path:
    return factory.save("demo", tmp_path_factory.mktemp("saved") / "demo", seed=1)


@pytest.fixture
def store(tmp_path) -> AdapterStore:
    return AdapterStore(tmp_path / "store")


def _add(store: AdapterStore, saved: Path, name: str, method: str = "seq_bn", **kw) -> None:
    store.add(name, saved, base_model=BASE, adapter_config=method, **kw)


def _copy_by_hand(store: AdapterStore, src: str, name: str, **changes) -> None:
    """What a writer that does not know the index leaves (an older version, a copy by hand):
    a folder renamed into the root, no index update."""
    tmp = store.root / f".hand-{name}"
    shutil.copytree(store.root / src, tmp, copy_function=os.link)
    manifest = json.loads((tmp / "manifest.json").read_text())
    (tmp / "manifest.json").unlink()  # a new file, not the hard link's shared inode
    (tmp / "manifest.json").write_text(json.dumps({**manifest, "name": name, **changes}))
    os.rename(tmp, store.root / name)


def _names(store: AdapterStore) -> set[str]:
    return {p.name for p in store.root.iterdir() if not p.name.startswith(".")}


def _walk(store: AdapterStore, limit: int, filters: Filters | None = None) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = store.page(limit, after, filters)
        pages.append([e.name for e in page.entries])
        assert len(page.entries) <= limit
        if page.next_after is None:
            return pages
        assert page.next_after == page.entries[-1].name
        after = page.next_after


NAMES = ["g", "a", "e", "b-2", "b-1", "c", "f"]


@pytest.mark.parametrize(
    ("limit", "sizes"),
    [(1, [1] * 7), (2, [2, 2, 2, 1]), (3, [3, 3, 1]), (6, [6, 1]), (7, [7]), (8, [7]), (1000, [7])],
)
def test_pages_cover_the_store_in_name_order(store, saved, limit, sizes):
    for name in NAMES:
        _add(store, saved, name)
    pages = _walk(store, limit)
    assert [len(p) for p in pages] == sizes
    assert [n for p in pages for n in p] == sorted(NAMES)
    assert store.page(limit).total == len(NAMES)
    assert [m.name for m in store.list()] == sorted(NAMES)


def test_an_empty_store_has_one_empty_page(store):
    page = store.page(50)
    assert (page.entries, page.total, page.next_after) == ([], 0, None)


def _hub() -> HubOrigin:
    return HubOrigin(repo_id="org/x", revision="main", commit="c" * 40)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(), ["alpha-1", "alpha-2", "alphabet", "beta", "hubbed"]),
        (Filters(prefix="alpha"), ["alpha-1", "alpha-2", "alphabet"]),
        (Filters(prefix="alpha-"), ["alpha-1", "alpha-2"]),
        (Filters(prefix="alpha-2"), ["alpha-2"]),
        (Filters(prefix="b"), ["beta"]),
        (Filters(prefix="Alpha"), []),
        (Filters(prefix="zz"), []),
        (Filters(method="lora"), ["alpha-2", "beta"]),
        (Filters(method="seq_bn"), ["alpha-1", "hubbed"]),
        (Filters(method="lor"), []),
        (Filters(source="uploaded"), ["alpha-2"]),
        (Filters(source="hub"), ["hubbed"]),
        (Filters(prefix="alpha", method="lora"), ["alpha-2"]),
        (Filters(method="lora", source="trained"), ["beta"]),
        (Filters(prefix="alpha", method="ia3", source="trained"), ["alphabet"]),
    ],
)
def test_filters(store, saved, filters, expected):
    _add(store, saved, "alpha-1")
    _add(store, saved, "alpha-2", method="lora", source="uploaded")
    _add(store, saved, "alphabet", method="ia3")
    _add(store, saved, "beta", method="lora")
    store.import_dir("hubbed", store.root / "alpha-1", hub=_hub())
    for limit in (1, 2, 50):
        assert [n for p in _walk(store, limit, filters) for n in p] == expected
    assert store.page(1, None, filters).total == len(expected)


def test_entries_carry_what_the_listing_shows(store, saved):
    _add(store, saved, "x", method="lora", metrics={"accuracy": 0.75})
    _add(store, saved, "x", method="lora", metrics={"accuracy": 0.8}, overwrite=True)
    (entry,) = store.page(10).entries
    manifest = store.get("x").manifest
    assert entry.version == 2 and entry.metrics == {"accuracy": 0.8}
    assert entry.size_bytes == manifest.size_bytes > 0
    assert entry.labels == manifest.labels and entry.base_model == manifest.base_model
    assert (entry.adapter_config, entry.source, entry.created_at) == (
        "lora",
        "trained",
        manifest.created_at,
    )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("limit", [1, 3])
def test_a_cursor_survives_adds_and_deletes_between_pages(store, saved, seed, limit):
    """Between two pages adapters are added (before and after the cursor), deleted (seen and
    not yet seen), replaced, and copied in by hand. Every name comes once, in order; every
    adapter present from the first page to the last, or added after the cursor and kept, is
    seen; one deleted before the cursor reached it (and not added again) is not."""
    rng = random.Random(seed)
    for name in (f"n{i:02d}" for i in range(0, 24, 2)):
        _add(store, saved, name)
    must_see = _names(store)
    must_not_see: set[str] = set()
    seen: list[str] = []
    after = None
    while True:
        page = store.page(limit, after)
        seen += [e.name for e in page.entries]
        if page.next_after is None:
            break
        after = page.next_after
        for _ in range(rng.randint(0, 3)):
            action, name = (
                rng.choice(["add", "hand", "delete", "replace"]),
                f"n{rng.randrange(30):02d}",
            )
            present = (store.root / name).is_dir()
            if action == "delete" and present:
                store.delete(name)
                must_see.discard(name)
                if name > after:
                    must_not_see.add(name)
            elif action == "replace" and present:
                _add(store, saved, name, overwrite=True)
            elif not present and action in ("add", "hand"):
                if action == "add":
                    _add(store, saved, name)
                else:
                    _copy_by_hand(store, min(_names(store)), name)
                must_not_see.discard(name)
                if name > after:
                    must_see.add(name)
    assert seen == sorted(set(seen)), seen
    assert must_see <= set(seen), must_see - set(seen)
    assert not must_not_see & set(seen), must_not_see & set(seen)


def _in_another_process(root: Path, code: str) -> None:
    script = "\n".join(
        [
            "from adapters_store import AdapterStore, BaseModelRef",
            f"store = AdapterStore({str(root)!r})",
            code,
        ]
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)


def test_writers_in_another_process_keep_the_index_current(store, saved, monkeypatch):
    _add(store, saved, "mine")
    assert [e.name for e in store.page(10).entries] == ["mine"]
    _in_another_process(
        store.root,
        f"store.add('theirs', {str(saved)!r}, base_model=BaseModelRef(id='tiny'), "
        "adapter_config='lora')\nstore.delete('mine')",
    )
    reads = []
    real_read = index_module.fmt.read_manifest
    monkeypatch.setattr(
        index_module.fmt, "read_manifest", lambda f: reads.append(f) or real_read(f)
    )
    page = store.page(10)
    assert [(e.name, e.adapter_config) for e in page.entries] == [("theirs", "lora")]
    assert reads == []  # the writer updated the index: nothing had to be re-read


def test_writers_that_skip_the_index_are_picked_up(store, saved):
    """Folders copied in or removed by hand (or by an older version of the store)."""
    _add(store, saved, "a")
    assert store.page(10).total == 1
    _copy_by_hand(store, "a", "b", adapter_config="lora", version=7)
    page = store.page(10)
    assert [(e.name, e.version) for e in page.entries] == [("a", 1), ("b", 7)]
    assert store.page(10, None, Filters(method="lora")).total == 1
    shutil.rmtree(store.root / "a")
    assert [e.name for e in store.page(10).entries] == ["b"]


def test_a_change_in_the_same_tick_as_the_scan_is_not_missed(store, saved, monkeypatch):
    """File times are coarse: a rename in the tick of the last scan keeps the root's mtime."""
    _add(store, saved, "a")
    store.page(10)
    mtime = os.stat(store.root).st_mtime_ns
    _copy_by_hand(store, "a", "b")
    os.utime(store.root, ns=(mtime, mtime))  # as if in the same tick
    assert [e.name for e in store.page(10).entries] == ["a", "b"]  # the scan was racy
    _copy_by_hand(store, "a", "c")
    os.utime(store.root, ns=(mtime, mtime))
    monkeypatch.setattr(index_module, "RACY_NS", 0)  # as if the scan had been 2 s later
    assert [e.name for e in store.page(10).entries] == ["a", "b"]  # trusted: no scan
    os.utime(store.root)  # any later change to the root's entries
    assert [e.name for e in store.page(10).entries] == ["a", "b", "c"]


def _index_file(store: AdapterStore) -> Path:
    return store.root / ".index" / "listing.sqlite"


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "old-format", "no-table"])
def test_a_missing_or_damaged_index_is_rebuilt(store, saved, damage, caplog):
    for name in ("a", "b", "c"):
        _add(store, saved, name)
    assert store.page(10).total == 3
    path = _index_file(store)
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:1500])
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version = 0" if damage == "old-format" else "DROP TABLE meta")
    caplog.set_level(logging.WARNING, logger="adapters_store.index")
    _add(store, saved, "d")  # a write on a damaged index still succeeds
    store.delete("a")
    assert [e.name for e in store.page(10).entries] == ["b", "c", "d"]
    assert [n for p in _walk(store, 1) for n in p] == ["b", "c", "d"]
    if damage in ("garbage", "truncate", "no-table"):
        assert "rebuil" in caplog.text


def test_an_unreadable_manifest_is_skipped_like_list_does(store, saved):
    _add(store, saved, "a")
    _copy_by_hand(store, "a", "b")
    (store.root / "b" / "manifest.json").write_text("{not json")
    os.utime(store.root)
    assert [e.name for e in store.page(10).entries] == ["a"] == [m.name for m in store.list()]
    assert store.page(10).total == 1


def test_thousands_of_adapters_page_quickly(store, saved, monkeypatch):
    """3,000 adapters (hard-linked copies of one): a full build, then pages from the index."""
    _add(store, saved, "a-0000")
    manifest = json.loads((store.root / "a-0000" / "manifest.json").read_text())
    methods = ["seq_bn", "lora", "ia3"]
    for i in range(1, 3000):
        folder = store.root / f"a-{i:04d}"
        folder.mkdir()
        for item in (store.root / "a-0000").iterdir():
            if item.name != "manifest.json":
                os.link(item, folder / item.name)
        body = {**manifest, "name": folder.name, "adapter_config": methods[i % 3]}
        (folder / "manifest.json").write_text(json.dumps(body))
    _index_file(store).unlink(missing_ok=True)
    started = time.perf_counter()
    assert store.page(50).total == 3000  # built from the manifests
    built = time.perf_counter() - started
    monkeypatch.setattr(index_module, "RACY_NS", 0)  # the steady state: no rescan
    started = time.perf_counter()
    page = store.page(50, "a-1234", Filters(method="lora"))
    took = time.perf_counter() - started
    assert [e.name for e in page.entries][:2] == ["a-1237", "a-1240"] and page.total == 1000
    assert took < 0.25, f"a page of 50 took {took:.3f} s ({built:.2f} s to build)"
    assert sum(len(p) for p in _walk(store, 1000)) == 3000


def test_a_rescan_stats_only_the_folders_it_did_not_see(store, saved, monkeypatch):
    """After the start-up scan, a rescan lists the root and stats only new or replaced
    folders (and the ones our writers wrote); every FULL_SCAN_NS it stats them all."""
    for name in ("a", "b", "c", "d"):
        _add(store, saved, name)
    store.index.refresh()
    stats = []
    real_stamp = index_module._stamp
    monkeypatch.setattr(index_module, "_stamp", lambda p: stats.append(p) or real_stamp(p))
    _add(store, saved, "b", overwrite=True)
    _copy_by_hand(store, "a", "e")
    assert [(e.name, e.version) for e in store.page(10).entries][1:] == [
        ("b", 2), ("c", 1), ("d", 1), ("e", 1)
    ]  # fmt: skip
    assert sorted(Path(p).parent.name for p in stats) == ["b", "b", "e"]  # b: its writer, once
    stats.clear()
    store.page(10)  # within RACY_NS of the last scan: scanned again, without a stat
    assert stats == []
    manifest = store.root / "c" / "manifest.json"  # edited in place: the folder is the same
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 5'))
    os.utime(store.root)
    assert store.page(10).entries[2].version == 1
    monkeypatch.setattr(index_module, "FULL_SCAN_NS", 0)
    os.utime(store.root)
    assert store.page(10).entries[2].version == 5
    assert len(stats) == 5
