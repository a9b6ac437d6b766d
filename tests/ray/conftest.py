"""One Ray cluster (two nodes on 127.0.0.1) with the Serve app, shared by every test here.

Ray on a 2-core box is heavy (a dozen processes, a minute to start under load): the cluster is
package-scoped and always shut down, also when a test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray.serve")

from adapters_store import AdapterStore
from adapters_store.rendering import softmax
from app.serving.engine import Engine, Segment
from tests.support.adapters import AdapterFactory
from tests.support.ray_cluster import ServeCluster, serve_cluster

ADAPTERS = [f"a{i}" for i in range(8)]
TEXTS = [
    "a great phone with a lovely screen",
    "awful battery and terrible sound",
    "the plot was superb",
    "it was a poor product",
    "good",
    "the movie was rather dreadful and the acting was horrible but the song was great",
]


@pytest.fixture(scope="package")
def ray_store(tmp_path_factory, factory: AdapterFactory) -> AdapterStore:
    store = AdapterStore(tmp_path_factory.mktemp("ray-store") / "adapters")
    for i, name in enumerate(ADAPTERS):
        factory.add_to_store(store, name, seed=100 + i)
    return store


@pytest.fixture(scope="package")
def ray_serve(ray_store: AdapterStore, tiny_model_dir: Path) -> Iterator[ServeCluster]:
    with serve_cluster(
        store_dir=ray_store.root, base_model=tiny_model_dir, replicas=2, max_adapters=4
    ) as cluster:
        yield cluster


class Reference:
    """In-process outputs: the same engine code, one adapter at a time, no Ray."""

    def __init__(self, model_dir: Path) -> None:
        self.engine = Engine.load(base_model=str(model_dir), device="cpu", max_length=128)

    def logits(self, store: AdapterStore, name: str, texts: list[str]) -> list[list[float]]:
        stored = store.get(name)
        slot = f"ref-{name}-v{stored.manifest.version}"
        if not self.engine.has_adapter(slot):
            self.engine.load_adapter(slot, stored.path)
        ids = self.engine.tokenize(texts)
        return [list(self.engine.forward([Segment(slot, [row])])[0][0]) for row in ids]

    def probs(self, store: AdapterStore, name: str, texts: list[str]) -> list[list[float]]:
        return [softmax(row) for row in self.logits(store, name, texts)]


@pytest.fixture(scope="package")
def reference(tiny_model_dir: Path) -> Reference:
    return Reference(tiny_model_dir)
