"""The Serve application: an HTTP ingress in front of N model replicas, adapter-affine.

    serve run deploy/ray/serve.yaml           # import_path: app.cluster.ray_serve:build_app

`build_app(args)` takes the `args` of the Serve config (validated by `ClusterConfig`) and binds
two deployments:

- `AdapterReplica` (`app.cluster.replica`): the engine, cache and batcher; one GPU per replica on
  GPU clusters (`gpus_per_replica`, default: 1 when the cluster has GPUs, else 0); replicas are
  a fixed number or autoscaled between bounds; residency follows the replica's byte budgets
  (device and host tiers), unless `max_adapters_per_replica` sets a count cap (then also the
  multiplexing bound).
- `Ingress`: the ordinary HTTP API (`app.api.factory.create_ingress_app`) with a
  `ClusterBatcher` that splits a request by adapter and routes each part by adapter name.

Every process reads the adapter store from `settings.store_dir`, a filesystem shared by all
nodes (a ReadWriteMany volume on Kubernetes); uploads and training stay on the ordinary API
process, which writes the same store.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from app.api.factory import create_ingress_app
from app.cluster.replica import AdapterReplica
from app.cluster.router import ClusterBatcher
from app.config import Settings, StoreView

log = logging.getLogger(__name__)


class Autoscaling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(32, gt=0, description="per replica")


class ClusterConfig(BaseModel):
    """The `args` of deploy/ray/serve.yaml."""

    model_config = ConfigDict(extra="forbid")

    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="app.config.Settings fields for the ingress and every replica "
        "(base_model, store_dir, max_batch_size, ...); APP_* variables apply too",
    )
    num_replicas: int = Field(1, ge=1, description="used when `autoscaling` is not set")
    autoscaling: Autoscaling | None = None
    max_adapters_per_replica: int | None = Field(
        None,
        ge=1,
        description="None: the replica's byte budgets decide (APP_MAX_RESIDENT_BYTES, "
        "APP_HOST_CACHE_BYTES); a number: a count cap, also Ray's multiplexing bound",
    )
    gpus_per_replica: float | None = Field(None, ge=0, description="None: 1 if there are GPUs")
    cpus_per_replica: float = Field(1.0, gt=0)
    ingress_cpus: float = Field(0.5, gt=0)
    ingress_replicas: int = Field(1, ge=1)
    access_log: bool = Field(True, description="Serve's per-call log lines in every replica")
    # High on purpose: Ray's router leaves a replica that holds the adapter for another one
    # when the first looks busy, which loads the adapter twice. The batcher's own queue
    # (APP_MAX_QUEUE, 503 when full) is what bounds the work on a replica.
    max_ongoing_requests: int = Field(1024, ge=1)
    call_timeout_s: float | None = Field(
        None, gt=0, description="ingress -> replica call limit (default: request timeout + 5 s)"
    )


def _cluster_has_gpus() -> bool:
    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def replica_options(config: ClusterConfig) -> dict[str, Any]:
    gpus = config.gpus_per_replica
    if gpus is None:
        gpus = 1 if _cluster_has_gpus() else 0
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": config.cpus_per_replica, "num_gpus": gpus},
        "max_ongoing_requests": config.max_ongoing_requests,
        "logging_config": {"enable_access_log": config.access_log},
    }
    if config.autoscaling is not None:
        options["autoscaling_config"] = config.autoscaling.model_dump()
    else:
        options["num_replicas"] = config.num_replicas
    return options


@serve.ingress()
class ClusterIngress:
    """The ingress deployment's callable: the HTTP app is built after the constructor."""

    async def __init__(self, replicas: Any, settings: dict[str, Any], timeout_s: float) -> None:
        self.settings = Settings(**settings)
        self.store = StoreView.of(self.settings).open()
        self.batcher = ClusterBatcher(replicas, timeout_s=timeout_s, store=self.store)
        info = await self.batcher.connect()
        log.info("ingress: replicas serve %s on %s", info.base_ref.id, info.device)

    def __serve_build_asgi_app__(self) -> Any:
        return create_ingress_app(
            self.settings,
            batcher=self.batcher,
            cache=self.batcher.view,
            engine=self.batcher.info,
            store=self.store,
        )


def build_app(args: dict[str, Any]) -> serve.Application:
    """The Serve application for `args` (see `ClusterConfig`)."""
    config = ClusterConfig(**args)
    settings = Settings(**config.settings)  # fail here, not in every replica
    timeout_s = config.call_timeout_s or settings.request_timeout_s + 5
    replica = serve.deployment(AdapterReplica, name="AdapterReplica", **replica_options(config))
    ingress = serve.deployment(
        ClusterIngress,
        name="Ingress",
        num_replicas=config.ingress_replicas,
        ray_actor_options={"num_cpus": config.ingress_cpus},
        max_ongoing_requests=config.max_ongoing_requests,
        logging_config={"enable_access_log": config.access_log},
    )
    return ingress.bind(
        replica.bind(config.settings, config.max_adapters_per_replica),
        config.settings,
        timeout_s,
    )
