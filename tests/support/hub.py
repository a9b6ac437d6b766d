"""Hugging Face hub repositories laid out on disk, for offline import tests.

    commit = cache_repo(cache_dir, "org/name", folder, revision="main", subfolder=None)

writes the hub cache layout that `huggingface_hub` itself writes and reads
(`models--org--name/{blobs,refs,snapshots}`, snapshot files linked to blobs), so that
`snapshot_download(..., cache_dir=cache_dir)` with HF_HUB_OFFLINE=1 resolves it exactly as
it would resolve a real download. Also: `.bin` copies of saved adapters and a pickle that
runs code when it is loaded unsafely.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

BIN_NAMES = {
    "adapter.safetensors": "pytorch_adapter.bin",
    "model_head.safetensors": "pytorch_model_head.bin",
}


def cache_repo(
    cache_dir: Path,
    repo_id: str,
    folder: Path,
    *,
    revision: str = "main",
    subfolder: str | None = None,
    extra: dict[str, bytes] | None = None,
) -> str:
    """Put the files of `folder` (under `subfolder`) into the cache as `repo_id@revision`."""
    files = {
        (f"{subfolder}/{p.name}" if subfolder else p.name): p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }
    files.update(extra or {})
    digest = hashlib.sha1(repo_id.encode())
    for rel, data in sorted(files.items()):
        digest.update(rel.encode() + data)
    commit = digest.hexdigest()
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return commit


def as_pickled(folder: Path, out: Path) -> Path:
    """The same adapter as `save_adapter(dir, name)` (no safetensors) writes it: torch.save'd
    state dicts in pytorch_adapter.bin / pytorch_model_head.bin."""
    import torch
    from safetensors.torch import load_file

    out.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.name in BIN_NAMES:
            torch.save(load_file(str(path)), out / BIN_NAMES[path.name])
        else:
            shutil.copyfile(path, out / path.name)
    return out


class Payload:
    """Unpickling this runs `Path(marker).touch()`: the code a malicious .bin would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def malicious_bin(folder: Path, out: Path, marker: Path) -> Path:
    """`as_pickled(folder)` with a head file that runs code when loaded with a full unpickle."""
    import torch

    as_pickled(folder, out)
    state = torch.load(out / "pytorch_model_head.bin", weights_only=True)
    state["payload"] = Payload(marker)
    torch.save(state, out / "pytorch_model_head.bin")
    return out
