"""The KubeRay example (deploy/ray/rayservice.yaml), read as Kubernetes would: every pod has
the API keys, and the Ray dashboard (whose job API runs arbitrary code) is not open."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import yaml

RAYSERVICE = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "rayservice.yaml"
SERVE_PORT, DASHBOARD_PORT = 8000, 8265


def _documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(RAYSERVICE.read_text()) if doc}


def _pod_templates() -> list[dict]:
    cluster = _documents()["RayService"]["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"] for group in groups]


def _keys_file() -> str:
    serve = yaml.safe_load(_documents()["RayService"]["spec"]["serveConfigV2"])
    (application,) = serve["applications"]
    return application["args"]["settings"]["api_keys_file"]


def test_every_pod_mounts_the_keys_file_the_ingress_reads():
    keys_dir = str(PurePosixPath(_keys_file()).parent)
    templates = _pod_templates()
    assert len(templates) >= 2  # the head and the GPU workers: the ingress may run on either
    for template in templates:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for container in template["spec"]["containers"]:
            mounts = [m for m in container["volumeMounts"] if m["mountPath"] == keys_dir]
            assert len(mounts) == 1, container["name"]
            volume = volumes[mounts[0]["name"]]
            assert volume["secret"]["secretName"]
            assert "optional" not in volume["secret"]  # a missing Secret keeps the pod down
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("APP_API_KEYS_FILE") == _keys_file()


def _rules() -> list[dict]:
    policy = _documents()["NetworkPolicy"]
    labels = policy["spec"]["podSelector"]["matchLabels"]
    for template in _pod_templates():  # the policy selects every Ray pod
        assert labels.items() <= template["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    return policy["spec"]["ingress"]


def test_only_the_serve_port_is_open_beyond_the_cluster_and_the_operator():
    for rule in _rules():
        ports = {p["port"] for p in rule.get("ports", [])}
        sources = rule.get("from", [])
        if not sources:  # from anywhere: the Serve port only
            assert ports == {SERVE_PORT}
        elif DASHBOARD_PORT in ports or not ports:
            for source in sources:  # Ray's own pods, or the operator
                selected = source["podSelector"]["matchLabels"]
                assert selected.get("app.kubernetes.io/name") in (
                    "adapter-serve-ray",
                    "kuberay-operator",
                )


def test_the_dashboard_is_not_published():
    for doc in yaml.safe_load_all(RAYSERVICE.read_text()):
        if doc and doc["kind"] in ("Service", "Ingress"):
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']} publishes a port")
    cluster = _documents()["RayService"]["spec"]["rayClusterConfig"]
    assert "headServiceAnnotations" not in cluster
    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
