"""Adapters of every task type (issue 21) for serving tests: the library's heads, our manifest.

    add_task_adapter(factory, store, "emotions", task="multi_label", seed=3,
                     labels={0: "joy", 1: "anger", 2: "fear"}, thresholds={0: 0.3})

The head is the adapters library's own (`add_classification_head(..., multilabel=True)`,
`num_labels=1` for regression); the manifest's `task`, `thresholds` and `text_pair` are
written as the trainer records them, through an atomic replace of manifest.json.
"""

from __future__ import annotations

import json
import os
from typing import Any

from adapters_store import AdapterStore, Manifest
from adapters_store.format import MANIFEST
from tests.support.adapters import AdapterFactory


def add_task_adapter(
    factory: AdapterFactory,
    store: AdapterStore,
    name: str,
    *,
    task: str,
    seed: int,
    labels: dict[int, str] | None = None,
    thresholds: dict[int, float] | None = None,
    text_pair: bool = False,
    **kwargs: Any,
) -> Manifest:
    """A random adapter with the head of `task`, stored with the task in its manifest."""
    if task == "regression":
        labels = labels or {0: "score"}
    factory.add_to_store(
        store, name, seed=seed, labels=labels, multilabel=task == "multi_label", **kwargs
    )
    return set_task(store, name, task=task, thresholds=thresholds, text_pair=text_pair)


def set_task(
    store: AdapterStore,
    name: str,
    *,
    task: str,
    thresholds: dict[int, float] | None = None,
    text_pair: bool = False,
) -> Manifest:
    """Record the task fields in `name`'s manifest (a new file: the caches see a new stamp)."""
    stored = store.get(name)
    manifest = stored.manifest.model_copy(
        update={"task": task, "thresholds": thresholds, "text_pair": text_pair}
    )
    path = stored.path / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json")), encoding="utf-8")
    os.replace(tmp, path)
    return manifest
