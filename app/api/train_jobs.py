"""/train-jobs: submit a training job (202 + id), list, get, cancel; /datasets: the files a job
can train on (app.jobs.datasets), with columns and a few sample rows (admin scope).

The request body is the training module's `TrainConfig`; the base model is always the
server's own. The work happens in a worker process (app.worker); these routes only validate,
record and read job records. A key with adapter patterns (app.api.deps) trains only adapters
they cover, and sees only the jobs of those (any other job answers 404 like a missing one).

The server's paths go only to a key for every adapter (no `adapters=`) and to keyless servers;
a key limited to some adapters sees no `roots`, only the first root's files by their paths
relative to it (what a training job takes), and names a file only by such a path (issue 26).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from app.api.deps import (
    AdminAccess,
    SettingsDep,
    check_adapter,
    check_job,
    job_scan,
    patterns,
    visible_jobs,
)
from app.api.errors import NotReady, error_responses
from app.jobs import datasets
from app.jobs.records import Job, JobStatus
from app.jobs.service import JobService, data_roots
from training.config import TrainConfig

router = APIRouter(prefix="/train-jobs", tags=["training jobs"])
datasets_router = APIRouter(prefix="/datasets", tags=["datasets"])


async def get_job_service(request: Request) -> JobService:
    service = getattr(request.app.state, "job_service", None)
    if service is None:
        raise NotReady("the job service is starting or stopping; retry shortly")
    return service


JobServiceDep = Annotated[JobService, Depends(get_job_service)]
SUBMIT_EXAMPLES = {  # training settings left out: the default recipe (training.recipes) decides
    "local": {
        "summary": "A JSONL file in the data directory's datasets/ folder",
        "value": {
            "name": "reviews",
            "dataset": "reviews.jsonl",
            "eval_split": None,
            "label_names": ["negative", "positive"],
        },
    },
    "hub": {
        "summary": "A Hugging Face hub dataset (when APP_ALLOW_HUB_DATASETS is true)",
        "value": {
            "name": "imdb",
            "dataset": "stanfordnlp/imdb",
            "max_train_samples": 2000,
            "label_names": ["negative", "positive"],
        },
    },
    "multi_label": {
        "summary": "Multi-label: a label column of lists (task inferred; thresholds tuned)",
        "value": {
            "name": "emotions",
            "dataset": "goemotions",
            "eval_split": "validation",
            "label_column": "labels",
        },
    },
    "pairs_regression": {
        "summary": "Sentence pairs with a similarity score (regression)",
        "value": {
            "name": "similarity",
            "dataset": "stsb/train.jsonl",
            "eval_split": None,
            "text_pair_column": "text_pair",
            "label_column": "score",
            "task": "regression",
        },
    },
}


class TrainJobCreated(BaseModel):
    id: str
    status: JobStatus


class JobProgress(BaseModel):
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = Field(None, description="latest training loss")
    eval: dict[str, Any] | None = Field(None, description="latest evaluation metrics")
    phase: str | None = Field(None, description="train, eval or save")


class TrainPoint(BaseModel):
    step: int
    epoch: float | None = None
    loss: float | None = Field(None, description="training loss at this logged step")
    learning_rate: float | None = None


class EvalPoint(BaseModel):
    step: int
    epoch: float | None = None
    loss: float | None = Field(None, description="eval loss")
    accuracy: float | None = Field(None, description="single-label; multi-label: exact match")
    f1_macro: float | None = Field(None, description="single- and multi-label")
    f1: float | None = Field(None, description="two labels: F1 of label 1")
    f1_micro: float | None = Field(None, description="multi-label")
    pearson: float | None = Field(None, description="regression")
    spearman: float | None = Field(None, description="regression")


class Curves(BaseModel):
    """Learning curves: draw `train` (loss per logged step) and `eval` (per evaluation)."""

    metric: str = Field(
        "accuracy",
        description="the eval metric that picks the best step: accuracy (single-label), "
        "f1_macro (multi-label, at per-label thresholds tuned on the eval split), pearson "
        "(regression)",
    )
    best_step: int | None = Field(None, description="the stored weights' step, once finished")
    stopped_early: bool = False
    train: list[TrainPoint] = Field(default_factory=list)
    eval: list[EvalPoint] = Field(default_factory=list)


class TrainJobAdapter(BaseModel):
    name: str
    version: int | None = Field(None, description="the stored version, once succeeded")


class TrainJob(BaseModel):
    id: str
    status: JobStatus
    adapter: TrainJobAdapter
    progress: JobProgress
    curves: Curves = Field(description="learning curves so far (final once succeeded)")
    metrics: dict[str, Any] = Field(description="final metrics, once succeeded")
    error: str | None = None
    cancel_requested: bool
    attempts: int = Field(description="times a worker started it")
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None
    config: dict[str, Any] = Field(description="the training config as the worker runs it")


class TrainJobList(BaseModel):
    jobs: list[TrainJob]


def render(job: Job) -> TrainJob:
    return TrainJob(
        id=job.id,
        status=job.status,
        adapter=TrainJobAdapter(name=job.adapter_name, version=job.adapter_version),
        progress=JobProgress.model_validate(job.progress),
        curves=Curves.model_validate(job.progress.get("curves") or {}),
        metrics=job.metrics,
        error=job.error,
        cancel_requested=job.cancel_requested,
        attempts=job.attempts,
        created_at=_time(job.created_at),
        started_at=_time(job.started_at),
        finished_at=_time(job.finished_at),
        heartbeat_at=_time(job.heartbeat_at),
        config=job.config,
    )


def _time(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, tz=dt.UTC)


@router.post(
    "",
    status_code=202,
    response_model=TrainJobCreated,
    responses=error_responses(409, 422, 503),
    summary="Queue a training job for a new adapter",
)
def submit_job(
    request: Request,
    body: Annotated[TrainConfig, Body(openapi_examples=SUBMIT_EXAMPLES)],
    service: JobServiceDep,
    response: Response,
    _: AdminAccess,
) -> TrainJobCreated:
    check_adapter(request, body.name)
    job = service.submit(config=body)
    response.headers["Location"] = f"/train-jobs/{job.id}"
    return TrainJobCreated(id=job.id, status=job.status)


@router.get("", response_model=TrainJobList, summary="List training jobs, newest first")
def list_jobs(
    request: Request,
    service: JobServiceDep,
    _: AdminAccess,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TrainJobList:
    jobs = service.list(status=status, limit=job_scan(request, limit))
    return TrainJobList(jobs=[render(j) for j in visible_jobs(request, jobs, limit)])


class Recipes(BaseModel):
    recipes: dict[str, dict[str, dict[str, Any]]] = Field(
        description="recipe -> method (an adapter config name, or `full`) -> the value of each "
        "field the recipe sets when a job leaves it empty (null: decided per run from the data)"
    )


@router.get("/recipes", response_model=Recipes, summary="What each training recipe sets")
def get_recipes(_: AdminAccess) -> Recipes:
    from training.config import NAMED_ADAPTER_CONFIGS
    from training.recipes import RECIPE_NAMES, recipe_values

    def values(recipe: str, method: str) -> dict[str, Any]:
        if method == "full":
            return recipe_values(recipe, method="full", adapter_config=None)
        return recipe_values(recipe, method="adapter", adapter_config=method)

    methods = [*NAMED_ADAPTER_CONFIGS, "full"]
    return Recipes(recipes={r: {m: values(r, m) for m in methods} for r in RECIPE_NAMES})


@router.get(
    "/{job_id}",
    response_model=TrainJob,
    responses=error_responses(404),
    summary="One job: status, progress, metrics, error",
)
def get_job(request: Request, job_id: str, service: JobServiceDep, _: AdminAccess) -> TrainJob:
    return render(check_job(request, service.get(job_id)))


@router.post(
    "/{job_id}/cancel",
    response_model=TrainJob,
    responses=error_responses(404, 409),
    summary="Cancel: a queued job never starts, a running one stops at its next step",
)
def cancel_job(request: Request, job_id: str, service: JobServiceDep, _: AdminAccess) -> TrainJob:
    check_job(request, service.get(job_id))
    return render(service.cancel(job_id))


def shows_roots(request: Request) -> bool:
    """Whether the key may see the server's paths: one for every adapter, or no keys at all."""
    return patterns(request) is None


Rows = Annotated[int, Query(ge=0, le=50, description="sample rows per file")]


@datasets_router.get(
    "", response_model=datasets.DatasetList, summary="Dataset files under the data roots"
)
async def get_datasets(
    request: Request, settings: SettingsDep, _access: AdminAccess, rows: Rows = 5
) -> datasets.DatasetList:
    roots = data_roots(settings)
    if shows_roots(request):
        return await asyncio.to_thread(datasets.list_datasets, roots, rows=rows)
    return datasets.hide_roots(
        await asyncio.to_thread(datasets.list_datasets, roots[:1], rows=rows)
    )


@datasets_router.get(
    "/file",
    response_model=datasets.DatasetFile,
    responses=error_responses(422),
    summary="One dataset file (relative to the first data root, or absolute inside a root)",
)
async def get_dataset(
    request: Request, settings: SettingsDep, _access: AdminAccess, path: str, rows: Rows = 20
) -> datasets.DatasetFile:
    roots, full = data_roots(settings), shows_roots(request)
    found = await asyncio.to_thread(
        datasets.one_dataset, roots if full else roots[:1], path, rows=rows, relative_only=not full
    )
    return found if full else datasets.relative(found)
