"""Training jobs with the new fields through a real server and worker: a sentence-pair
regression job (`text_pair_column`, `task`) and a multi-label job (task inferred from a label
column of lists); the job shows the task's metrics and curves, the store records the task."""

from __future__ import annotations

import pytest

from adapters_store import AdapterStore
from tests.support.jobs import JobSystem
from tests.support.task_data import MULTI_LABELS, multi_label_rows, regression_rows
from tests.support.tiny import write_jsonl

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def system(tmp_path_factory, tiny_model_dir):
    with JobSystem(tmp_path_factory.mktemp("jobs-tasks"), tiny_model_dir) as system:
        datasets = system.data_dir / "datasets"
        rows = regression_rows(120, seed=6)
        for i, row in enumerate(rows):  # pairs: the score is about the first text
            row["text_pair"] = f"sentence {i}"
        write_jsonl(datasets / "sim.jsonl", rows)
        write_jsonl(datasets / "emo.jsonl", multi_label_rows(120, seed=7))
        yield system


def test_pair_regression_job_reports_pearson_and_stores_the_task(system):
    pair = {"text_pair_column": "text_pair", "task": "regression"}
    response = system.submit(
        name="sim", dataset="sim.jsonl", label_column="score", max_steps=8, **pair
    )
    assert response.status_code == 202, response.text
    job = system.wait(response.json()["id"], until={"succeeded", "failed"})
    assert job["status"] == "succeeded", (job["error"], system.diagnostics())
    assert (
        job["config"]["text_pair_column"] == "text_pair" and job["config"]["task"] == "regression"
    )
    assert {"pearson", "spearman", "mse"} <= set(job["metrics"])
    assert "accuracy" not in job["metrics"]
    curves = job["curves"]
    assert curves["metric"] == "pearson" and curves["eval"]
    assert all(-1.0 <= p["pearson"] <= 1.0 for p in curves["eval"])
    best = max(curves["eval"], key=lambda p: p["pearson"])
    assert job["metrics"]["pearson"] == pytest.approx(best["pearson"])
    manifest = AdapterStore(system.store_dir).get("sim").manifest
    assert manifest.task == "regression" and manifest.text_pair
    assert manifest.labels == {0: "score"}


def test_multi_label_job_infers_the_task_and_stores_thresholds(system):
    response = system.submit(name="emo", dataset="emo.jsonl", label_column="labels", max_steps=8)
    assert response.status_code == 202, response.text
    job = system.wait(response.json()["id"], until={"succeeded", "failed"})
    assert job["status"] == "succeeded", (job["error"], system.diagnostics())
    assert {"f1_macro", "f1_micro"} <= set(job["metrics"])
    assert {f"f1/{name}" for name in MULTI_LABELS} <= set(job["metrics"])
    assert job["curves"]["metric"] == "f1_macro"
    assert all("f1_micro" in p for p in job["curves"]["eval"])
    manifest = AdapterStore(system.store_dir).get("emo").manifest
    assert manifest.task == "multi_label" and sorted(manifest.thresholds) == [0, 1, 2]


def test_a_bad_task_is_refused_up_front(system):
    response = system.submit(name="bad", dataset="emo.jsonl", task="ranking")
    assert response.status_code == 422, response.text
