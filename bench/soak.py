"""A bounded soak of the real server: concurrent mixed-adapter traffic while adapters churn.

    python -m bench.soak --seconds 120 --clients 32 --adapters 6 [--base minilm|tiny]

Starts `python -m app` on 127.0.0.1, uploads N random adapters, computes golden outputs for a
fixed text set in-process, then runs closed-loop clients while a churn task uploads, uses and
deletes extra adapters and re-uploads a stable one (new version, same weights): first a warm-up
of the same mix (so caches and allocator pools fill), then the measured run.
Reports requests, errors by status, wrong answers (label differs, or score off by > 1e-3),
p50/p99 latency and the server's RSS growth after warm-up. Stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from bench.common import DATA, bootstrap

TOLERANCE = 1e-3
LABELS = {0: "negative", 1: "positive"}


def load_texts(n: int) -> list[str]:
    import json

    path = DATA / "rotten_tomatoes" / "test.jsonl"
    lines = path.read_text().splitlines()[:n]
    return [json.loads(line)["text"] for line in lines]


def golden(base: Path, folders: dict[str, Path], texts: list[str]) -> dict:
    """(adapter, text index) -> (label id, score), in-process, fp32, one adapter at a time."""
    import torch
    from adapters import AdapterSetup, AutoAdapterModel
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoAdapterModel.from_pretrained(base).eval()
    out = {}
    for name, folder in folders.items():
        model.load_adapter(str(folder), load_as=name, use_safetensors=True)
        for i, text in enumerate(texts):
            batch = tok([text], truncation=True, return_tensors="pt")
            with torch.inference_mode(), AdapterSetup(name, head_setup=name):
                probs = model(**batch).logits.softmax(-1)[0]
            score, idx = probs.max(-1)
            out[(name, i)] = (int(idx), float(score))
    return out


async def upload(client: httpx.AsyncClient, name: str, archive: Path) -> int:
    with archive.open("rb") as f:
        r = await client.post(
            "/adapters",
            data={"name": name, "overwrite": "true"},
            files={"file": (archive.name, f, "application/zip")},
        )
    return r.status_code


class Tally:
    def __init__(self) -> None:
        self.status: Counter[int | str] = Counter()
        self.latencies: list[float] = []
        self.wrong = 0
        self.requests = 0


async def client_loop(client, names, texts, gold, labels, deadline, tally: Tally, rng):
    while time.monotonic() < deadline:
        name = rng.choice(names)
        idx = rng.sample(range(len(texts)), k=rng.randint(1, 4))
        start = time.perf_counter()
        try:
            r = await client.post(
                "/classify", json={"adapter": name, "inputs": [texts[i] for i in idx]}
            )
        except httpx.HTTPError as exc:
            tally.status[type(exc).__name__] += 1
            continue
        tally.latencies.append(time.perf_counter() - start)
        tally.requests += 1
        tally.status[r.status_code] += 1
        if r.status_code != 200:
            continue
        for i, preds in zip(idx, r.json()["predictions"], strict=True):
            want_idx, want_score = gold[(name, i)]
            top = preds[0]
            if top["label"] != labels[want_idx] or abs(top["score"] - want_score) > TOLERANCE:
                tally.wrong += 1


async def churn_loop(client, archives, stable, texts, deadline, counts: Counter):
    """Upload, use and delete short-lived adapters; re-upload a stable adapter (same weights)."""
    i = 0
    while time.monotonic() < deadline:
        name = f"churn-{i % 3}"
        counts[f"upload {await upload(client, name, archives['churn'])}"] += 1
        r = await client.post("/classify", json={"adapter": name, "inputs": texts[:2]})
        counts[f"classify-churn {r.status_code}"] += 1
        r = await client.delete(f"/adapters/{name}")
        counts[f"delete {r.status_code}"] += 1
        counts[f"reupload {await upload(client, stable, archives[stable])}"] += 1
        i += 1
        await asyncio.sleep(0.5)


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def phase(client, args, names, texts, gold, labels, seconds, tally, churn, pid):
    """Clients and churn together for `seconds`; returns RSS samples (MB) taken every 5 s."""
    deadline = time.monotonic() + seconds
    samples: list[float] = []
    rng = random.Random(len(churn) + tally.requests)

    async def sample_rss():
        while time.monotonic() < deadline:
            samples.append(rss_mb(pid))
            await asyncio.sleep(5)

    loops = [
        client_loop(
            client, names, texts, gold, labels, deadline, tally, random.Random(rng.random())
        )
        for _ in range(args.clients)
    ]
    archives = args.archives
    if not args.no_churn:
        loops.append(churn_loop(client, archives, names[0], texts, deadline, churn))
    await asyncio.gather(sample_rss(), *loops)
    samples.append(rss_mb(pid))
    return samples


async def drive(server, args, names, archives, texts, gold, labels) -> dict:
    limits = httpx.Limits(max_connections=args.clients + 4)
    args.archives = archives
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        for name in names:
            assert await upload(client, name, archives[name]) in (200, 201), name
        # Warm-up runs the same mix (churn included) so that caches and allocator pools fill.
        await phase(
            client, args, names, texts, gold, labels, args.warmup, Tally(), Counter(), server.pid
        )
        tally, churn = Tally(), Counter()
        samples = await phase(
            client, args, names, texts, gold, labels, args.seconds, tally, churn, server.pid
        )
    return {"tally": tally, "churn": churn, "rss": samples}


def report(result: dict, args) -> None:
    tally: Tally = result["tally"]
    lat = sorted(tally.latencies)
    p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: 0)
    samples = result["rss"]
    rss_start, rss_end, rss_peak = samples[0], samples[-1], max(samples)
    five_xx = sum(v for k, v in tally.status.items() if isinstance(k, int) and k >= 500)
    print(
        f"\nsoak: {args.seconds}s, {args.clients} clients, {args.adapters} adapters, "
        f"base {args.base}"
    )
    print(
        "| requests | req/s | wrong answers | 5xx | p50 ms | p99 ms | RSS start -> end MB "
        "(growth) |"
    )
    print("|---|---|---|---|---|---|---|")
    growth = (rss_end - rss_start) / rss_start * 100
    print(
        f"| {tally.requests} | {tally.requests / args.seconds:.1f} | {tally.wrong} | {five_xx} "
        f"| {p(0.5):.1f} | {p(0.99):.1f} | {rss_start:.0f} -> {rss_end:.0f} "
        f"(peak {rss_peak:.0f}, {growth:+.1f}%) |"
    )
    print("RSS every 5 s (MB):", " ".join(f"{v:.0f}" for v in samples))
    print("status counts:", dict(tally.status))
    print("churn:", dict(result["churn"]))
    if lat:
        print(f"mean latency {statistics.mean(lat) * 1000:.1f} ms")
    ok = tally.wrong == 0 and five_xx == 0 and growth < 5
    print("GOALS (0 wrong, 0 5xx, RSS growth < 5%):", "met" if ok else "MISSED")


def main() -> None:
    bootstrap()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--warmup", type=float, default=45)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=6)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--base", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--no-churn", action="store_true", help="classify traffic only")
    args = parser.parse_args()

    from bench.common import minilm_dir
    from tests.support.adapters import AdapterFactory
    from tests.support.server import running_server
    from tests.support.tiny import build_tiny_roberta

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        base = minilm_dir() if args.base == "minilm" else build_tiny_roberta(work / "tiny")
        factory = AdapterFactory(base)
        names = [f"soak-{i}" for i in range(args.adapters)]
        folders = {
            n: factory.save(n, work / "saved" / n, seed=i, std=0.05)
            for i, n in enumerate([*names, "churn"])
        }
        archives = {
            n: Path(shutil.make_archive(str(work / n), "zip", f)) for n, f in folders.items()
        }
        texts = load_texts(args.texts)
        print(f"computing golden outputs for {len(names)} adapters x {len(texts)} texts ...")
        gold = golden(base, {n: folders[n] for n in names}, texts)
        env = {
            "APP_MAX_RESIDENT_ADAPTERS": str(max(2, args.adapters - 2)),  # eviction happens too
            "APP_EMBEDDED_WORKER": "false",
            "APP_ACCESS_LOG": "false",
            "APP_LOG_LEVEL": "warning",
            "APP_TORCH_THREADS": "1",
        }
        with running_server(data_dir=work / "data", base_model=base, env=env) as server:
            result = asyncio.run(drive(server, args, names, archives, texts, gold, LABELS))
        report(result, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
