"""The Serve config file and the options it maps to (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.serve")

from app.cluster.ray_serve import ClusterConfig, replica_options
from app.config import Settings

pytestmark = pytest.mark.ray
SERVE_YAML = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve.yaml"


def test_the_shipped_serve_config_is_valid() -> None:
    config = yaml.safe_load(SERVE_YAML.read_text())
    (application,) = config["applications"]
    assert application["import_path"] == "app.cluster.ray_serve:build_app"
    args = ClusterConfig(**application["args"])
    settings = Settings(**args.settings)
    assert settings.adapters_dir == Path(args.settings["store_dir"])
    assert config["http_options"]["host"] == "127.0.0.1"


def test_replica_options_fixed_or_autoscaled() -> None:
    fixed = replica_options(
        ClusterConfig(num_replicas=3, gpus_per_replica=1, max_adapters_per_replica=16)
    )
    assert fixed["num_replicas"] == 3
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}
    scaled = replica_options(
        ClusterConfig(autoscaling={"min_replicas": 1, "max_replicas": 4}, gpus_per_replica=0)
    )
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"]["max_replicas"] == 4


def test_unknown_config_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="replicaz"):
        ClusterConfig(replicaz=2)
