"""Uploads of adapters with multi-label and regression heads are recognised (the task read from
head_config.json); a head type serving cannot run is a 422 naming the supported ones."""

from __future__ import annotations

import io
import zipfile

from adapters_store import AdapterStore
from tests.support.task_adapters import save_task_adapter


def _zip(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, arcname=path.name)
    return buffer.getvalue()


def _upload(client, name: str, data: bytes):
    return client.post("/adapters", files={"file": ("a.zip", data, "application/zip")},
                       data={"name": name})  # fmt: skip


def test_task_heads_upload_and_unsupported_heads_are_422(serve, factory, tmp_path):
    labels = {0: "anger", 1: "joy", 2: "fear"}
    emo = save_task_adapter(factory, "emo", tmp_path / "emo", task="multi_label",
                            labels=labels, seed=4)  # fmt: skip
    sim = save_task_adapter(factory, "sim", tmp_path / "sim", task="regression",
                            labels={0: "similarity"}, seed=5)  # fmt: skip
    tag = save_task_adapter(factory, "tag", tmp_path / "tag", task="tagging",
                            labels={0: "O", 1: "B"}, seed=6)  # fmt: skip
    with serve() as client:
        assert _upload(client, "emo", _zip(emo)).status_code == 201
        assert _upload(client, "sim", _zip(sim)).status_code == 201
        refused = _upload(client, "tag", _zip(tag))
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["code"] == "invalid_adapter"
        assert "'tagging'" in error["message"]
        assert (
            "supported head types: classification, multilabel_classification" in (error["message"])
        )
        store = AdapterStore(client.app.state.store.root)
        listed = {a["name"]: a for a in client.get("/adapters").json()["adapters"]}
        shown = client.get("/adapters/emo").json()
    # The listing and the adapter's own page say each adapter's task.
    assert listed["emo"]["task"] == shown["task"] == "multi_label"
    assert listed["emo"]["thresholds"] == shown["thresholds"] == {"0": 0.5, "1": 0.5, "2": 0.5}
    assert listed["sim"]["task"] == "regression" and listed["sim"]["thresholds"] is None
    emo_manifest, sim_manifest = store.get("emo").manifest, store.get("sim").manifest
    assert emo_manifest.task == "multi_label" and emo_manifest.labels == labels
    assert emo_manifest.thresholds == {0: 0.5, 1: 0.5, 2: 0.5}
    assert sim_manifest.task == "regression" and sim_manifest.labels == {0: "similarity"}
    assert not store.exists("tag")
