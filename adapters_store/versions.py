"""The versions an adapter keeps, its aliases and its traffic split, on disk beside the store.

Layout (docs/operations.md; the DESIGN contract is unchanged: `<root>/<name>/` is the latest):

    <root>/.versions/<name>@<N>/            version N, immutable: hard links to the files of
                                            `<root>/<name>/` while N is the latest (a copy
                                            where the file system has no hard links)
    <root>/.versions/<name>@routes.json     {"aliases": {"prod": 3}, "split": [["3", 90], ...]}

'@' never occurs in a name, so these paths cannot clash with any adapter's. Every write
(`record` after a replace, aliases, splits, deletes) runs under the store's lock; reads take
none: a version folder never changes once renamed into place, and the routes file is replaced
by a rename. A store written before versions existed has no `.versions/`: the latest of each
adapter is adopted (linked) the first time a selector names its version.

Retention: after each new version the newest `keep` versions stay, plus any version an alias or
the split points at; older ones are removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from adapters_store import format as fmt
from adapters_store.errors import AdapterNotFound, InvalidAdapter, VersionInUse
from adapters_store.routing import LATEST, Routes, check_alias, check_split, parse, pick

VERSIONS_DIR = ".versions"
ROUTES_SUFFIX = "@routes.json"
DEFAULT_KEEP = 3


class Versions:
    def __init__(
        self, root: Path, lock: Callable[[], contextlib.AbstractContextManager], keep: int
    ) -> None:
        if keep < 1:
            raise ValueError("keep_versions must be at least 1")
        self.root = root
        self.dir = root / VERSIONS_DIR
        self._dir = str(self.dir)  # the hot paths (resolve, routes) join strings, not Paths
        self.keep = keep
        self._lock = lock
        self._routes: dict[str, tuple[tuple[int, int, int], Routes]] = {}

    # ---- paths and reading (no lock) -----------------------------------------------------
    def version_dir(self, name: str, version: int) -> Path:
        return self.dir / f"{fmt.folder_name(name)}@{version}"

    def routes_path(self, name: str) -> Path:
        return self.dir / f"{fmt.folder_name(name)}{ROUTES_SUFFIX}"

    def folder(self, selector: str) -> Path:
        """Where `name`, `name@N` or `name@alias` lives (it may not exist)."""
        name, part = parse(selector)
        if part is None or part == LATEST:
            return self.root / fmt.folder_name(name)
        if part.isdecimal():  # what the serving layer asks: no routes to read
            return self.dir / f"{fmt.folder_name(name)}@{part}"
        return self.version_dir(name, self.routes(name).version_of(name, part))

    def locate(self, selector: str) -> Path:
        """`folder`, adopting the latest version of a store from before versions."""
        path = self.folder(selector)
        if "@" in path.name and not (path / fmt.MANIFEST).is_file():
            return self.folder(self.resolve(selector))
        return path

    def numbers(self, name: str) -> list[int]:
        """The versions of `name` kept in `.versions/`, oldest first."""
        base = self.dir / fmt.folder_name(name)
        prefix = f"{base.name}@"
        try:
            with os.scandir(base.parent) as entries:
                found = [e.name[len(prefix) :] for e in entries if e.name.startswith(prefix)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(int(n) for n in found if n.isdecimal())

    def routes(self, name: str) -> Routes:
        """The aliases and split of `name`: one stat a call, the file read when it changed."""
        path = f"{self._dir}/{fmt.folder_name(name)}{ROUTES_SUFFIX}"
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._routes.pop(name, None)
            return Routes()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        held = self._routes.get(name)
        if held is not None and held[0] == stamp:
            return held[1]
        try:
            with open(path, encoding="utf-8") as handle:
                routes = Routes.from_json(handle.read())
        except FileNotFoundError:
            return Routes()
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidAdapter(f"the routes of {name!r} do not parse: {exc}") from None
        self._routes[name] = (stamp, routes)
        return routes

    def resolve(self, selector: str, key: str | None = None) -> str:
        """What the server should load for one request: the bare name (the latest, no split)
        or a concrete, immutable `name@N` (a version, an alias, or the split's choice)."""
        name, part = parse(selector)
        if part == LATEST:
            return name
        routes = self.routes(name)
        if part is None:
            if not routes.split:
                return name
            part = pick(routes.split, name, key)
        version = routes.version_of(name, part)
        concrete = f"{name}@{version}"
        if not os.path.isfile(f"{self._dir}/{fmt.folder_name(name)}@{version}/{fmt.MANIFEST}"):
            self._adopt(name, version)
        return concrete

    def describe(self, name: str) -> dict:
        """The versions kept (manifests), the aliases and the split of an existing adapter."""
        latest = fmt.read_manifest(self.root / fmt.folder_name(name))
        if not (self.version_dir(name, latest.version) / fmt.MANIFEST).is_file():
            self._adopt(name, latest.version)
        manifests = []
        for number in reversed(self.numbers(name)):
            with contextlib.suppress(AdapterNotFound, InvalidAdapter):
                manifests.append(fmt.read_manifest(self.version_dir(name, number)))
        routes = self.routes(name)
        return {"latest": latest, "manifests": manifests, "routes": routes, "keep": self.keep}

    # ---- changing routes (take the lock) -------------------------------------------------
    def set_alias(self, name: str, alias: str, version: int) -> Routes:
        check_alias(alias)
        with self._lock():
            self._ensure(name, version)
            routes = self.routes(name)
            aliases = {**routes.aliases, alias: version}
            return self._write_routes(name, Routes(aliases, routes.split))

    def delete_alias(self, name: str, alias: str) -> Routes:
        with self._lock():
            routes = self.routes(name)
            if alias not in routes.aliases:
                raise AdapterNotFound(f"adapter {name!r} has no alias {alias!r}")
            if any(target == alias for target, _ in routes.split):
                raise VersionInUse(f"the split of {name!r} uses alias {alias!r}: change it first")
            aliases = {a: v for a, v in routes.aliases.items() if a != alias}
            return self._write_routes(name, Routes(aliases, routes.split))

    def set_split(self, name: str, weights: Sequence[tuple[str, int]]) -> Routes:
        split = check_split(weights)
        with self._lock():
            routes = self.routes(name)
            for target, _ in split:
                self._ensure(name, routes.version_of(name, target))
            return self._write_routes(name, Routes(routes.aliases, split))

    def clear_split(self, name: str) -> Routes:
        with self._lock():
            routes = self.routes(name)
            if not (self.root / fmt.folder_name(name) / fmt.MANIFEST).is_file():
                raise AdapterNotFound(f"adapter {name!r} not found")
            return self._write_routes(name, Routes(routes.aliases, ()))

    def delete_version(self, name: str, version: int) -> None:
        """Remove one kept version: not the latest, nor one an alias or the split points at."""
        with self._lock():
            latest = fmt.read_manifest(self.root / fmt.folder_name(name)).version
            if version == latest:
                raise VersionInUse(f"version {version} is the latest of {name!r}")
            if version in self.routes(name).pinned(name):
                raise VersionInUse(f"an alias or the split of {name!r} uses version {version}")
            folder = self.version_dir(name, version)
            if not folder.is_dir():
                raise AdapterNotFound(f"adapter {name!r} has no version {version}")
            _remove(folder, self.dir)

    # ---- the store's writes (the caller holds the lock) ----------------------------------
    def retire(self, name: str, target: Path, old: fmt.Manifest | None) -> Path | None:
        """Move the replaced `<root>/<name>/` out of the way: kept as its version when that
        has no folder yet (a store from before versions), else to a trash folder (returned)."""
        if old is not None and not self.version_dir(name, old.version).exists():
            kept = self.version_dir(name, old.version)
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.rename(target, kept)
            return None
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        os.rename(target, trash)
        return trash

    def record(self, name: str, folder: Path, version: int) -> None:
        """Keep the new latest `folder` as `name@version`, then prune the older versions."""
        _link_tree(folder, self.version_dir(name, version), self.dir)
        pinned = self.routes(name).pinned(name)
        numbers = self.numbers(name)
        kept = set(numbers[-self.keep :]) | pinned
        for number in numbers:
            if number not in kept:
                _remove(self.version_dir(name, number), self.dir)

    def drop(self, name: str) -> None:
        """Forget every version and route of a deleted adapter."""
        for number in self.numbers(name):
            _remove(self.version_dir(name, number), self.dir)
        with contextlib.suppress(FileNotFoundError):
            self.routes_path(name).unlink()
        self._routes.pop(name, None)

    def cleanup(self) -> int:
        """Remove what a writer that died left in `.versions/` (writers hold the lock, so
        under it nothing there is in use); return how many."""
        with self._lock():
            left = [*self.dir.glob(".tmp-*"), *self.dir.glob(".trash-*")]
            for path in left:
                shutil.rmtree(path, ignore_errors=True)
        return len(left)

    # ---- internals -----------------------------------------------------------------------
    def _adopt(self, name: str, version: int) -> None:
        """`_ensure` from a reader: the lock only when there is something to adopt, so that
        requests for versions that are gone (404s) never queue on it."""
        if fmt.read_manifest(self.root / fmt.folder_name(name)).version != version:
            raise AdapterNotFound(f"adapter {name!r} has no version {version}")
        with self._lock():
            self._ensure(name, version)

    def _ensure(self, name: str, version: int) -> None:
        """`name@version` has its folder: kept already, or the latest adopted now."""
        if (self.version_dir(name, version) / fmt.MANIFEST).is_file():
            return
        latest = fmt.read_manifest(self.root / fmt.folder_name(name))
        if latest.version != version:
            raise AdapterNotFound(f"adapter {name!r} has no version {version}")
        _link_tree(self.root / fmt.folder_name(name), self.version_dir(name, version), self.dir)

    def _write_routes(self, name: str, routes: Routes) -> Routes:
        if not (self.root / fmt.folder_name(name) / fmt.MANIFEST).is_file():
            raise AdapterNotFound(f"adapter {name!r} not found")
        path = self.routes_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
        tmp.write_text(routes.to_json(), encoding="utf-8")
        os.rename(tmp, path)
        return routes


def _link_tree(src: Path, dst: Path, scratch_parent: Path) -> None:
    """`dst` as a complete copy of `src` (hard links; copies where links fail), atomically."""
    tmp = scratch_parent / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        for path in src.iterdir():
            try:
                os.link(path, tmp / path.name)
            except OSError:
                shutil.copy2(path, tmp / path.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            _remove(dst, scratch_parent)
        os.rename(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove(folder: Path, scratch_parent: Path) -> None:
    """Remove a version folder: renamed away first, so no reader sees it half deleted."""
    trash = scratch_parent / f".trash-{uuid.uuid4().hex}"
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
