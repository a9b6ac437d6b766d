"""The real app in-process (TestClient runs its lifespan) over a store of random adapters."""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters_store import AdapterStore
from app.config import Settings
from app.main import create_app
from app.serving.engine import Engine
from tests.support.adapters import AdapterFactory
from tests.support.server import wait_client_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

LABELS3 = {0: "neg", 1: "neu", 2: "pos"}


def seed_store(store: AdapterStore, factory: AdapterFactory) -> None:
    factory.add_to_store(store, "alpha", seed=1)
    factory.add_to_store(store, "beta", seed=2, labels=LABELS3)
    factory.add_to_store(store, "gamma", seed=3)


@pytest.fixture
def serve(tmp_path, tiny_model_dir, factory) -> Callable[..., contextlib.AbstractContextManager]:
    """serve(**settings) -> context manager yielding a TestClient of a fresh app."""

    @contextlib.contextmanager
    def _serve(**overrides) -> Iterator[TestClient]:
        data_dir = tmp_path / f"data-{len(list(tmp_path.iterdir()))}"
        # No start-up timing of pass shapes here: it holds the model for up to 1.5 s, which
        # tests of timeouts and queueing would read as a busy model (tests/serving covers it).
        overrides.setdefault("pass_cost_calibration", False)
        # TestClient sends `Host: testserver`: a keyless server answers only the names it knows.
        overrides.setdefault("allowed_hosts", ["testserver"])
        settings = Settings(base_model=str(tiny_model_dir), data_dir=data_dir, **overrides)
        seed_store(AdapterStore(settings.adapters_dir), factory)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            wait_client_ready(client)  # the batcher's warm-up: classify is 503 until then
            yield client

    return _serve


@pytest.fixture
def client(serve) -> Iterator[TestClient]:
    with serve(max_inputs_per_request=8, max_text_chars=500) as client:
        yield client


def reference(store_root: Path, model_dir: Path, name: str, texts: list[str]) -> list[list[float]]:
    """Each text alone through a separate in-process engine: the expected probabilities."""
    from adapters_store.rendering import softmax
    from app.serving.engine import Segment

    engine = Engine.load(base_model=str(model_dir))
    engine.load_adapter(name, store_root / name)
    return [softmax(engine.forward([Segment(name, engine.tokenize([t]))])[0][0]) for t in texts]


def base_digest(engine: Engine) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(engine.base_state().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
