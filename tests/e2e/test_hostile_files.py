"""Hostile files against the real service (`python -m app` on 127.0.0.1): small uploads that
would expand in memory or on disk, archives that are costly to list or clash with themselves,
hub imports that would download before checking, datasets that are no datasets. Each is a
clear 4xx, within memory and time bounds measured on the server process."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from tests.support.adapters import zip_bytes
from tests.support.hub import FakeHub, as_pickled
from tests.support.server import free_port, running_server

HUB_PORT = free_port()
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("hostile")
    env = {
        "APP_EMBEDDED_WORKER": "false",
        "APP_ACCESS_LOG": "false",
        "HF_HUB_OFFLINE": "0",  # the hub is FakeHub on 127.0.0.1, nothing else is reachable
        "HF_ENDPOINT": f"http://127.0.0.1:{HUB_PORT}",
        "HF_HUB_CACHE": data / "hub-cache",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as server:
        yield server


def _peak_bytes(server) -> int:
    """The server process's peak resident memory so far (VmHWM)."""
    status = Path(f"/proc/{server.pid}/status").read_text()
    line = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


_zip = zip_bytes


def _folder(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _upload(server, name: str, data: bytes, filename: str = "a.zip") -> httpx.Response:
    files = {"file": (filename, data)}
    return httpx.post(server.url + "/adapters", data={"name": name}, files=files, timeout=60)


def _code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def _stored(server) -> list[str]:
    return [a["name"] for a in httpx.get(server.url + "/adapters").json()["adapters"]]


def _warm(server, factory, tmp_path) -> None:
    """A valid .bin upload first: imports and first-use allocations count before the bound."""
    saved = factory.save("warm", tmp_path / "warm", seed=3)
    ok = _upload(server, "warm", _zip(_folder(as_pickled(saved, tmp_path / "warm-bin"))))
    assert ok.status_code in (201, 409), ok.text


def test_zero_stride_bin_is_refused_without_expanding(server, factory, tmp_path):
    """A 256 MB tensor whose storage is one float: copying it would allocate and write it."""
    import torch

    _warm(server, factory, tmp_path)
    folder = as_pickled(factory.save("zs", tmp_path / "zs", seed=4), tmp_path / "zs-bin")
    torch.save({"bomb": torch.zeros(1).expand(8192, 8192)}, folder / "pytorch_adapter.bin")
    data = _zip(_folder(folder))
    assert len(data) < 20_000
    before = _peak_bytes(server)
    response = _upload(server, "zero-stride", data)
    assert response.status_code == 422 and "stride" in response.json()["error"]["message"]
    assert _peak_bytes(server) - before < 20 * MB
    assert "zero-stride" not in _stored(server)


def test_adapter_declaring_modules_without_weights_is_refused(server, factory, tmp_path):
    """reduction_factor 0.0001 declares ~160 MB of bottlenecks; the file holds 2 small biases."""
    from safetensors.torch import load_file, save_file

    _warm(server, factory, tmp_path)
    folder = factory.save("huge", tmp_path / "huge", seed=5)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["config"]["reduction_factor"] = 0.0001
    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(str(folder / "adapter.safetensors"))
    kept = {k: v for k, v in tensors.items() if k.endswith("adapter_up.bias")}
    save_file(kept, str(folder / "adapter.safetensors"))
    assert (folder / "adapter.safetensors").stat().st_size < 2000
    before = _peak_bytes(server)
    response = _upload(server, "huge", _zip(_folder(folder)))
    assert response.status_code == 422 and _code(response) == "adapter_too_large", response.text
    assert _peak_bytes(server) - before < 20 * MB
    # Under the cap, the absent weights themselves are the reason.
    config["config"]["reduction_factor"] = 0.5
    (folder / "adapter_config.json").write_text(json.dumps(config))
    response = _upload(server, "huge", _zip(_folder(folder)))
    assert response.status_code == 422 and "lacks" in response.json()["error"]["message"]
    assert "huge" not in _stored(server)


def test_tar_header_bomb_is_refused_quickly(server):
    header = b"".join(
        tarfile.TarInfo(f"f{i}").tobuf(format=tarfile.USTAR_FORMAT) for i in range(1000)
    )
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as out:
        for _ in range(300):  # 300k headers, as the review sent
            out.write(header)
    assert len(buf.getvalue()) < 2 * MB
    start = time.monotonic()
    response = _upload(server, "bomb", buf.getvalue(), filename="a.tar.gz")
    assert time.monotonic() - start < 2.0
    assert response.status_code == 413 and _code(response) == "archive_too_large"


@pytest.mark.parametrize("names", [["a", "a/b"], ["a/", "a"], ["a", "a/"]])
def test_zip_with_file_and_folder_of_one_name_is_422(server, names):
    data = _zip({name: b"" if name.endswith("/") else b"{}" for name in names})
    response = _upload(server, "clash", data)
    assert response.status_code == 422 and _code(response) == "archive_rejected", response.text


def _hub_files(factory, tmp_path) -> dict[str, bytes]:
    files = _folder(factory.save("hub", tmp_path / "hub", seed=6))
    return {**files, "README.md": b"# card\n"}


def test_hub_import_checks_listed_sizes_before_downloading(server, factory, tmp_path):
    files = _hub_files(factory, tmp_path)
    body = {"name": "from-hub", "repo_id": "org/demo"}
    with FakeHub("org/demo", files, listed={"README.md": 10**9}, port=HUB_PORT) as hub:
        response = httpx.post(server.url + "/adapters/import", json=body, timeout=60)
        assert response.status_code == 413 and _code(response) == "archive_too_large"
        assert hub.downloads() == [] and hub.requests
    with FakeHub("org/demo", files, port=HUB_PORT) as hub:
        response = httpx.post(server.url + "/adapters/import", json=body, timeout=60)
        assert response.status_code == 201, response.text
        assert response.json()["hub"]["commit"] == hub.commit
        fetched = {r.rsplit("/", 1)[-1] for r in hub.downloads()}
        assert fetched == set(files)


@pytest.mark.parametrize("subfolder", ["*", "**", "[a-z]*", "a/*", "x?", "../x"])
def test_hub_subfolder_globs_are_refused(server, factory, tmp_path, subfolder):
    files = {f"{d}/{k}": v for d in ("a", "b") for k, v in _hub_files(factory, tmp_path).items()}
    body = {"name": "glob", "repo_id": "org/globs", "subfolder": subfolder}
    with FakeHub("org/globs", files, port=HUB_PORT) as hub:
        response = httpx.post(server.url + "/adapters/import", json=body, timeout=60)
        assert response.status_code == 422 and _code(response) == "hub_error", response.text
        assert hub.requests == []


@pytest.mark.parametrize("dataset", ["text", "csv", "json", "parquet", "imdb", "owner/.."])
def test_training_dataset_must_be_a_root_file_or_a_hub_id(server, dataset):
    body = {"name": "job", "dataset": dataset, "eval_split": None, "text_column": "text",
            "label_column": "text"}  # fmt: skip
    response = httpx.post(server.url + "/train-jobs", json=body, timeout=60)
    assert response.status_code == 422, response.text
    assert _code(response) == "dataset_forbidden"
