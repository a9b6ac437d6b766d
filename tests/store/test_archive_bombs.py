"""Archives that cost a lot to list or clash with themselves: refused cheaply, with a reason."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from adapters_store import AdapterStore, ArchiveRejected, ArchiveTooLarge
from adapters_store.archive import extract_archive


def _header(name: str, *, kind: bytes = tarfile.REGTYPE, size: int = 0) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _gz(path: Path, blocks) -> Path:
    with gzip.open(path, "wb", compresslevel=6) as out:
        for block in blocks:
            out.write(block)
    return path


def _timed_refusal(archive: Path, dest: Path, error=ArchiveRejected) -> tuple[float, int]:
    tracemalloc.start()
    start = time.process_time()
    try:
        with pytest.raises(error):
            extract_archive(archive, dest)
        return time.process_time() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_tar_header_bomb_stops_at_the_file_cap(tmp_path):
    """200k empty-file headers gzip to a few hundred KB; only the first 33 are read."""
    names = [_header(f"f{i:04d}") for i in range(1000)]
    archive = _gz(tmp_path / "bomb.tar.gz", (b"".join(names) for _ in range(200)))
    assert archive.stat().st_size < 2_000_000
    cpu, peak = _timed_refusal(archive, tmp_path / "out", ArchiveTooLarge)
    assert cpu < 1.0 and peak < 20_000_000


def test_huge_pax_header_is_not_read(tmp_path):
    """A 200 MB extended header of zeros gzips to 200 KB: tarfile would read it whole."""
    size = 200 * 1024 * 1024
    zeros = bytes(1 << 20)
    blocks = [_header("././@PaxHeader", kind=tarfile.XHDTYPE, size=size)]
    archive = _gz(tmp_path / "pax.tar.gz", [*blocks, *(zeros for _ in range(200))])
    cpu, peak = _timed_refusal(archive, tmp_path / "out")
    assert cpu < 1.0 and peak < 20_000_000


def _many_entries_zip(path: Path, count: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            zf.writestr(f"f{i}", b"")
    return path


def test_zip_entry_count_is_read_from_the_end_record(tmp_path):
    from adapters_store.archive import zip_directory

    archive = _many_entries_zip(tmp_path / "many.zip", 30_000)
    assert zip_directory(archive)[0] == 30_000
    cpu, peak = _timed_refusal(archive, tmp_path / "out", ArchiveTooLarge)
    assert cpu < 0.5 and peak < 5_000_000


def test_zip_whose_end_record_lies_about_its_count(tmp_path):
    """zipfile reads the central directory by its size: a count of 1 must not let 30k in."""
    archive = _many_entries_zip(tmp_path / "lie.zip", 30_000)
    raw = bytearray(archive.read_bytes())
    at = raw.rfind(b"PK\x05\x06")
    raw[at + 8 : at + 12] = (1).to_bytes(2, "little") * 2
    archive.write_bytes(bytes(raw))
    cpu, peak = _timed_refusal(archive, tmp_path / "out", ArchiveTooLarge)
    assert cpu < 0.5 and peak < 5_000_000


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"" if name.endswith("/") else b"{}")
    return path


def _tar(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name in names:
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = 2
                tf.addfile(info, io.BytesIO(b"{}"))
    return path


@pytest.mark.parametrize(
    "names", [["a", "a/b"], ["a/b", "a"], ["a", "a/"], ["a/", "a"], ["a", "./a"], ["x/a", "x/a/b"]]
)
@pytest.mark.parametrize("make", [_zip, _tar])
def test_file_and_folder_of_the_same_name_are_refused(tmp_path, names, make):
    store = AdapterStore(tmp_path / "store")
    archive = make(tmp_path / "clash.archive", names)
    with pytest.raises(ArchiveRejected, match="clashes"):
        store.import_archive("x", archive)
    assert store.list() == []


def test_overlong_entry_name_is_refused(tmp_path):
    archive = _zip(tmp_path / "long.zip", ["n" * 300])
    with pytest.raises(ArchiveRejected, match="cannot be written"):
        extract_archive(archive, tmp_path / "out")
