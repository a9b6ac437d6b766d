"""/adapters through the real app: list, upload, replace, download, delete, load, unload."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest
from transformers import RobertaConfig

from tests.api.conftest import base_digest
from tests.support.adapters import AdapterFactory, zip_bytes

TEXTS = ["a good film", "the plot was awful"]


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    return response.json()["error"]["message"]


def _upload(client, name: str, data: bytes, **fields):
    form = {"name": name, **{k: str(v).lower() for k, v in fields.items()}}
    return client.post("/adapters", files={"file": ("a.zip", data, "application/zip")}, data=form)


def _classify(client, name: str) -> dict:
    r = client.post("/classify", json={"adapter": name, "inputs": TEXTS, "top_k": None})
    assert r.status_code == 200, r.text
    return r.json()


def _scores(body: dict) -> list[dict[str, float]]:
    return [{p["label"]: p["score"] for p in pred} for pred in body["predictions"]]


def _same(a: list[dict[str, float]], b: list[dict[str, float]], tol: float = 1e-6) -> bool:
    return len(a) == len(b) and all(
        x == pytest.approx(y, abs=tol) for x, y in zip(a, b, strict=True)
    )


def test_list_and_get_show_residency(client):
    listed = client.get("/adapters").json()["adapters"]
    assert [a["name"] for a in listed] == ["alpha", "beta", "gamma"]
    assert not any(a["resident"] for a in listed)
    _classify(client, "beta")
    beta = client.get("/adapters/beta").json()
    assert beta["resident"] is True and beta["last_used"] is not None
    assert beta["labels"] == {"0": "neg", "1": "neu", "2": "pos"}
    assert beta["size_bytes"] > 0 and beta["adapter_config"] == "seq_bn"
    assert (
        beta["base_model"]["fingerprint"] == client.get("/readyz").json()["details"]["fingerprint"]
    )
    _error(client.get("/adapters/nope"), 404, "adapter_not_found")
    _error(client.get("/adapters/Bad%20Name"), 422, "invalid_name")


def test_upload_classify_replace_delete(client, factory, tmp_path):
    engine = client.app.state.engine
    digest = base_digest(engine)
    v1 = factory.archive("mine", tmp_path / "v1.zip", seed=11).read_bytes()
    r = _upload(client, "mine", v1)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["source"] == "uploaded"
    first = _classify(client, "mine")
    assert first["version"] == 1

    _error(_upload(client, "mine", v1), 409, "adapter_exists")
    v2 = factory.archive("mine", tmp_path / "v2.zip", seed=12).read_bytes()
    assert _upload(client, "mine", v2, overwrite=True).json()["version"] == 2
    second = _classify(client, "mine")
    assert second["version"] == 2
    assert _scores(second)[0] != pytest.approx(_scores(first)[0], abs=1e-4)

    # Served v2 equals v2 uploaded under another name and served fresh.
    assert _upload(client, "mine-copy", v2).status_code == 201
    assert _same(_scores(_classify(client, "mine-copy")), _scores(second))

    deleted = client.delete("/adapters/mine")
    assert deleted.status_code == 200 and deleted.json()["resident"] is False
    assert not engine.has_adapter("mine")
    _error(
        client.post("/classify", json={"adapter": "mine", "inputs": "x"}), 404, "adapter_not_found"
    )
    _error(client.get("/adapters/mine"), 404, "adapter_not_found")
    _error(client.delete("/adapters/mine"), 404, "adapter_not_found")
    assert base_digest(engine) == digest


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_download_round_trip(client, fmt):
    before = _classify(client, "alpha")
    r = client.get(f"/adapters/alpha/archive?format={fmt}")
    assert r.status_code == 200
    assert f'filename="alpha-v1.{fmt}"' in r.headers["content-disposition"]
    if fmt == "zip":
        names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    else:
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tf:
            names = tf.getnames()
    assert {"adapter.safetensors", "model_head.safetensors", "manifest.json"} <= set(names)
    assert _upload(client, "alpha-again", r.content).status_code == 201
    assert _same(_scores(_classify(client, "alpha-again")), _scores(before))
    _error(client.get("/adapters/alpha/archive?format=rar"), 422, "validation_error")
    _error(client.get("/adapters/nope/archive"), 404, "adapter_not_found")


def test_upload_too_large_is_413(serve, factory, tmp_path):
    archive = factory.archive("big", tmp_path / "big.zip", seed=3).read_bytes()
    assert len(archive) > 4096
    with serve(max_upload_bytes=4096) as client:
        _error(_upload(client, "big", archive), 413, "payload_too_large")
        # Without a Content-Length header the limit is enforced while streaming.
        body, content_type = _multipart("big", archive)
        r = client.post(
            "/adapters",
            content=iter([body[:3000], body[3000:]]),
            headers={"content-type": content_type},
        )
        _error(r, 413, "payload_too_large")
        assert client.get("/adapters/big").status_code == 404


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "testboundary123"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n".encode()
        + data
        + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


_zip = zip_bytes


def test_invalid_uploads_are_refused_with_the_store_message(client, factory, tmp_path):
    good = factory.save("ok", tmp_path / "ok", seed=4)
    files = {p.name: p.read_bytes() for p in good.iterdir()}
    _error(_upload(client, "x1", b"not an archive"), 422, "archive_rejected")
    message = _error(
        _upload(client, "x2", _zip({**files, "pytorch_model.bin": b"x"})), 422, "invalid_adapter"
    )
    assert "pickle" in message
    missing = {k: v for k, v in files.items() if k != "adapter.safetensors"}
    assert "adapter.safetensors" in _error(
        _upload(client, "x3", _zip(missing)), 422, "invalid_adapter"
    )
    _error(_upload(client, "Bad Name", _zip(files)), 422, "invalid_name")
    evil = _zip({"../evil.json": b"{}", **files})
    _error(_upload(client, "x4", evil), 422, "archive_rejected")
    r = client.post("/adapters", data={"name": "x5"})
    assert "file" in _error(r, 422, "validation_error")
    r = client.post("/adapters", files={"file": ("a.zip", _zip(files))})
    assert "name" in _error(r, 422, "validation_error")
    assert "overwrite" in _error(
        _upload(client, "x6", _zip(files), overwrite="maybe"), 422, "validation_error"
    )
    assert [a["name"] for a in client.get("/adapters").json()["adapters"]] == [
        "alpha",
        "beta",
        "gamma",
    ]


def test_upload_for_another_base_is_refused(client, tmp_path):
    other_dir = tmp_path / "wide"
    config = RobertaConfig(
        vocab_size=600,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
    )
    from transformers import RobertaModel

    RobertaModel(config).save_pretrained(other_dir)
    archive = AdapterFactory(other_dir).archive("wide", tmp_path / "wide.zip", seed=1)
    _error(_upload(client, "wide", archive.read_bytes()), 422, "base_model_mismatch")


def test_load_and_unload_are_idempotent(client):
    engine = client.app.state.engine
    for _ in range(2):
        r = client.post("/adapters/gamma/load")
        assert r.status_code == 200 and r.json()["resident"] is True
        assert engine.has_adapter("gamma")
    loads = _metric(client, "adapter_loads_total")
    for _ in range(2):
        r = client.post("/adapters/gamma/unload")
        assert r.status_code == 200 and r.json()["resident"] is False
        assert not engine.has_adapter("gamma")
    assert loads == 1.0
    _error(client.post("/adapters/nope/load"), 404, "adapter_not_found")
    _error(client.post("/adapters/nope/unload"), 404, "adapter_not_found")


def _metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


def test_openapi_documents_the_routes(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in [
        "/classify",
        "/adapters",
        "/adapters/{name}",
        "/adapters/{name}/archive",
        "/adapters/{name}/load",
        "/adapters/{name}/unload",
        "/healthz",
        "/readyz",
    ]:
        assert path in paths, path
    upload = paths["/adapters"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["required"] == ["file", "name"]
    assert json.dumps(paths["/classify"]["post"]["responses"]["404"]).count("ErrorResponse")
