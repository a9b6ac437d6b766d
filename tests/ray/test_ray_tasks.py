"""Multi-label and regression adapters served by the Ray replicas: each answer is the task's
(sigmoid per label and the labels over their stored thresholds; the regression number) of the
same logits the engine gives in-process, alone and in a request that mixes them with a
single-label adapter. Runs after test_ray_serve.py on the same cluster; the adapters it adds
are deleted again."""

from __future__ import annotations

import contextlib
import math

import httpx
import pytest

from adapters_store import AdapterNotFound, AdapterStore
from tests.ray.conftest import TEXTS, Reference
from tests.support.adapters import AdapterFactory
from tests.support.ray_cluster import ServeCluster
from tests.support.tasks import add_task_adapter

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
TOL = 1e-5
# name -> (task, labels, stored thresholds)
TASKS = {
    "emo": ("multi_label", {0: "joy", 1: "anger", 2: "fear", 3: "love"}, {0: 0.3, 2: 0.7}),
    "sim": ("regression", {0: "similarity"}, None),
}


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _check(part: dict, name: str, raw: list[list[float]]) -> None:
    task, labels, thresholds = TASKS[name]
    assert (part["adapter"], part["task"]) == (name, task)
    for index, logits in enumerate(raw):
        prediction = part["predictions"][index]
        if task == "regression":  # one number per input
            assert prediction["score"] == pytest.approx(logits[0], abs=TOL)
            continue
        probs = [_sigmoid(x) for x in logits]
        got = {p["label"]: p["score"] for p in prediction}
        assert got == pytest.approx({labels[i]: p for i, p in enumerate(probs)}, abs=TOL)
        limit = [(thresholds or {}).get(i, 0.5) for i in range(len(probs))]
        chosen = {labels[i] for i, p in enumerate(probs) if p >= limit[i]}
        assert set(part["labels"][index]) == chosen


@pytest.fixture
def task_adapters(ray_store: AdapterStore, factory: AdapterFactory):
    for seed, (name, (task, labels, thresholds)) in enumerate(TASKS.items()):
        add_task_adapter(factory, ray_store, name, task=task, seed=300 + seed, labels=labels,
                         thresholds=thresholds)  # fmt: skip
    yield list(TASKS)
    for name in TASKS:
        with contextlib.suppress(AdapterNotFound):
            ray_store.delete(name)


def test_multi_label_and_regression_adapters_through_the_replicas(
    ray_serve: ServeCluster, ray_store: AdapterStore, reference: Reference, task_adapters
) -> None:
    raw = {name: reference.logits(ray_store, name, TEXTS) for name in task_adapters}
    with httpx.Client(base_url=ray_serve.url, timeout=120) as client:
        for name in task_adapters:
            reply = client.post("/classify", json={"adapter": name, "inputs": TEXTS, "top_k": None})
            assert reply.status_code == 200, reply.text
            _check(reply.json(), name, raw[name])
        mixed = client.post(
            "/classify", json={"adapters": ["emo", "a1", "sim"], "inputs": TEXTS, "top_k": None}
        )
    assert mixed.status_code == 200, mixed.text
    parts = mixed.json()["results"]
    assert [p["adapter"] for p in parts] == ["emo", "a1", "sim"]
    _check(parts[0], "emo", raw["emo"])
    _check(parts[2], "sim", raw["sim"])
    want = reference.probs(ray_store, "a1", TEXTS)
    for prediction, probs in zip(parts[1]["predictions"], want, strict=True):
        assert sorted(p["score"] for p in prediction) == pytest.approx(sorted(probs), abs=TOL)
