"""AdapterStore: a directory of saved adapters with atomic writes and validated imports.

Layout: `<root>/<name>/` holds the adapters library's files plus our `manifest.json`.
Writers build a complete copy in `<root>/.tmp-*` and rename it into place, under a file lock
shared by every process using the same root, so readers never see half an adapter. A replace
moves the old folder aside first: for that instant a reader gets "not found", never a mixture.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from adapters_store import archive as archives
from adapters_store import format as fmt
from adapters_store.errors import (
    AdapterExists,
    AdapterNotFound,
    BaseModelMismatch,
    InvalidAdapter,
)


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
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_files = max_files
        self.max_total_bytes = max_total_bytes
        self._tombstones = self.root / ".tombstones"

    # ---- reading -------------------------------------------------------------------------
    def list(self) -> list[fmt.Manifest]:
        manifests = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            with contextlib.suppress(AdapterNotFound, InvalidAdapter):
                manifests.append(self._read_manifest(child))
        return manifests

    def get(self, name: str) -> StoredAdapter:
        path = self.root / fmt.validate_name(name)
        return StoredAdapter(self._read_manifest(path), path)

    def exists(self, name: str) -> bool:
        return (self.root / fmt.validate_name(name) / fmt.MANIFEST).is_file()

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
    ) -> fmt.Manifest:
        """Copy a folder written by `save_adapter(..., use_safetensors=True)` into the store."""
        fmt.validate_name(name)
        src = Path(src_dir)
        info = self._inspect(src)
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
            labels=info["labels"],
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
    ) -> fmt.Manifest:
        """Import a user's saved adapter folder (with or without our manifest)."""
        fmt.validate_name(name)
        src = Path(src_dir)
        info = self._inspect(src)
        prior = self._prior_manifest(src)
        base = prior.base_model if prior else info["base_model"]
        if expected_base is not None:
            check_base(base, expected_base)
            base = base.model_copy(update={"fingerprint": expected_base.fingerprint})
        manifest = fmt.Manifest(
            name=name,
            base_model=base,
            adapter_config=info["adapter_config"],
            labels=info["labels"],
            metrics=prior.metrics if prior else {},
            training=prior.training if prior else None,
            source="uploaded",
        )
        return self._commit(name, src, manifest, overwrite=overwrite)

    def import_archive(
        self,
        name: str,
        archive_path: str | Path,
        *,
        expected_base: fmt.BaseModelRef | None = None,
        overwrite: bool = False,
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
            )

    def export_archive(self, name: str, out: str | Path, *, archive_format: str = "zip") -> Path:
        stored = self.get(name)
        with self._scratch() as scratch:
            # Copy first so that a concurrent replace cannot mix two versions in one archive.
            copy = scratch / name
            shutil.copytree(stored.path, copy)
            return archives.write_archive(copy, Path(out), fmt=archive_format)

    def delete(self, name: str) -> fmt.Manifest:
        with self._lock():
            stored = self.get(name)
            trash = self._trash_path()
            os.rename(stored.path, trash)
            self._remember_version(name, stored.manifest.version)
        shutil.rmtree(trash, ignore_errors=True)
        return stored.manifest

    def cleanup(self) -> int:
        """Remove scratch folders left by dead processes on this host; return how many."""
        removed = 0
        host = socket.gethostname()
        for child in self.root.glob(".tmp-*"):
            parts = child.name.split("-", 3)
            if len(parts) == 4 and parts[1] == host and not _pid_alive(int(parts[2])):
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
        return removed

    # ---- internals -----------------------------------------------------------------------
    def _inspect(self, src: Path) -> dict[str, Any]:
        if not src.is_dir():
            raise InvalidAdapter(f"{src} is not a directory")
        names = {p.name for p in src.iterdir()}
        for entry in src.iterdir():
            if entry.is_symlink() or not entry.is_file():
                raise InvalidAdapter(f"{entry.name}: only regular files are allowed")
        pickles = sorted(n for n in names if n.endswith(fmt.PICKLE_SUFFIXES))
        if pickles:
            raise InvalidAdapter(
                f"pickle weight files are refused ({', '.join(pickles)}): save the adapter with "
                "save_adapter(..., use_safetensors=True)"
            )
        missing = [n for n in fmt.REQUIRED_FILES if n not in names]
        if missing:
            raise InvalidAdapter(f"missing required files: {', '.join(missing)}")
        unknown = sorted(names - set(fmt.REQUIRED_FILES) - set(fmt.OPTIONAL_FILES))
        if unknown:
            raise InvalidAdapter(f"unexpected files: {', '.join(unknown)}")
        adapter_config = fmt.read_json(src / fmt.ADAPTER_CONFIG)
        head_config = fmt.read_json(src / fmt.HEAD_CONFIG)
        for weights in fmt.SAFETENSORS_FILES:
            fmt.check_safetensors(src / weights)
        hidden = adapter_config.get("hidden_size")
        return {
            "adapter_config": fmt.adapter_config_name(adapter_config),
            "labels": fmt.labels_from_head_config(head_config),
            "base_model": fmt.BaseModelRef(
                id=str(adapter_config.get("model_name") or "unknown"),
                model_type=adapter_config.get("model_type"),
                hidden_size=hidden if isinstance(hidden, int) else None,
            ),
        }

    def _prior_manifest(self, src: Path) -> fmt.Manifest | None:
        path = src / fmt.MANIFEST
        if not path.is_file():
            return None
        try:
            return fmt.Manifest.model_validate(fmt.read_json(path))
        except ValidationError as exc:
            raise InvalidAdapter(f"manifest.json does not validate: {exc.errors()[0]}") from None

    def _commit(
        self, name: str, src: Path, manifest: fmt.Manifest, *, overwrite: bool
    ) -> fmt.Manifest:
        with self._scratch(keep=True) as staging:
            try:
                for file_name in (*fmt.REQUIRED_FILES, fmt.MODEL_CARD):
                    if (src / file_name).is_file():
                        shutil.copyfile(src / file_name, staging / file_name)
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
        target = self.root / name
        old: fmt.Manifest | None = None
        if target.exists():
            if not overwrite:
                raise AdapterExists(f"adapter {name!r} already exists (pass overwrite to replace)")
            with contextlib.suppress(AdapterNotFound, InvalidAdapter):
                old = self._read_manifest(target)
        last = old.version if old else self._forgotten_version(name)
        manifest.version = last + 1
        _write_json(staging / fmt.MANIFEST, manifest.model_dump(mode="json"))
        trash = None
        if target.exists():
            trash = self._trash_path()
            os.rename(target, trash)
        os.rename(staging, target)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return manifest

    def _read_manifest(self, path: Path) -> fmt.Manifest:
        manifest_path = path / fmt.MANIFEST
        if not manifest_path.is_file():
            raise AdapterNotFound(f"adapter {path.name!r} not found")
        try:
            return fmt.Manifest.model_validate(fmt.read_json(manifest_path))
        except ValidationError as exc:
            raise InvalidAdapter(f"{path.name}/manifest.json is invalid: {exc}") from None
        except InvalidAdapter:
            if not manifest_path.exists():  # removed while we read it
                raise AdapterNotFound(f"adapter {path.name!r} not found") from None
            raise

    def _forgotten_version(self, name: str) -> int:
        path = self._tombstones / name
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return 0

    def _remember_version(self, name: str, version: int) -> None:
        self._tombstones.mkdir(exist_ok=True)
        (self._tombstones / name).write_text(str(version))

    def _trash_path(self) -> Path:
        return self.root / f".trash-{uuid.uuid4().hex}"

    @contextlib.contextmanager
    def _scratch(self, *, keep: bool = False) -> Iterator[Path]:
        prefix = f".tmp-{socket.gethostname()}-{os.getpid()}-"
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))
        try:
            yield path
        finally:
            if not keep or path.exists():
                shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def check_base(actual: fmt.BaseModelRef, expected: fmt.BaseModelRef) -> None:
    """Refuse an adapter whose recorded base model cannot be `expected`."""
    if actual.fingerprint and expected.fingerprint and actual.fingerprint != expected.fingerprint:
        raise BaseModelMismatch(
            f"adapter was trained for base model {actual.id!r} (fingerprint "
            f"{actual.fingerprint}); this base is {expected.id!r} ({expected.fingerprint})"
        )
    if actual.hidden_size and expected.hidden_size and actual.hidden_size != expected.hidden_size:
        raise BaseModelMismatch(
            f"adapter is for a {actual.hidden_size}-wide model ({actual.id!r}); this base "
            f"{expected.id!r} is {expected.hidden_size}-wide"
        )


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
