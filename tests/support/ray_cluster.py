"""A real two-node Ray cluster on this machine, with the Serve application on top, for tests.

    with serve_cluster(store_dir=..., base_model=..., replicas=2, max_adapters=4) as c:
        httpx.post(c.url + "/classify", json=...)
        c.replica_stats()            # {replica id: stats} read from every replica

Two nodes (`ray.cluster_utils.Cluster`), both pinned to 127.0.0.1, no dashboard; the Serve
proxy listens on 127.0.0.1 only. Everything is shut down on the way out, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.server import OFFLINE_ENV, REPO, free_port

LOOPBACK = "127.0.0.1"
APP_NAME = "adapter-serve"
LOCAL_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's switch for "this host only"
# What deploy/ray/serve.yaml sets: the router keeps trying the replicas that hold the adapter
# this long (Ray's default: 1-2 s) before it sends the request to another replica.
AFFINITY_ENV = {"RAY_SERVE_MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S": "30"}


@dataclass
class ServeCluster:
    url: str
    cluster: Any
    replicas: Any  # DeploymentHandle to the AdapterReplica deployment
    num_replicas: int

    def replica_stats(self, *, timeout_s: float = 60.0) -> dict[str, dict]:
        """Stats from each live replica (calls without an adapter land on random replicas)."""
        seen: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        while len(seen) < self.num_replicas:
            if time.monotonic() > deadline:
                raise TimeoutError(f"heard from {sorted(seen)} of {self.num_replicas} replicas")
            stats = self.replicas.stats.remote().result(timeout_s=timeout_s)
            seen[stats["replica"]] = stats
        return seen

    def replica_actor_names(self) -> list[str]:
        import ray

        return [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and "AdapterReplica" in a["name"]
        ]


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """Ray's processes inherit the test's environment: the repo on PYTHONPATH, offline hub."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def serve_cluster(
    *,
    store_dir: Path,
    base_model: Path,
    replicas: int = 2,
    max_adapters: int = 4,
    settings: dict[str, Any] | None = None,
    access_log: bool = True,
) -> Iterator[ServeCluster]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from app.cluster.ray_serve import build_app

    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {
        **OFFLINE_ENV,
        "PYTHONPATH": path,
        "RAY_USAGE_STATS_ENABLED": "0",
        **LOCAL_ONLY,
        **AFFINITY_ENV,
    }
    # ray.init() turns "127.0.0.1:port" into the machine's own address unless Ray believes
    # it runs single-host (the constant is read at call time): keep the driver on loopback.
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    node = {"num_cpus": 2, "node_ip_address": LOOPBACK, "include_dashboard": False}
    with _environment(env):
        cluster = Cluster(initialize_head=True, head_node_args=node)
        try:
            cluster.add_node(num_cpus=2, node_ip_address=LOOPBACK)
            ray.init(address=cluster.address, _node_ip_address=LOOPBACK)
            port = free_port()
            serve.start(http_options={"host": LOOPBACK, "port": port}, proxy_location="HeadOnly")
            args = {
                "settings": {
                    "base_model": str(base_model),
                    "store_dir": str(store_dir),
                    "device": "cpu",
                    "torch_threads": 1,
                    "max_wait_ms": 2,
                    **(settings or {}),
                },
                "num_replicas": replicas,
                "max_adapters_per_replica": max_adapters,
                "cpus_per_replica": 0.5,
                "ingress_cpus": 0.25,
                "access_log": access_log,
            }
            serve.run(build_app(args), name=APP_NAME, route_prefix="/")
            handle = serve.get_deployment_handle("AdapterReplica", app_name=APP_NAME)
            yield ServeCluster(f"http://{LOOPBACK}:{port}", cluster, handle, replicas)
        finally:
            with contextlib.suppress(Exception):
                serve.shutdown()
            with contextlib.suppress(Exception):
                ray.shutdown()
            cluster.shutdown()
