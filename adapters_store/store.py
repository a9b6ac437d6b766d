"""AdapterStore: a directory of saved adapters with atomic writes and validated imports.

Layout: `<root>/<name>/` holds the adapters library's files plus our `manifest.json`; a
namespaced name's folder is `<root>/<namespace>~<name>/` (format.folder_name: one level, flat).
Writers build a complete copy in `<root>/.tmp-*` and rename it into place, under a file lock
shared by every process using the same root, so readers never see half an adapter. A replace
moves the old folder aside first: for that instant a reader gets "not found", never a mixture.
Under the same lock each write updates the listing index (`<root>/.index/`, index.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adapters_store import archive as archives
from adapters_store import format as fmt
from adapters_store.convert import DEFAULT_MAX_PARAM_BYTES, converted_copy, needs_conversion
from adapters_store.errors import AdapterExists, AdapterNotFound, InvalidAdapter
from adapters_store.fit import check_param_bytes, param_bytes
from adapters_store.heads import head_fields
from adapters_store.index import StoreIndex
from adapters_store.listing import Filters, Page
from adapters_store.scratch import remove_leftovers, scratch_dir, store_lock
from adapters_store.validate import check_base, inspect_folder, prior_manifest
from adapters_store.versions import DEFAULT_KEEP, Versions


@dataclass(frozen=True)
class StoredAdapter:
    manifest: fmt.Manifest
    path: Path


class AdapterStore:
    def __init__(
        self,
        root: str | Path,
        *,
        max_files: int = archives.DEFAULT_MAX_FILES,
        max_total_bytes: int = archives.DEFAULT_MAX_TOTAL_BYTES,
        max_param_bytes: int = DEFAULT_MAX_PARAM_BYTES,
        keep_versions: int = DEFAULT_KEEP,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_files = max_files
        self.max_total_bytes = max_total_bytes
        self.max_param_bytes = max_param_bytes
        self._tombstones = self.root / ".tombstones"
        self.index = StoreIndex(self.root, self._lock)
        self.versions = Versions(self.root, self._lock, keep_versions)  # name@N, aliases, splits

    # ---- reading -------------------------------------------------------------------------
    def list(self) -> list[fmt.Manifest]:
        """Every adapter's full manifest, read from its folder (see `page` for large stores)."""
        manifests = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            with contextlib.suppress(AdapterNotFound, InvalidAdapter):
                manifests.append(fmt.read_manifest(child))
        return manifests

    def page(self, limit: int, after: str | None = None, filters: Filters | None = None) -> Page:
        """Up to `limit` adapters named after `after`, in name order, from the listing index
        (index.py): what the listing shows of each, the count matching `filters`, `next_after`."""
        return self.index.page(limit, after, filters)

    def folder(self, name: str) -> Path:
        """Where adapter `name` lives (InvalidName for a name the store cannot hold)."""
        return self.root / fmt.folder_name(fmt.validate_name(name))

    def get(self, name: str) -> StoredAdapter:
        """`name` (the latest), or a kept version by selector: `name@3`, `name@prod`."""
        path = self.versions.locate(name)
        return StoredAdapter(fmt.read_manifest(path), path)

    def exists(self, name: str) -> bool:
        return (self.folder(name) / fmt.MANIFEST).is_file()

    def verify(self, name: str) -> fmt.Manifest:
        """Re-hash every file against the manifest; raise InvalidAdapter on any difference."""
        stored = self.get(name)
        for file_name, info in stored.manifest.files.items():
            path = stored.path / file_name
            if not path.is_file() or fmt.sha256_file(path) != info.sha256:
                raise InvalidAdapter(f"{name}/{file_name} does not match its manifest")
        return stored.manifest

    # ---- writing -------------------------------------------------------------------------
    def add(
        self,
        name: str,
        src_dir: str | Path,
        *,
        base_model: fmt.BaseModelRef,
        source: Literal["trained", "uploaded"] = "trained",
        adapter_config: str | None = None,
        metrics: dict[str, float] | None = None,
        training: dict[str, Any] | None = None,
        overwrite: bool = False,
        head: dict[str, Any] | None = None,
    ) -> fmt.Manifest:
        """Copy a folder written by `save_adapter(..., use_safetensors=True)` into the store."""
        fmt.validate_name(name)
        src = Path(src_dir)
        info = inspect_folder(src)
        found: fmt.BaseModelRef = info["base_model"]
        base_model = base_model.model_copy(
            update={
                "model_type": base_model.model_type or found.model_type,
                "hidden_size": base_model.hidden_size or found.hidden_size,
            }
        )
        manifest = fmt.Manifest(
            name=name,
            base_model=base_model,
            adapter_config=adapter_config or info["adapter_config"],
            **head_fields(info, None, head),
            metrics=metrics or {},
            source=source,
            training=training,
        )
        return self._commit(name, src, manifest, overwrite=overwrite)

    def import_dir(
        self,
        name: str,
        src_dir: str | Path,
        *,
        expected_base: fmt.BaseModelRef | None = None,
        overwrite: bool = False,
        check: Callable[[Path], None] | None = None,
        hub: fmt.HubOrigin | None = None,
    ) -> fmt.Manifest:
        """Import a user's saved adapter folder (with or without our manifest).

        `check(folder)` runs after our own validation and before anything is written; it
        raises (e.g. InvalidAdapter) to refuse, for instance when tensors do not fit the base.
        `.bin` weights (save_adapter without safetensors) are converted first (convert.py).
        """
        fmt.validate_name(name)
        src = Path(src_dir)
        if needs_conversion(src):
            with self._scratch() as converted:
                converted_copy(src, converted, max_bytes=self.max_param_bytes)
                return self.import_dir(
                    name, converted, expected_base=expected_base, overwrite=overwrite,
                    check=check, hub=hub,
                )  # fmt: skip
        info = inspect_folder(src)
        check_param_bytes(src, self.max_param_bytes)  # cheap, from the headers
        prior = prior_manifest(src)
        base = prior.base_model if prior else info["base_model"]
        if expected_base is not None:  # the cheap check first: a clearer reason
            check_base(base, expected_base)
            base = base.model_copy(update={"fingerprint": expected_base.fingerprint})
        if check is not None:
            check(src)
        manifest = fmt.Manifest(
            name=name,
            base_model=base,
            adapter_config=info["adapter_config"],
            **head_fields(info, prior),
            metrics=prior.metrics if prior else {},
            training=prior.training if prior else None,
            source="hub" if hub else "uploaded",
            hub=hub,
        )
        return self._commit(name, src, manifest, overwrite=overwrite)

    def import_archive(
        self,
        name: str,
        archive_path: str | Path,
        *,
        expected_base: fmt.BaseModelRef | None = None,
        overwrite: bool = False,
        check: Callable[[Path], None] | None = None,
    ) -> fmt.Manifest:
        fmt.validate_name(name)
        with self._scratch() as scratch:
            archives.extract_archive(
                Path(archive_path),
                scratch,
                max_files=self.max_files,
                max_total_bytes=self.max_total_bytes,
            )
            return self.import_dir(
                name,
                archives.adapter_root(scratch),
                expected_base=expected_base,
                overwrite=overwrite,
                check=check,
            )

    def export_archive(self, name: str, out: str | Path, *, archive_format: str = "zip") -> Path:
        stored = self.get(name)
        with self._scratch() as scratch:
            # Copy first so that a concurrent replace cannot mix two versions in one archive.
            copy = scratch / stored.path.name
            shutil.copytree(stored.path, copy)
            return archives.write_archive(copy, Path(out), fmt=archive_format)

    def delete(self, name: str) -> fmt.Manifest:
        fmt.validate_name(name)
        with self._lock():
            stored = self.get(name)
            trash = self._trash_path()
            os.rename(stored.path, trash)
            self.index.drop(name)
            self.versions.drop(name)
            self._remember_version(name, stored.manifest.version)
        shutil.rmtree(trash, ignore_errors=True)
        return stored.manifest

    def cleanup(self) -> int:
        """Remove scratch folders left by dead processes on this host; return how many."""
        return remove_leftovers(self.root) + self.versions.cleanup()

    # ---- internals -----------------------------------------------------------------------
    def _commit(
        self, name: str, src: Path, manifest: fmt.Manifest, *, overwrite: bool
    ) -> fmt.Manifest:
        with self._scratch(keep=True) as staging:
            try:
                for file_name in (*fmt.REQUIRED_FILES, fmt.MODEL_CARD, fmt.CURVES_PNG):
                    if (src / file_name).is_file():
                        shutil.copyfile(src / file_name, staging / file_name)
                manifest.param_bytes = param_bytes(staging)
                manifest.files = {
                    p.name: fmt.FileInfo(sha256=fmt.sha256_file(p), size=p.stat().st_size)
                    for p in sorted(staging.iterdir())
                }
                with self._lock():
                    return self._swap_in(name, staging, manifest, overwrite=overwrite)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def _swap_in(
        self, name: str, staging: Path, manifest: fmt.Manifest, *, overwrite: bool
    ) -> fmt.Manifest:
        target = self.folder(name)
        old: fmt.Manifest | None = None
        if target.exists():
            if not overwrite:
                raise AdapterExists(f"adapter {name!r} already exists (pass overwrite to replace)")
            with contextlib.suppress(AdapterNotFound, InvalidAdapter):
                old = fmt.read_manifest(target)
        last = old.version if old else self._forgotten_version(name)
        manifest.version = last + 1
        _write_json(staging / fmt.MANIFEST, manifest.model_dump(mode="json"))
        trash = self.versions.retire(name, target, old) if target.exists() else None
        os.rename(staging, target)
        self.index.put(target, manifest)
        self.versions.record(name, target, manifest.version)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return manifest

    def _forgotten_version(self, name: str) -> int:
        path = self._tombstones / fmt.folder_name(name)
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return 0

    def _remember_version(self, name: str, version: int) -> None:
        self._tombstones.mkdir(exist_ok=True)
        (self._tombstones / fmt.folder_name(name)).write_text(str(version))

    def _trash_path(self) -> Path:
        return self.root / f".trash-{uuid.uuid4().hex}"

    def scratch(self) -> contextlib.AbstractContextManager[Path]:
        """A scratch folder inside the store, removed on exit (and by cleanup() after a crash)."""
        return self._scratch()

    def _scratch(self, *, keep: bool = False) -> contextlib.AbstractContextManager[Path]:
        return scratch_dir(self.root, keep=keep)

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return store_lock(self.root)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
