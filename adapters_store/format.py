"""The on-disk format: names, the files of a saved adapter, and our manifest."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from adapters_store.errors import AdapterNotFound, InvalidAdapter, InvalidName
from adapters_store.tasks import HEAD_TYPES, Task

# A name is one part, or a namespace and a part (`team-a/sentiment`): each part 1-64 characters
# of a-z, 0-9, '.', '_', '-', starting with a letter or digit. No '@' (it selects a version) and no
# '~' (it stands for the '/' in the folder name).
# Whole strings only (`\A`, `\Z` and fullmatch): `$` also matches before a final newline, which let
# `shared-x\n` be stored beside `shared-x` (issue 26 #11).
PART = r"[a-z0-9][a-z0-9._-]{0,63}"
NAME_PATTERN = rf"\A{PART}(?:/{PART})?\Z"
_NAME_RE = re.compile(NAME_PATTERN)
# What the HTTP routes put after a name (`/adapters/{name}/archive`, `/v2/models/{name}/ready`):
# not the second part of a namespaced name, so that a path has one reading.
ROUTE_WORDS = frozenset(
    {"archive", "load", "unload", "infer", "ready", "versions", "aliases", "split"}
)
NAMESPACE_SEP = "/"
FOLDER_SEP = "~"  # the namespace separator in a folder name: `team-a~sentiment`

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
HEAD_CONFIG = "head_config.json"
HEAD_WEIGHTS = "model_head.safetensors"
MANIFEST = "manifest.json"
MODEL_CARD = "README.md"
CURVES_PNG = "learning_curves.png"  # a trained adapter's learning curves (training.plots)
REQUIRED_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_CONFIG, HEAD_WEIGHTS)
# Files we accept beside the required ones; anything else in an import is refused.
OPTIONAL_FILES = (MANIFEST, MODEL_CARD, CURVES_PNG)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
SAFETENSORS_FILES = (ADAPTER_WEIGHTS, HEAD_WEIGHTS)
MAX_TENSORS = 10_000  # per weights file; an adapter has tens to hundreds


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid adapter name {name!r}: use 1-64 characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit, optionally after a namespace of the same kind "
            "and a '/' (team-a/sentiment)"
        )
    _, sep, leaf = name.partition(NAMESPACE_SEP)
    if sep and leaf in ROUTE_WORDS:
        raise InvalidName(
            f"invalid adapter name {name!r}: a namespaced name may not end in "
            f"{', '.join(sorted(ROUTE_WORDS))} (the API's routes use those words after a name)"
        )
    return name


def folder_name(name: str) -> str:
    """The store folder of a (valid) name: one level under the root, never a path."""
    return name.replace(NAMESPACE_SEP, FOLDER_SEP)


def name_of_folder(folder: str) -> str:
    """The adapter name a store folder holds (the inverse of `folder_name`)."""
    return folder.replace(FOLDER_SEP, NAMESPACE_SEP)


def any_adapter_name(root: str | os.PathLike) -> str | None:
    """The name of one adapter folder of the store at `root` (whichever the directory lists
    first; the dot-folders are the store's own), without the listing index; None: none."""
    with os.scandir(root) as entries:
        folders = (e.name for e in entries if e.name[0] != "." and e.is_dir())
        folder = next(folders, None)
    return None if folder is None else name_of_folder(folder)


def not_found(name: str) -> AdapterNotFound:
    """The one error of a missing adapter (and of one a key may not see: the same answer)."""
    return AdapterNotFound(f"adapter {name!r} not found")


class BaseModelRef(BaseModel):
    id: str
    fingerprint: str | None = None
    model_type: str | None = None
    hidden_size: int | None = None


class HubOrigin(BaseModel):
    """Where a `source: hub` adapter came from: the repo, the revision asked, its commit."""

    repo_id: str
    revision: str
    commit: str
    subfolder: str | None = None


class FileInfo(BaseModel):
    sha256: str
    size: int


class Manifest(BaseModel):
    name: str
    version: int = 1
    base_model: BaseModelRef
    adapter_config: str
    labels: dict[int, str]
    metrics: dict[str, float] = Field(default_factory=dict)
    source: Literal["trained", "uploaded", "hub"]
    hub: HubOrigin | None = None
    training: dict[str, Any] | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    files: dict[str, FileInfo] = Field(default_factory=dict)
    # What the head computes: one label of several (softmax), any number of labels (sigmoid,
    # each against its threshold), or one number (regression; labels is {0: target name}).
    task: Task = "single_label"
    # multi_label: the threshold of each label index, tuned on the evaluation split.
    thresholds: dict[int, float] | None = None
    # Trained on sentence pairs (text, text_pair): inputs should be pairs.
    text_pair: bool = False
    # Bytes of the adapter's and head's parameters in float32 (`fit.param_bytes`): what loading
    # it allocates. None in manifests written before it was recorded.
    param_bytes: int | None = None

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files.values())


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a stored adapter's folder: AdapterNotFound when there is none (or it was
    removed while being read), InvalidAdapter when it does not parse."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise not_found(name_of_folder(folder.name))
    try:
        return Manifest.model_validate(read_json(manifest_path))
    except ValidationError as exc:
        name = name_of_folder(folder.name)
        raise InvalidAdapter(f"{name}/manifest.json is invalid: {exc}") from None
    except InvalidAdapter:
        if not manifest_path.exists():
            raise not_found(name_of_folder(folder.name)) from None
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapter(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidAdapter(f"{path.name} must hold a JSON object")
    return data


def labels_from_head_config(head_config: dict) -> dict[int, str]:
    """id2label of a classification head, from the adapters library's head_config.json."""
    config = head_config.get("config")
    if not isinstance(config, dict) or config.get("head_type") not in HEAD_TYPES:
        raise InvalidAdapter("head_config.json must describe a classification head")
    label2id = config.get("label2id") or {}
    num_labels = config.get("num_labels")
    if not isinstance(num_labels, int) or num_labels < 1:
        raise InvalidAdapter("head_config.json has no valid num_labels")
    labels = {int(i): f"LABEL_{i}" for i in range(num_labels)}
    try:
        labels.update({int(i): str(label) for label, i in label2id.items()})
    except (TypeError, ValueError, AttributeError):
        raise InvalidAdapter("head_config.json has a malformed label2id") from None
    if sorted(labels) != list(range(num_labels)):
        raise InvalidAdapter("head_config.json label ids do not match num_labels")
    return labels


def adapter_config_name(adapter_config: dict) -> str:
    """A short name of the adapter method (seq_bn, lora, prefix_tuning, ...)."""
    config = adapter_config.get("config")
    if not isinstance(config, dict):
        raise InvalidAdapter("adapter_config.json has no 'config' object")
    if isinstance(adapter_config.get("config_name"), str):
        return adapter_config["config_name"]
    arch = config.get("architecture")
    if arch:
        return str(arch)
    if "reduction_factor" in config:
        if config.get("is_parallel"):
            return "par_bn"
        return "double_seq_bn" if config.get("mh_adapter") else "seq_bn"
    return "custom"


def check_safetensors(path: Path) -> None:
    """Parse the safetensors header without unpickling anything; refuse what does not parse."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as exc:  # the library raises several types for malformed files
        raise InvalidAdapter(f"{path.name} is not a valid safetensors file: {exc}") from None
    if not keys:
        raise InvalidAdapter(f"{path.name} holds no tensors")
    if len(keys) > MAX_TENSORS:
        raise InvalidAdapter(f"{path.name} holds {len(keys)} tensors; the cap is {MAX_TENSORS}")
