"""Settings: the only place that reads the environment (prefix APP_).

`Settings` is flat (every `APP_*` name is a field); the rooms read frozen views of it
(app/config/views.py, re-exported here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.config.views import (
    BackendView,
    BatchingView,
    EngineView,
    LimiterView,
    ObservabilityView,
    StoreView,
    WorkerView,
)
from app.security import KeyRing

__all__ = [
    "BackendView",
    "BatchingView",
    "EngineView",
    "LimiterView",
    "ObservabilityView",
    "Settings",
    "StoreView",
    "WorkerView",
]


def default_api_workers(cores: int) -> int:
    """One process on a small box (the engine needs a core of its own), else half the cores,
    at most 4."""
    return 1 if cores <= 2 else min(4, cores // 2)


def engine_threads(cores: int, api_workers: int) -> int:
    """Torch's intra-op threads in the engine process when APP_TORCH_THREADS is unset: the
    cores the API processes leave (torch's default takes them all, and its idle threads
    spin on the cores the API processes need)."""
    return max(1, cores - api_workers)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_", extra="ignore")

    # model
    base_model: str = Field("roberta-base", description="hub id or local directory")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_length: int = Field(512, ge=8, le=8192, description="token cap per text")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="intra-op threads for the model (default: torch's choice; the engine "
        "process of --api-workers N > 1: the cores less N)",
    )
    onepass: bool = Field(
        True, description="one body pass for any mix of covered adapters (false: BatchSplit)"
    )

    # storage
    data_dir: Path = Path("./data")
    store_dir: Path | None = None  # default: data_dir / "adapters"
    keep_versions: int = Field(
        3, ge=1, description="versions kept per adapter (plus those an alias or split uses)"
    )

    # http
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="API processes before one engine process (app/procs); 1: one process as "
        "before; default 1 on <= 2 cores, else min(4, cores // 2)",
    )
    access_log: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # observability (app/observability; docs/operations.md)
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per log line (request id, key id, timings)"
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector base URL (http://host:4318): export traces; needs the "
        "[otel] extra",
    )
    metrics_top_adapters: int = Field(
        20, ge=0, le=1000, description="adapters with their own metrics label (the rest: other)"
    )

    # batching
    max_batch_size: int = Field(64, ge=1, le=1024)
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    max_batch_tokens: int = Field(16384, ge=64)
    split_overhead_tokens: int | None = Field(
        None,
        ge=0,
        description="cost of one extra forward pass in padded tokens; a batch is split by text "
        "length when that saves more padding (default: 32 on CPU, 4096 on CUDA)",
    )
    max_queue: int = Field(2048, ge=1, description="pending texts before 503")
    request_timeout_s: float = Field(30.0, gt=0)
    max_inputs_per_request: int = Field(256, ge=1)
    max_text_chars: int = Field(100_000, ge=1, description="characters per text (422 above)")
    max_request_chars: int = Field(
        1_000_000, ge=1, description="characters in all texts of one request (422 above)"
    )

    # adapter cache: two tiers under byte budgets (parameter bytes, not file sizes)
    max_resident_adapters: int = Field(
        100_000, ge=1, description="cap on adapters on the device (the byte budget rules first)"
    )
    max_resident_bytes: int | None = Field(
        None,
        ge=1,
        description="device tier: adapter parameter bytes on the model's device (default: a "
        "quarter of the free accelerator memory after the model loaded; 2 GiB on CPU)",
    )
    host_cache_bytes: int = Field(
        2 * 1024**3, ge=0, description="host tier: decoded adapters kept in RAM off the device"
    )
    slots_per_key: int | None = Field(
        None,
        ge=1,
        description="pre-built adapter slots per adapter shape (default: max_batch_size, the "
        "most distinct adapters one pass can hold)",
    )

    # request bodies (413 above; checked on Content-Length before a byte is read)
    max_upload_bytes: int = Field(64 * 1024**2, ge=1024)
    max_adapter_param_bytes: int = Field(
        128 * 1024**2,
        ge=1024,
        description="an uploaded or imported adapter's parameters (float32 bytes, computed on a "
        "weightless copy of the base before anything is allocated); 422 above",
    )
    max_request_bytes: int = Field(
        32 * 1024**2,
        ge=1024,
        description="JSON and inference bodies (/classify, /models, /v2 infer); uploads have "
        "max_upload_bytes, every other route 1 MiB",
    )

    # jobs / worker
    redis_url: str | None = None
    embedded_worker: bool = True
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="allowed dataset roots"
    )
    allow_hub_datasets: bool = True
    job_lease_s: float = Field(
        30.0, ge=1.0, le=3600, description="a running job whose worker is silent this long fails"
    )
    worker_shutdown_s: float = Field(
        60.0, gt=0, description="graceful worker stop: wait this long for the job to re-queue"
    )

    # security
    api_keys: SecretStr | None = Field(
        None, description="comma list of KEY:scope[+scope] (scopes: classify, download, admin)"
    )
    api_keys_file: Path | None = Field(None, description="lines of 'KEY scope[+scope]'")
    generate_api_key: bool = Field(
        False,
        description="no key configured and api_keys_file missing: write a new key with every "
        "scope there at start-up and print it once",
    )
    allow_anonymous: bool = Field(
        False, description="serve without keys on a non-loopback address (refused otherwise)"
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header values a keyless server answers besides loopback ones (* = any)",
    )

    # per-key quotas (app/api/edge.py): defaults for keys without rps=/tps=/inflight= options
    default_key_rps: float | None = Field(None, gt=0, description="requests/s (unset: no limit)")
    default_key_tps: float | None = Field(
        None, gt=0, description="texts/s, a text counting once per adapter (unset: no limit)"
    )
    default_key_inflight: int | None = Field(None, ge=1, description="texts in flight (no limit)")
    key_queue_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="the part of max_queue one API key may hold in the server (429 above), so "
        "a flooding key meets its own limit before the queue is full for everyone",
    )
    quota_refusal_delay_s: float = Field(
        0.5,
        ge=0,
        le=10,
        description="a 429 is answered after this long (at most its Retry-After), so clients "
        "that retry at once cannot turn refusals into a CPU flood",
    )

    # pass planning (sized to this device)
    pass_cost_calibration: bool = Field(
        True, description="time forward shapes at start-up and plan passes from the fit"
    )
    pass_cost_budget_s: float = Field(1.5, gt=0, le=60, description="time spent calibrating")
    pass_cost_learning: bool = Field(
        True, description="re-fit the pass cost model from the live forward passes' timings"
    )
    fair_slice_slowdown: float = Field(
        1.25,
        ge=1.0,
        le=100.0,
        description="while API keys contend, passes are time-sliced "
        "down to no fewer texts than keep a flood's predicted time per text within this factor "
        "of a full pass's (1: no slicing)",
    )
    fair_preempt: bool = Field(
        True,
        description="while a pass runs, a light API key's request may run as a pass of its "
        "own between two of its encoder layers (one-pass adapters on the device)",
    )

    @field_validator("data_roots", "allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:  # a malformed key is a settings error, found at start-up
            KeyRing.from_sources(keys=value.get_secret_value(), keys_file=None)
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if self.store_dir is None:
            self.store_dir = self.data_dir / "adapters"
        if self.api_workers is None:
            self.api_workers = default_api_workers(len(os.sched_getaffinity(0)))
        if self.api_keys_file is not None:
            self.keyring()  # unreadable or malformed: a settings error, found at start-up
        return self

    @property
    def adapters_dir(self) -> Path:
        assert self.store_dir is not None
        return self.store_dir

    def keyring(self) -> KeyRing:
        """The API keys (empty = auth disabled). Raises ValueError for a malformed entry."""
        keys = self.api_keys.get_secret_value() if self.api_keys else None
        path = self.api_keys_file
        if path is not None and self.generate_api_key and not path.exists():
            path = None  # written at start-up (app.__main__)
        try:
            return KeyRing.from_sources(keys=keys, keys_file=path)
        except OSError as exc:
            raise ValueError(f"APP_API_KEYS_FILE: cannot read the API keys file: {exc}") from None
