"""Weights through the API (issue 26): uploads refuse NaN, infinity, integer tensors and a huge
`__metadata__` with a 422 naming the tensor or the cap; an adapter already stored with
non-finite weights answers a 422 saying so, not a 500 from encoding NaN scores as JSON."""

from __future__ import annotations

import pytest
import torch

from tests.support.adapters import zip_bytes
from tests.support.bad_weights import BIG_METADATA, as_dtype, poison, rewrite, unchanged

UPLOADS = {
    "nan": ("model_head.safetensors", poison(float("nan")), None, "holds NaN or infinite"),
    "inf": ("adapter.safetensors", poison(float("inf")), None, "holds NaN or infinite"),
    "int64": ("adapter.safetensors", as_dtype(torch.int64), None, "is I64; weights must be"),
    "metadata": ("adapter.safetensors", unchanged, BIG_METADATA, "__metadata__ is"),
}


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    return response.json()["error"]["message"]


@pytest.mark.parametrize("case", UPLOADS)
def test_uploads_with_bad_weights_are_422_naming_why(client, factory, tmp_path, case):
    file_name, change, metadata, reason = UPLOADS[case]
    folder = factory.save("bad", tmp_path / "bad", seed=21)
    rewrite(folder / file_name, change, metadata)
    data = zip_bytes({p.name: p.read_bytes() for p in folder.iterdir()})
    if case == "metadata":
        assert len(data) > 1 << 20  # zip_bytes stores; deflated it would be a few KB
    response = client.post("/adapters", files={"file": ("a.zip", data)}, data={"name": "bad"})
    message = _error(response, 422, "invalid_adapter")
    assert reason in message and file_name in message
    if case == "metadata":
        assert "the cap is 65536" in message
    assert "bad" not in [a["name"] for a in client.get("/adapters").json()["adapters"]]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_stored_adapter_with_non_finite_weights_is_a_clear_422(client, value):
    """Weights written before uploads were checked: that adapter's requests fail with a
    reason; another adapter in the same moment is served."""
    stored = client.app.state.store.get("gamma").path / "model_head.safetensors"
    rewrite(stored, lambda t: {k: torch.full_like(v, value) for k, v in t.items()})
    response = client.post("/classify", json={"adapter": "gamma", "inputs": ["a good film"]})
    message = _error(response, 422, "invalid_adapter")
    assert "gamma" in message and "NaN or infinite score" in message
    assert "Out of range" not in response.text
    ok = client.post("/classify", json={"adapter": "alpha", "inputs": ["a good film"]})
    assert ok.status_code == 200, ok.text
    hf = client.post("/models/gamma", json={"inputs": "a good film"})
    assert hf.status_code == 422 and "NaN or infinite score" in hf.text
