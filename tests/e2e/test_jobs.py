"""Training jobs end to end: a real `python -m app` server and a real `python -m app.worker`
process over the default SQLite queue, with the tiny model and a JSONL written here."""

from __future__ import annotations

import pytest

from tests.support.jobs import JobSystem, running

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def system(tmp_path_factory, tiny_model_dir):
    with JobSystem(tmp_path_factory.mktemp("jobs"), tiny_model_dir) as system:
        yield system


def test_submit_progress_success_then_classify_with_the_new_adapter(system):
    response = system.submit(name="kw-e2e", max_steps=40, label_names=["negative", "positive"])
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "queued" and set(created) == {"id", "status"}
    assert response.headers["location"] == f"/train-jobs/{created['id']}"

    polls: list[dict] = []
    job = system.wait(created["id"], until={"succeeded", "failed"}, seen=polls)
    assert job["status"] == "succeeded", (job["error"], system.diagnostics())
    midway = [p for p in polls if running(p) and p["progress"]["step"] < 40]
    assert midway, "no poll saw the job running with partial progress"
    assert midway[0]["progress"]["total_steps"] == 40 and midway[0]["started_at"]
    assert job["progress"]["step"] == 40
    # learning curves: live while running, final (with the best step) once succeeded
    assert any(p["curves"]["train"] for p in midway), "no poll saw curve points while running"
    curves = job["curves"]
    assert [p["step"] for p in curves["eval"]] == list(range(4, 41, 4))  # every 4 of 40 steps
    assert all(0.0 <= p["accuracy"] <= 1.0 and p["loss"] > 0 for p in curves["eval"])
    assert curves["train"] and all(p["loss"] > 0 for p in curves["train"])
    best = max(curves["eval"], key=lambda p: p["accuracy"])
    assert curves["best_step"] == best["step"]
    assert job["metrics"]["accuracy"] == pytest.approx(best["accuracy"])
    assert job["adapter"] == {"name": "kw-e2e", "version": 1}
    assert 0.0 <= job["metrics"]["accuracy"] <= 1.0 and job["finished_at"] >= job["started_at"]
    assert job["config"]["base_model"] == system.env["APP_BASE_MODEL"]

    answer = system.client.post("/classify", json={"adapter": "kw-e2e", "inputs": ["great film"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 1
    assert answer.json()["predictions"][0][0]["label"] in {"negative", "positive"}


def test_name_taken_is_409_and_overwrite_serves_the_new_version_next(system):
    if "kw-e2e" not in system.store_entries():
        pytest.skip("needs the adapter trained by the previous test")
    taken = system.submit(name="kw-e2e", max_steps=4)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "adapter_exists"

    job_id = system.submit(name="kw-e2e", max_steps=4, overwrite=True).json()["id"]
    job = system.wait(job_id)
    assert job["status"] == "succeeded" and job["adapter"]["version"] == 2
    answer = system.client.post("/classify", json={"adapter": "kw-e2e", "inputs": "fine"})
    assert answer.json()["version"] == 2


def test_cancel_running_then_cancel_queued(system):
    long_id = system.submit(name="kw-long", max_steps=100_000).json()["id"]
    system.wait(long_id, until=running)
    # The single worker is busy: the next job stays queued.
    queued = system.submit(name="kw-queued", max_steps=4)
    assert queued.status_code == 202
    queued_id = queued.json()["id"]
    again = system.submit(name="kw-long", max_steps=4)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_conflict"

    cancelled = system.client.post(f"/train-jobs/{queued_id}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"]

    stopping = system.client.post(f"/train-jobs/{long_id}/cancel").json()
    assert stopping["status"] == "running" and stopping["cancel_requested"]
    job = system.wait(long_id)
    assert job["status"] == "cancelled" and job["error"] is None
    assert 0 < job["progress"]["step"] < 100_000
    assert job["adapter"]["version"] is None

    # The worker is free again, yet the cancelled queued job never started.
    follow_up = system.wait(system.submit(name="kw-after", max_steps=2).json()["id"])
    assert follow_up["status"] == "succeeded"
    never = system.job(queued_id)
    assert never["status"] == "cancelled" and never["started_at"] is None
    assert never["attempts"] == 0
    entries = system.store_entries()
    assert "kw-long" not in entries and "kw-queued" not in entries and "kw-after" in entries
    assert not [e for e in entries if e.startswith((".tmp-", ".trash-"))]

    listed = system.client.get("/train-jobs", params={"status": "cancelled"}).json()["jobs"]
    assert {j["id"] for j in listed} >= {long_id, queued_id}
    assert all(j["status"] == "cancelled" for j in listed)
    finished = system.client.post(f"/train-jobs/{follow_up['id']}/cancel")
    assert finished.status_code == 409 and finished.json()["error"]["code"] == "job_conflict"


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({"adapter_config": "no_such_adapter"}, "validation_error"),
        ({"adapter_config": '{"architecture": "nope"}'}, "validation_error"),
        ({"batch_size": 0}, "validation_error"),
        ({"learning_rate": 3.0}, "validation_error"),
        ({"num_epochs": -1}, "validation_error"),
        ({"unknown_field": 1}, "validation_error"),
        ({"name": "Bad Name!"}, "validation_error"),
        ({"dataset": "missing.jsonl"}, "dataset_not_found"),
        ({"dataset": "../../outside.jsonl"}, "dataset_forbidden"),
        ({"dataset": "/etc/passwd.jsonl"}, "dataset_forbidden"),
        ({"eval_split": "/etc/hosts.csv"}, "dataset_forbidden"),
        ({"base_model": "bert-base-uncased"}, "invalid_training_config"),
        ({"method": "full", "full_output_dir": "/tmp/x"}, "invalid_training_config"),
        ({"text_column": ""}, "validation_error"),
    ],
)
def test_configs_that_cannot_work_are_422(system, config, code):
    before = len(system.client.get("/train-jobs").json()["jobs"])
    response = system.submit(**{"name": "bad", "max_steps": 2, **config})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert len(system.client.get("/train-jobs").json()["jobs"]) == before


def test_symlink_escaping_the_data_root_is_422(system, tmp_path):
    outside = tmp_path / "secret.jsonl"
    outside.write_text('{"text": "a", "label": 0}\n')
    (system.data_dir / "datasets" / "sneaky.jsonl").symlink_to(outside)
    response = system.submit(name="sneaky", dataset="sneaky.jsonl")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "dataset_forbidden"


def test_unknown_job_is_404(system):
    for response in (
        system.client.get("/train-jobs/nope"),
        system.client.post("/train-jobs/nope/cancel"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"
    assert system.client.get("/train-jobs", params={"status": "bogus"}).status_code == 422
