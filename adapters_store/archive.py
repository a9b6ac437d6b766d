"""Safe extraction and creation of adapter archives (.zip, .tar.gz).

Extraction never trusts the archive: entries that are absolute, climb out with '..', are links
or devices are refused, and so are archives over the entry-count or uncompressed-size caps
(checked from the headers first, then enforced again while writing each file).
"""

from __future__ import annotations

import errno
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from adapters_store.errors import ArchiveRejected, ArchiveTooLarge

DEFAULT_MAX_FILES = 32
DEFAULT_MAX_TOTAL_BYTES = 512 * 1024 * 1024


def archive_kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        with tarfile.open(path, "r:*", tarinfo=_CappedTarInfo):
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


# Extended headers (pax, GNU long names) precede a member and are read whole by tarfile:
# capped in size and number so that a small .tar.gz cannot make it read a huge one.
_META_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
               tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)  # fmt: skip
MAX_META_BYTES = 64 * 1024
MAX_META_HEADERS = 64
_ERRNO_REFUSED = {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.EILSEQ}


class _CappedTarInfo(tarfile.TarInfo):
    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveRejected(f"archive entry {self.name!r} is a sparse file")
        if self.type in _META_TYPES:
            seen = getattr(tarfile_, "_meta_headers_seen", 0) + 1
            tarfile_._meta_headers_seen = seen  # type: ignore[attr-defined]
            if self.size > MAX_META_BYTES or seen > MAX_META_HEADERS:
                raise ArchiveRejected("archive has oversized or too many extended headers")
        return super()._proc_member(tarfile_)


@dataclass(frozen=True)
class _Entry:
    key: zipfile.ZipInfo | tarfile.TarInfo
    rel: PurePosixPath
    size: int
    is_dir: bool


def _zip_entries(zf: zipfile.ZipFile) -> Iterator[_Entry]:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveRejected(f"archive entry {info.filename!r} is a link")
        yield _Entry(info, _safe_relpath(info.filename), info.file_size, info.is_dir())


def _tar_entries(tf: tarfile.TarFile) -> Iterator[_Entry]:
    for member in tf:  # one header at a time: never the whole list up front
        if member.issym() or member.islnk():
            raise ArchiveRejected(f"archive entry {member.name!r} is a link")
        if not (member.isfile() or member.isdir()):
            raise ArchiveRejected(f"archive entry {member.name!r} is not a regular file")
        yield _Entry(member, _safe_relpath(member.name), member.size, member.isdir())


_EOCD, _LOCATOR64, _EOCD64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
MAX_DIRECTORY_BYTES_PER_FILE = 4096  # a central-directory entry: 46 bytes + name + extras


def zip_directory(path: Path) -> tuple[int, int] | None:
    """(entries, central-directory bytes) as a zip's end records declare them, read before
    zipfile parses anything: the largest of every record it might use (zip64 too). zipfile
    reads the whole central directory by its size, whatever the entry count says."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        start = max(0, size - (1 << 16) - 22)
        f.seek(start)
        tail = f.read()
        plain = tail[-22:-18] == _EOCD and tail[-2:] == b"\0\0"  # no comment: zipfile's first try
        at = len(tail) - 22 if plain else tail.rfind(_EOCD)
        if at < 0 or len(tail) - at < 22:
            return None
        entries = int.from_bytes(tail[at + 10 : at + 12], "little")
        directory = int.from_bytes(tail[at + 12 : at + 16], "little")
        for record in _zip64_records(f, start + at):
            entries = max(entries, int.from_bytes(record[32:40], "little"))
            directory = max(directory, int.from_bytes(record[40:48], "little"))
    return entries, directory


def _zip64_records(f: IO[bytes], eocd: int) -> list[bytes]:
    if eocd < 20:
        return []
    f.seek(eocd - 20)
    locator = f.read(20)
    if not locator.startswith(_LOCATOR64):
        return []
    records = []
    for offset in (eocd - 20 - 56, int.from_bytes(locator[8:16], "little")):
        f.seek(max(offset, 0))
        record = f.read(56)
        if offset >= 0 and len(record) == 56 and record.startswith(_EOCD64):
            records.append(record)
    return records


def _check_layout(entry: _Entry, files: set[PurePosixPath], dirs: set[PurePosixPath]) -> None:
    """Refuse an entry that repeats a file, or is a file where a folder is (`a` and `a/b`)."""
    rel = entry.rel
    clash = rel in files or any(parent in files for parent in rel.parents)
    if clash or (not entry.is_dir and rel in dirs):
        raise ArchiveRejected(f"archive entry {rel.as_posix()!r} clashes with another entry")
    (dirs if entry.is_dir else files).add(rel)
    dirs.update(rel.parents)


def _listed(entries: Iterator[_Entry], max_files: int, max_total_bytes: int) -> list[_Entry]:
    """The entries, checked, stopping at the first one over the count or size cap."""
    listed: list[_Entry] = []
    files: set[PurePosixPath] = set()
    dirs: set[PurePosixPath] = set()
    total = 0
    for entry in entries:
        if len(listed) == max_files:
            raise ArchiveTooLarge(
                f"archive holds more than {max_files} files; the cap is {max_files}"
            )
        total += entry.size
        if total > max_total_bytes:
            raise ArchiveTooLarge(
                f"archive expands to more than the cap of {max_total_bytes} bytes"
            )
        _check_layout(entry, files, dirs)
        listed.append(entry)
    return listed


def _copy_capped(src: IO[bytes], dst: Path, budget: int) -> int:
    written = 0
    with dst.open("xb") as out:
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
    """Extract `archive` into the empty directory `dest`, or raise ArchiveRejected.

    Files and folders both count against `max_files` (an adapter is a handful of files)."""
    try:
        _extract(archive, dest, max_files=max_files, max_total_bytes=max_total_bytes)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, ValueError) as exc:
        raise ArchiveRejected(f"archive is corrupt: {exc}") from None
    except RecursionError:
        raise ArchiveRejected("archive is corrupt: nested headers") from None
    except OSError as exc:
        if exc.errno not in _ERRNO_REFUSED:
            raise
        raise ArchiveRejected(f"archive entry cannot be written: {exc.strerror}") from None


def _open(archive: Path, kind: str, max_files: int) -> zipfile.ZipFile | tarfile.TarFile:
    if kind == "tar":
        return tarfile.open(archive, "r:*", tarinfo=_CappedTarInfo)
    declared = zip_directory(archive)  # before zipfile parses the central directory
    if declared is not None and declared[0] > max_files:
        raise ArchiveTooLarge(f"archive holds {declared[0]} files; the cap is {max_files}")
    if declared is not None and declared[1] > max_files * MAX_DIRECTORY_BYTES_PER_FILE:
        raise ArchiveTooLarge(f"archive directory of {declared[1]} bytes: too many files")
    return zipfile.ZipFile(archive)


def _extract(archive: Path, dest: Path, *, max_files: int, max_total_bytes: int) -> None:
    kind = archive_kind(archive)
    with _open(archive, kind, max_files) as handle:
        entries = _zip_entries(handle) if kind == "zip" else _tar_entries(handle)
        budget = max_total_bytes
        for entry in _listed(entries, max_files, max_total_bytes):
            target = dest.joinpath(*entry.rel.parts)
            if entry.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = handle.open(entry.key) if kind == "zip" else handle.extractfile(entry.key)
            if src is None:
                raise ArchiveRejected(f"archive entry {entry.rel.as_posix()!r} cannot be read")
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
