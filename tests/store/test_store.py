"""AdapterStore: layout, manifest, versions, validation rules, atomicity."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from adapters import AutoAdapterModel

from adapters_store import (
    AdapterExists,
    AdapterNotFound,
    AdapterStore,
    ArchiveRejected,
    ArchiveTooLarge,
    BaseModelMismatch,
    BaseModelRef,
    InvalidAdapter,
    InvalidName,
)
from adapters_store.format import sha256_file

BASE = BaseModelRef(id="tiny", fingerprint="f" * 16)


@pytest.fixture(scope="module")
def saved_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A folder exactly as `save_adapter(..., use_safetensors=True)` writes it."""
    torch.manual_seed(0)
    model = AutoAdapterModel.from_pretrained(tiny_model_dir)
    model.add_adapter("demo", config="seq_bn")
    model.add_classification_head("demo", num_labels=2, id2label={0: "negative", 1: "positive"})
    out = tmp_path_factory.mktemp("saved") / "demo"
    model.save_adapter(out, "demo", with_head=True, use_safetensors=True)
    return out


@pytest.fixture
def store(tmp_path) -> AdapterStore:
    return AdapterStore(tmp_path / "store")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_add_writes_layout_and_manifest(store, saved_dir):
    manifest = store.add("demo", saved_dir, base_model=BASE, metrics={"accuracy": 0.9})
    path = store.root / "demo"
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
        "head_config.json",
        "manifest.json",
        "model_head.safetensors",
    ]
    on_disk = json.loads((path / "manifest.json").read_text())
    assert on_disk["name"] == "demo" and on_disk["version"] == 1
    assert on_disk["labels"] == {"0": "negative", "1": "positive"}
    assert on_disk["base_model"]["fingerprint"] == BASE.fingerprint
    assert on_disk["base_model"]["hidden_size"] == 32
    assert on_disk["adapter_config"] == "seq_bn"
    assert on_disk["source"] == "trained"
    for name, info in on_disk["files"].items():
        assert info["sha256"] == sha256_file(path / name)
        assert info["size"] == (path / name).stat().st_size
    assert manifest.size_bytes == sum(i["size"] for i in on_disk["files"].values())
    assert [m.name for m in store.list()] == ["demo"]
    assert store.verify("demo").version == 1


def test_replace_bumps_version_and_conflict_without_overwrite(store, saved_dir):
    store.add("demo", saved_dir, base_model=BASE)
    with pytest.raises(AdapterExists):
        store.add("demo", saved_dir, base_model=BASE)
    assert store.add("demo", saved_dir, base_model=BASE, overwrite=True).version == 2
    assert store.get("demo").manifest.version == 2


def test_version_keeps_growing_after_delete(store, saved_dir):
    store.add("demo", saved_dir, base_model=BASE)
    store.delete("demo")
    with pytest.raises(AdapterNotFound):
        store.get("demo")
    assert store.add("demo", saved_dir, base_model=BASE).version == 2


@pytest.mark.parametrize(
    "name", ["", "Upper", "-lead", ".hidden", "a/b/c", "a~b", "../x", "a" * 65, "sp ace"]
)
def test_invalid_names_rejected(store, saved_dir, name):
    with pytest.raises(InvalidName):
        store.add(name, saved_dir, base_model=BASE)


@pytest.mark.parametrize("name", ["a", "amazon-polarity", "v1.2_x", "0" * 64])
def test_valid_names_accepted(store, saved_dir, name):
    assert store.add(name, saved_dir, base_model=BASE).name == name


def test_import_dir_of_user_saved_adapter(store, saved_dir):
    manifest = store.import_dir("user", saved_dir)
    assert manifest.source == "uploaded"
    assert manifest.base_model.id.endswith("tiny-roberta0") or manifest.base_model.id
    assert manifest.labels == {0: "negative", 1: "positive"}


@pytest.mark.parametrize(
    "missing",
    ["adapter_config.json", "adapter.safetensors", "head_config.json", "model_head.safetensors"],
)
def test_missing_required_file_refused(store, saved_dir, tmp_path, missing):
    src = _copy(saved_dir, tmp_path / "src")
    (src / missing).unlink()
    with pytest.raises(InvalidAdapter, match=missing):
        store.import_dir("x", src)
    assert store.list() == []


