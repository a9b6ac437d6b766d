"""Read a stored adapter into memory, off the inference thread: configs, labels and tensors.

Decoding touches the disk and no model, so it runs on a loader thread while the inference
thread keeps serving. The tensors are renamed to canonical keys (the adapter's own name in its
file replaced by `PLACEHOLDER`) so that any slot of the same shape can take them
(`app.serving.slots`), and converted to the serving dtype once, here.

A decode is tied to the manifest file it was read under (inode + mtime): a replace or delete
that lands while the files are read is detected and the read retried on the new version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters_store import AdapterNotFound, AdapterStore, BaseModelRef, InvalidAdapter, check_base
from adapters_store import format as fmt
from adapters_store.methods import adapter_name_at
from adapters_store.tensor_files import read_tensors
from app.serving.errors import ServiceError
from app.serving.split_groups import Compat, compat_of, freeze

PLACEHOLDER = "{slot}"
READ_ATTEMPTS = 3  # a read that races a replace is retried on the new version this often
# Config fields that only act while training or initialising: adapters that differ only in
# them build identical modules in eval mode, so they may share a slot.
TRAINING_ONLY = frozenset({"init_weights_seed", "dropout"})
BOTTLENECK_INIT = frozenset({"init_weights"})  # bottleneck init schemes: values, not shapes
HEAD_LABEL_FIELDS = frozenset({"label2id", "id2label"})  # labels come from our manifest


class AdapterChanging(ServiceError):
    """The adapter was replaced during every read attempt: the client may retry at once."""

    code = "unavailable"
    retry_after_s = 1


Stamp = tuple[int, int]


@dataclass
class Decoded:
    """One adapter version in memory; `tensors` live on the device of the tier holding it."""

    name: str
    version: int
    stamp: Stamp
    labels: dict[int, str]
    path: Path
    compat: Compat
    slot_key: Hashable | None  # None: its tensors cannot be mapped onto a slot (library path)
    tensors: dict[str, Any] = field(repr=False)
    nbytes: int = 0
    config: dict | None = field(default=None, repr=False)  # adapter_config.json's "config"
    head: dict | None = field(default=None, repr=False)  # head_config.json's "config"
    task: str = "single_label"  # the manifest's task and thresholds (adapters_store.rendering)
    thresholds: dict[int, float] | None = None
    read_s: float = 0.0  # how long reading it took, until its first activation (then 0)


def stamp_of(store: AdapterStore, name: str) -> Stamp | None:
    """Which manifest file `name` has now (inode, mtime); None when it is gone.

    Raises InvalidName for a name the store cannot hold (never a path outside the store)."""
    return stamp_of_path(store.versions.folder(name))


def stamp_of_path(folder: Path) -> Stamp | None:
    try:
        st = os.stat(folder / fmt.MANIFEST)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_mtime_ns)


def decode(store: AdapterStore, name: str, *, base: BaseModelRef, dtype: Any) -> Decoded:
    """Read `name` (manifest, configs, weights); AdapterNotFound / InvalidAdapter / mismatch."""
    stamp = stamp_of(store, name)
    for _ in range(READ_ATTEMPTS):
        if stamp is None:
            raise AdapterNotFound(f"adapter {name!r} not found")
        try:
            decoded = _read(store, name, stamp, base=base, dtype=dtype)
        except (InvalidAdapter, FileNotFoundError, NotADirectoryError):
            after = stamp_of(store, name)
            if after == stamp:
                raise  # the files really are bad (FileNotFoundError: a file is missing)
            stamp = after
            continue
        after = stamp_of(store, name)
        if after == stamp:
            return decoded
        stamp = after  # replaced while we read: maybe a mixture of two versions
    raise AdapterChanging(f"adapter {name!r} is being replaced; retry")


def _read(
    store: AdapterStore, name: str, stamp: Stamp, *, base: BaseModelRef, dtype: Any
) -> Decoded:
    stored = store.get(name)
    check_base(stored.manifest.base_model, base)
    adapter_meta = _json(stored.path / fmt.ADAPTER_CONFIG)
    head_meta = _json(stored.path / fmt.HEAD_CONFIG)
    config = adapter_meta.get("config")
    head = head_meta.get("config")
    tensors = {
        **_canonical(stored.path / fmt.ADAPTER_WEIGHTS, adapter_meta.get("name"), dtype),
        **_canonical(stored.path / fmt.HEAD_WEIGHTS, head_meta.get("name"), dtype),
    }
    mappable = all(PLACEHOLDER in key for key in tensors)
    return Decoded(
        name=name,
        version=stored.manifest.version,
        stamp=stamp,
        labels=dict(stored.manifest.labels),
        path=stored.path,
        compat=compat_of(name, config if isinstance(config, Mapping) else None),
        slot_key=slot_key(config, head) if mappable else None,
        tensors=tensors,
        nbytes=sum(t.numel() * t.element_size() for t in tensors.values()),
        config=config if isinstance(config, dict) else None,
        head=head if isinstance(head, dict) else None,
        task=stored.manifest.task,
        thresholds=stored.manifest.thresholds,
    )


def slot_key(config: Any, head: Any) -> Hashable | None:
    """Adapters with equal keys build identical modules (eval mode): one slot fits both."""
    if not isinstance(config, Mapping) or not isinstance(head, Mapping):
        return None
    drop = TRAINING_ONLY | (BOTTLENECK_INIT if "architecture" not in config else frozenset())
    body = {k: v for k, v in config.items() if k not in drop}
    head_shape = {k: v for k, v in head.items() if k not in HEAD_LABEL_FIELDS}
    return (freeze(body), freeze(head_shape))


def _canonical(path: Path, saved: Any, dtype: Any) -> dict[str, Any]:
    """The file's tensors, keyed with the saved name replaced by PLACEHOLDER, in `dtype`.

    The name is replaced where it follows one of the library's per-adapter containers
    (`.adapters.NAME.`, `.loras.NAME.`, `heads.NAME.`, ...), exactly once; a key where that
    is not so keeps its own name, and the adapter then takes the library path.
    """
    raw = read_tensors(path)  # each tensor in memory of its own, none a view of the file
    out = {}
    for key, tensor in raw.items():
        parts = key.split(".")
        hits = [i for i in range(1, len(parts)) if parts[i] == saved and adapter_name_at(parts, i)]
        if len(hits) == 1:
            parts[hits[0]] = PLACEHOLDER
            key = ".".join(parts)
        out[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return out


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise InvalidAdapter(f"{path.name} is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InvalidAdapter(f"{path.name} must hold a JSON object")
    return data
