"""Job submission checks (data roots, symlinks, hub, base model, name conflicts) and the
worker's heartbeat and progress pieces, against real job records, queue and store: SQLite, and
Redis (records and queue) on a real redis-server."""

from __future__ import annotations

import time

import pytest

from adapters_store import AdapterStore
from app.config import Settings
from app.jobs.records import InvalidJob, JobConflict, JobStatus
from app.jobs.runner import Heartbeat, ProgressWriter
from app.jobs.service import JobService
from tests.support.adapters import AdapterFactory
from tests.support.jobs import BACKENDS, redis_or_skip, store_spec
from tests.support.tiny import keyword_dataset, write_jsonl
from training.config import TrainConfig


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_or_skip(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def settings(request, tmp_path, tiny_model_dir) -> Settings:
    spec = store_spec(request, tmp_path)
    redis_url = spec.location if spec.backend == "redis" else None
    return Settings(data_dir=tmp_path / "data", base_model=str(tiny_model_dir), redis_url=redis_url)


@pytest.fixture
def service(settings) -> JobService:
    svc = JobService.from_settings(settings)
    write_jsonl(settings.data_dir / "datasets" / "kw.jsonl", keyword_dataset(40))
    yield svc
    svc.close()


def _config(**fields) -> TrainConfig:
    return TrainConfig.model_validate({"name": "kw", "dataset": "kw.jsonl", **fields})


def test_relative_dataset_resolves_inside_the_default_root_and_is_queued(service, settings):
    job = service.submit(config=_config(eval_split=None))
    assert job.status == JobStatus.QUEUED
    want = (settings.data_dir / "datasets" / "kw.jsonl").resolve()
    assert job.config["dataset"] == str(want)
    assert job.config["base_model"] == settings.base_model
    assert job.config["eval_split"] is None  # kept explicit: the worker must not default it
    assert service.queue.pending() == 1


@pytest.mark.parametrize(
    ("dataset", "code"),
    [
        ("missing.jsonl", "dataset_not_found"),
        ("../outside.jsonl", "dataset_forbidden"),
        ("/etc/passwd.csv", "dataset_forbidden"),
    ],
)
def test_bad_local_datasets(service, settings, dataset, code):
    write_jsonl(settings.data_dir / "outside.jsonl", keyword_dataset(5))
    with pytest.raises(InvalidJob) as info:
        service.submit(config=_config(dataset=dataset))
    assert info.value.code == code
    assert str(settings.data_dir) not in info.value.message  # the server's paths go unnamed
    assert service.jobs.list() == [] and service.queue.pending() == 0


@pytest.mark.parametrize(
    "dataset", ["a\x00b.jsonl", "x" * 5000 + ".jsonl", "x" * 5000, "/" + "y/" * 3000 + "a.csv"]
)
def test_unusable_paths_are_invalid_not_crashes(service, dataset):
    with pytest.raises(InvalidJob):
        service.check(config=_config(dataset=dataset))
    with pytest.raises(InvalidJob):
        service.check(config=_config(eval_split=dataset if "." in dataset[-5:] else "e.csv\x00"))


def test_symlink_out_of_the_root_is_refused(service, settings, tmp_path):
    secret = write_jsonl(tmp_path / "secret.jsonl", keyword_dataset(5))
    (settings.data_dir / "datasets" / "link.jsonl").symlink_to(secret)
    with pytest.raises(InvalidJob, match="outside the allowed data roots"):
        service.submit(config=_config(dataset="link.jsonl"))


def test_eval_file_is_confined_too(service, tmp_path):
    outside = write_jsonl(tmp_path / "eval.jsonl", keyword_dataset(5))
    with pytest.raises(InvalidJob, match="outside"):
        service.submit(config=_config(eval_split=str(outside)))


def test_configured_roots_replace_the_default(tmp_path, tiny_model_dir):
    root = tmp_path / "corpora"
    data = write_jsonl(root / "a.jsonl", keyword_dataset(20))
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_dir), data_roots=[root])
    service = JobService.from_settings(settings)
    job = service.submit(config=_config(dataset=str(data), eval_split=None))
    assert job.config["dataset"] == str(data.resolve())
    write_jsonl(tmp_path / "d" / "datasets" / "b.jsonl", keyword_dataset(5))
    with pytest.raises(InvalidJob, match="outside"):
        service.submit(config=_config(name="b", dataset=str(tmp_path / "d/datasets/b.jsonl")))
    service.close()


def test_hub_ids_only_when_allowed(tmp_path, tiny_model_dir):
    base = {"data_dir": tmp_path, "base_model": str(tiny_model_dir)}
    allowed = JobService.from_settings(Settings(**base, allow_hub_datasets=True))
    hub_id = "stanfordnlp/imdb"
    assert allowed.check(config=_config(dataset=hub_id)).dataset == hub_id
    closed = JobService.from_settings(Settings(**base, allow_hub_datasets=False))
    with pytest.raises(InvalidJob, match="hub datasets are disabled") as info:
        closed.check(config=_config(dataset=hub_id))
    assert info.value.code == "dataset_forbidden"
    assert str(tmp_path) not in info.value.message