@pytest.mark.parametrize("bad", ["adapter_config.json", "head_config.json"])
def test_unparsable_json_refused(store, saved_dir, tmp_path, bad):
    src = _copy(saved_dir, tmp_path / "src")
    (src / bad).write_text("{not json")
    with pytest.raises(InvalidAdapter, match="not valid JSON"):
        store.import_dir("x", src)


@pytest.mark.parametrize(
    ("extra", "drop", "reason"),
    [
        ("weights.pt", None, "pickle"),  # never converted: only the adapters library's .bin names
        ("pytorch_adapter.bin", None, "keep one"),  # beside the safetensors it would become
        ("pytorch_adapter.bin", "adapter.safetensors", "not a plain weights file"),
    ],
)
def test_pickle_refused_and_never_loaded(store, saved_dir, tmp_path, extra, drop, reason):
    src = _copy(saved_dir, tmp_path / "src")
    (src / extra).write_bytes(b"\x80\x04not really a pickle")
    if drop:
        (src / drop).unlink()
    with pytest.raises(InvalidAdapter, match=reason):
        store.import_dir("x", src)
    assert store.list() == []


def test_corrupt_safetensors_refused(store, saved_dir, tmp_path):
    src = _copy(saved_dir, tmp_path / "src")
    (src / "adapter.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(InvalidAdapter, match="safetensors"):
        store.import_dir("x", src)


def test_unexpected_file_refused(store, saved_dir, tmp_path):
    src = _copy(saved_dir, tmp_path / "src")
    (src / "run.sh").write_text("echo hi")
    with pytest.raises(InvalidAdapter, match="unexpected"):
        store.import_dir("x", src)


def test_base_model_mismatch_refused(store, saved_dir):
    wide = BaseModelRef(id="roberta-base", fingerprint="0" * 16, hidden_size=768)
    with pytest.raises(BaseModelMismatch, match="32-wide"):
        store.import_dir("x", saved_dir, expected_base=wide)
    store.add("t", saved_dir, base_model=BASE)
    archive = store.export_archive("t", store.root.parent / "t.zip")
    other = BaseModelRef(id="tiny", fingerprint="1" * 16, hidden_size=32)
    with pytest.raises(BaseModelMismatch, match="fingerprint"):
        store.import_archive("y", archive, expected_base=other)


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_archive_round_trip_keeps_metrics(store, saved_dir, tmp_path, fmt):
    store.add("demo", saved_dir, base_model=BASE, metrics={"accuracy": 0.75})
    archive = store.export_archive("demo", tmp_path / f"demo.{fmt}", archive_format=fmt)
    manifest = store.import_archive("copy", archive, expected_base=BASE)
    assert manifest.metrics == {"accuracy": 0.75}
    assert manifest.source == "uploaded"
    original, copy = store.get("demo"), store.get("copy")
    for name in ("adapter.safetensors", "model_head.safetensors"):
        assert sha256_file(original.path / name) == sha256_file(copy.path / name)


def test_archive_with_single_top_folder_accepted(store, saved_dir, tmp_path):
    archive = tmp_path / "nested.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(saved_dir, arcname="my-adapter")
    assert store.import_archive("nested", archive).labels[1] == "positive"


def _zip_with(path: Path, entries: dict[str, bytes], saved_dir: Path | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if saved_dir is not None:
            for f in saved_dir.iterdir():
                zf.write(f, arcname=f.name)
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("entry", ["../evil.json", "/etc/evil.json", "a/../../evil.json"])
def test_archive_traversal_refused(store, saved_dir, tmp_path, entry):
    archive = _zip_with(tmp_path / "evil.zip", {entry: b"{}"}, saved_dir)
    before = _snapshot(store.root)
    with pytest.raises(ArchiveRejected, match="escapes"):
        store.import_archive("x", archive)
    assert _snapshot(store.root) == before
    assert not (tmp_path / "evil.json").exists()


def test_archive_symlink_refused(store, saved_dir, tmp_path):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for f in saved_dir.iterdir():
            tf.add(f, arcname=f.name)
        link = tarfile.TarInfo("head_config2.json")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(ArchiveRejected, match="link"):
        store.import_archive("x", archive)


def test_zip_symlink_refused(store, saved_dir, tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("evil")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveRejected, match="link"):
        store.import_archive("x", archive)


def test_zip_bomb_refused_by_uncompressed_cap(tmp_path, saved_dir):
    store = AdapterStore(tmp_path / "store", max_total_bytes=1_000_000)
    archive = _zip_with(tmp_path / "bomb.zip", {"README.md": b"0" * 5_000_000}, saved_dir)
    assert archive.stat().st_size < 100_000  # it compresses very well
    with pytest.raises(ArchiveTooLarge):
        store.import_archive("x", archive)
    assert store.list() == []


def test_lying_zip_header_still_capped(tmp_path, saved_dir):
    """A size field that lies cannot get past the cap: bytes are counted while writing."""
    store = AdapterStore(tmp_path / "store", max_total_bytes=200_000)
    buf = tmp_path / "lie.zip"
    _zip_with(buf, {"README.md": b"x" * 400_000})
    raw = bytearray(buf.read_bytes())
    # Patch the central directory's uncompressed size of the entry to 10 bytes.
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    buf.write_bytes(bytes(raw))
    with pytest.raises(ArchiveRejected):
        store.import_archive("x", buf)


def test_too_many_files_refused(tmp_path, saved_dir):
    store = AdapterStore(tmp_path / "store", max_files=8)
    entries = {f"extra{i}.json": b"{}" for i in range(10)}
    with pytest.raises(ArchiveTooLarge, match="files"):
        store.import_archive("x", _zip_with(tmp_path / "many.zip", entries, saved_dir))


def test_not_an_archive_refused(store, tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"hello")
    with pytest.raises(ArchiveRejected, match=r"not a \.zip"):
        store.import_archive("x", path)


def test_refused_replace_leaves_old_version_intact(store, saved_dir, tmp_path):
    store.add("demo", saved_dir, base_model=BASE)
    before = _snapshot(store.root)
    src = _copy(saved_dir, tmp_path / "src")
    (src / "model_head.safetensors").write_bytes(b"broken")
    with pytest.raises(InvalidAdapter):
        store.import_dir("demo", src, overwrite=True)
    assert _snapshot(store.root) == before


def test_readers_never_see_partial_adapters(store, saved_dir):
    store.add("demo", saved_dir, base_model=BASE)
    leftovers = [p.name for p in store.root.iterdir() if p.name.startswith((".tmp", ".trash"))]
    assert leftovers == []


def test_cleanup_removes_scratch_of_dead_processes(store):
    import socket

    dead = store.root / f".tmp-{socket.gethostname()}-999999-abc"
    alive = store.root / f".tmp-{socket.gethostname()}-{os.getpid()}-abc"
    dead.mkdir()
    alive.mkdir()
    assert store.cleanup() == 1
    assert not dead.exists() and alive.exists()


def test_cleanup_when_the_host_name_holds_dashes(store, monkeypatch):
    """Kubernetes pod names (`serve-7d9f-x2`) hold '-': cleanup must still parse the pid."""
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "adapters-serve-7d9f-x2")
    dead = store.root / ".tmp-adapters-serve-7d9f-x2-999999-abc"
    upload = store.root / ".tmp-adapters-serve-7d9f-x2-999998-upload-abc"
    alive = store.root / f".tmp-adapters-serve-7d9f-x2-{os.getpid()}-abc"
    other = store.root / ".tmp-adapters-serve-7d9f-999999-abc"  # pod "adapters-serve-7d9f"
    for path in (dead, upload, alive, other):
        path.mkdir()
    assert store.cleanup() == 2
    assert not dead.exists() and not upload.exists()
    assert alive.exists() and other.exists()


def test_loaded_by_user_code_from_store(store, saved_dir, tiny_model_dir):
    store.add("demo", saved_dir, base_model=BASE)
    model = AutoAdapterModel.from_pretrained(tiny_model_dir)
    assert model.load_adapter(str(store.get("demo").path), use_safetensors=True) == "demo"
    assert "demo" in model.heads


def test_head_labels_must_be_classification(store, saved_dir, tmp_path):
    src = _copy(saved_dir, tmp_path / "src")
    cfg = json.loads((src / "head_config.json").read_text())
    cfg["config"]["head_type"] = "tagging"
    (src / "head_config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidAdapter, match="classification"):
        store.import_dir("x", src)
