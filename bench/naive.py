"""The naive baseline server: per request `set_active_adapters` + a new pipeline (a lock)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def naive_app(base: Path, store_dir: Path, count: int):
    import threading

    import transformers
    from adapters import AutoAdapterModel
    from fastapi import FastAPI
    from transformers import AutoTokenizer, TextClassificationPipeline

    transformers.logging.set_verbosity(transformers.logging.CRITICAL)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoAdapterModel.from_pretrained(base).eval()
    names = sorted(p.name for p in store_dir.iterdir() if not p.name.startswith("."))[:count]
    for name in names:
        model.load_adapter(str(store_dir / name), load_as=name, use_safetensors=True)
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/classify")
    def classify(body: dict) -> dict:
        with lock:
            model.set_active_adapters(body["adapter"])
            pipe = TextClassificationPipeline(model=model, tokenizer=tok)
            return {"predictions": pipe(body["inputs"], top_k=1)}

    return app


def serve_naive(args: argparse.Namespace) -> None:
    import uvicorn

    app = naive_app(Path(args.base), Path(args.store), 10_000)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def start_naive(base: Path, data_dir: Path):
    from tests.support.server import Server, free_port, start_process, wait_ready

    port = free_port()
    args = [sys.executable, "-m", "bench.serve", "naive-server", "--port", str(port)]
    args += ["--base", str(base), "--store", str(data_dir / "adapters")]
    proc = start_process(args, log_path=data_dir / "naive.log")
    server = Server(proc.args, proc.proc, proc.log_path, port=port, data_dir=data_dir)
    wait_ready(server, timeout_s=300)
    return server