@pytest.mark.parametrize(
    "dataset",
    ["text", "csv", "json", "parquet", "JSON", "imagefolder", "imdb", "a/b/c", "owner/..",
     "owner/na--me", "-x/y", "owner/name with space", "keys.txt"],
)  # fmt: skip
def test_builtin_loaders_and_non_hub_names_are_refused(tmp_path, tiny_model_dir, dataset):
    """`text` (and the other builtin loaders) would read files of the worker's directory:
    only files under the roots, or hub ids `owner/name`, are datasets."""
    settings = Settings(data_dir=tmp_path, base_model=str(tiny_model_dir), allow_hub_datasets=True)
    service = JobService.from_settings(settings)
    with pytest.raises(InvalidJob) as info:
        service.check(config=_config(dataset=dataset, eval_split=None))
    assert info.value.code == "dataset_forbidden"
    service.close()


def test_split_file_linked_out_of_the_root_is_refused(tmp_path, tiny_model_dir):
    secret = tmp_path / "secret.csv"
    secret.write_text("KEY admin\nanother line\n")
    folder = tmp_path / "d" / "datasets" / "corpus"
    folder.mkdir(parents=True)
    (folder / "train.csv").symlink_to(secret)
    service = JobService.from_settings(
        Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_dir))
    )
    with pytest.raises(InvalidJob, match="outside") as info:
        service.check(config=_config(dataset=str(folder), eval_split=None))
    assert info.value.code == "dataset_forbidden" and "KEY" not in info.value.message
    service.close()


def test_base_model_is_the_servers(service, settings):
    with pytest.raises(InvalidJob, match="this server's base model"):
        service.check(config=_config(base_model="bert-base-uncased"))
    same = service.check(config=_config(base_model=settings.base_model, eval_split=None))
    assert same.base_model == settings.base_model


def test_full_fine_tuning_is_not_a_job(service, tmp_path):
    with pytest.raises(InvalidJob, match="adapters only"):
        service.check(config=_config(method="full", full_output_dir=str(tmp_path / "out")))


def test_name_conflicts(service, settings, tiny_model_dir):
    first = service.submit(config=_config(eval_split=None))
    with pytest.raises(JobConflict, match="already training"):
        service.submit(config=_config(eval_split=None, overwrite=True))
    service.cancel(first.id)
    AdapterFactory(tiny_model_dir).add_to_store(AdapterStore(settings.adapters_dir), "kw", seed=1)
    with pytest.raises(JobConflict, match="already exists") as info:
        service.submit(config=_config(eval_split=None))
    assert info.value.code == "adapter_exists"
    assert service.submit(config=_config(eval_split=None, overwrite=True)).status == "queued"


def test_heartbeat_renews_and_notices_a_lost_lease(service):
    jobs = service.jobs
    job_id = jobs.create(adapter_name="a", config={}).id
    jobs.claim(job_id, worker="w", lease_s=1.0)
    with Heartbeat(jobs, job_id, worker="w", lease_s=1.0) as beat:
        time.sleep(1.5)
        assert jobs.expire_leases() == 0  # renewed every 0.25 s
        assert not beat.lost.is_set()
        jobs.expire_leases(now=time.time() + 5)  # as if the worker had stalled
        assert beat.lost.wait(2.0)


def test_progress_writer_keeps_training_loss_and_throttles(service):
    jobs = service.jobs
    job_id = jobs.create(adapter_name="a", config={}).id
    jobs.claim(job_id, worker="w", lease_s=30)
    writer = ProgressWriter(jobs, job_id, worker="w")
    event = {"step": 1, "total_steps": 10, "epoch": 0.1, "loss": 0.7, "eval": None}
    writer({**event, "phase": "train"})
    writer({**event, "step": 2, "phase": "train"})  # within the interval: not written yet
    assert jobs.get(job_id).progress["step"] == 1
    writer({**event, "step": 3, "loss": 0.4, "eval": {"eval_accuracy": 0.9}, "phase": "eval"})
    progress = jobs.get(job_id).progress
    assert progress["step"] == 3 and progress["loss"] == 0.7  # eval loss is not training loss
    assert progress["eval"] == {"eval_accuracy": 0.9} and progress["phase"] == "eval"


def test_progress_writer_records_the_curve_points_and_the_api_renders_them(service):
    from app.api.train_jobs import render

    jobs = service.jobs
    job_id = jobs.create(adapter_name="a", config={}).id
    jobs.claim(job_id, worker="w", lease_s=30)
    writer = ProgressWriter(jobs, job_id, worker="w")
    base = {"total_steps": 20, "eval": None}
    for step in (5, 10):
        writer({**base, "step": step, "epoch": step / 20, "loss": 1 / step,
                "learning_rate": 1e-3, "phase": "train"})  # fmt: skip
    metrics = {"eval_loss": 0.5, "eval_accuracy": 0.75, "eval_f1_macro": 0.74}
    writer({**base, "step": 10, "epoch": 0.5, "loss": 0.5, "eval": metrics, "phase": "eval"})
    curves = render(jobs.get(job_id)).curves  # eval events are written at once
    assert [(p.step, p.loss) for p in curves.train] == [(5, 0.2), (10, 0.1)]
    assert [(p.step, p.accuracy, p.f1_macro, p.loss) for p in curves.eval] == [
        (10, 0.75, 0.74, 0.5)
    ]
    assert curves.best_step is None and curves.metric == "accuracy"
