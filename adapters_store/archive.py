"""Safe extraction and creation of adapter archives (.zip, .tar.gz).

Extraction never trusts the archive: entries that are absolute, climb out with '..', are links
or devices are refused, and so are archives over the entry-count or uncompressed-size caps
(checked from the headers first, then enforced again while writing each file).
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from adapters_store.errors import ArchiveRejected, ArchiveTooLarge

DEFAULT_MAX_FILES = 32
DEFAULT_MAX_TOTAL_BYTES = 512 * 1024 * 1024


def archive_kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        with tarfile.open(path, "r:*"):
            return "tar"
    except (tarfile.TarError, OSError):
        pass
    raise ArchiveRejected("not a .zip or .tar.gz archive")


def _safe_relpath(name: str) -> PurePosixPath:
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or name.startswith(("/", "\\")) or ".." in rel.parts or ":" in name:
        raise ArchiveRejected(f"archive entry {name!r} escapes the target directory")
    parts = [p for p in rel.parts if p not in ("", ".")]
    if not parts:
        raise ArchiveRejected(f"archive entry {name!r} has no file name")
    return PurePosixPath(*parts)


def _zip_entries(zf: zipfile.ZipFile) -> Iterator[tuple[PurePosixPath, int, bool]]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveRejected(f"archive entry {info.filename!r} is a link")
        yield _safe_relpath(info.filename), info.file_size, info.is_dir()


def _tar_entries(tf: tarfile.TarFile) -> Iterator[tuple[PurePosixPath, int, bool]]:
    for member in tf.getmembers():
        if member.issym() or member.islnk():
            raise ArchiveRejected(f"archive entry {member.name!r} is a link")
        if not (member.isfile() or member.isdir()):
            raise ArchiveRejected(f"archive entry {member.name!r} is not a regular file")
        yield _safe_relpath(member.name), member.size, member.isdir()


def _copy_capped(src: IO[bytes], dst: Path, budget: int) -> int:
    written = 0
    with dst.open("wb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            written += len(chunk)
            if written > budget:
                raise ArchiveTooLarge("archive expands beyond the uncompressed size cap")
            out.write(chunk)
    return written


def extract_archive(
    archive: Path,
    dest: Path,
    *,
    max_files: int = DEFAULT_MAX_FILES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> None:
    """Extract `archive` into the empty directory `dest`, or raise ArchiveRejected."""
    try:
        _extract(archive, dest, max_files=max_files, max_total_bytes=max_total_bytes)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, ValueError) as exc:
        raise ArchiveRejected(f"archive is corrupt: {exc}") from None


def _extract(archive: Path, dest: Path, *, max_files: int, max_total_bytes: int) -> None:
    kind = archive_kind(archive)
    opener = zipfile.ZipFile(archive) if kind == "zip" else tarfile.open(archive, "r:*")  # noqa: SIM115
    with opener as handle:
        entries = list(_zip_entries(handle) if kind == "zip" else _tar_entries(handle))
        files = [e for e in entries if not e[2]]
        if len(files) > max_files:
            raise ArchiveTooLarge(f"archive holds {len(files)} files; the cap is {max_files}")
        if sum(size for _, size, _ in files) > max_total_bytes:
            raise ArchiveTooLarge(
                f"archive expands to more than the cap of {max_total_bytes} bytes"
            )
        budget = max_total_bytes
        names = handle.namelist() if kind == "zip" else [m.name for m in handle.getmembers()]
        for name, (rel, _, is_dir) in zip(names, entries, strict=True):
            target = dest.joinpath(*rel.parts)
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                raise ArchiveRejected(f"archive entry {name!r} appears twice")
            src = handle.open(name) if kind == "zip" else handle.extractfile(name)
            if src is None:
                raise ArchiveRejected(f"archive entry {name!r} cannot be read")
            with src:
                budget -= _copy_capped(src, target, budget)


def adapter_root(extracted: Path) -> Path:
    """The folder holding the adapter files: the top level, or its single sub-folder."""
    children = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        return children[0]
    return extracted


def write_archive(src_dir: Path, out: Path, *, fmt: str = "zip") -> Path:
    """Write the files of `src_dir` (flat) into a .zip or .tar.gz at `out`."""
    files = sorted(p for p in src_dir.iterdir() if p.is_file())
    tmp = out.with_name(out.name + ".partial")
    if fmt == "zip":
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, arcname=path.name)
    elif fmt == "tar.gz":
        with tarfile.open(tmp, "w:gz") as tf:
            for path in files:
                tf.add(path, arcname=path.name, recursive=False)
    else:
        raise ValueError(f"unknown archive format {fmt!r}; use 'zip' or 'tar.gz'")
    shutil.move(tmp, out)
    return out
