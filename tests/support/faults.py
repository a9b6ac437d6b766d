"""Helpers for the fault and load tests (tests/e2e/test_faults*.py): golden outputs, raw-socket
clients that stall or vanish, Prometheus parsing, and a whole-store check.

    golden = Golden(tiny_model_dir, factory, TEXTS).add(1, 2)   # outputs per seed and text
    golden.seed_of(texts, body["predictions"])       # -> the seed whose outputs these are
    abandon(server.port, body)                        # send a request, close before the answer
    metric(text, 'inference_rejected_total{reason="cancelled"}')
    assert_store_whole(store_root)                    # every adapter verifies, no scratch dirs
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from adapters_store import AdapterStore
from tests.support.adapters import DEFAULT_LABELS, AdapterFactory

TOL = 1e-5
LONG_TEXT = " ".join(["the good movie was a film with a great plot"] * 20)  # > 128 tokens


class Golden:
    """In-process outputs (one forward per text) of factory adapters, keyed by seed and text."""

    def __init__(self, model_dir: Path, factory: AdapterFactory, texts: list[str]) -> None:
        from app.serving.engine import Engine

        self.texts = texts
        self.factory = factory
        self.engine = Engine.load(base_model=str(model_dir))
        self.outputs: dict[int, dict[str, list[float]]] = {}

    def add(self, *seeds: int) -> Golden:
        from adapters_store.rendering import softmax  # the engine gives logits
        from app.serving.engine import Segment

        for seed in seeds:
            if seed in self.outputs:
                continue
            with tempfile.TemporaryDirectory() as folder:
                path = self.factory.save("golden", Path(folder) / "a", seed=seed)
                self.engine.load_adapter("golden", path)
            forward = self.engine.forward
            self.outputs[seed] = {
                t: softmax(forward([Segment("golden", self.engine.tokenize([t]))])[0][0])
                for t in self.texts
            }
            self.engine.unload_adapter("golden")
        return self

    def matches(
        self, seed: int, texts: list[str], predictions: list[list[dict]], labels=DEFAULT_LABELS
    ) -> bool:
        """`predictions` (top_k=None) are exactly seed's outputs for `texts`."""
        rows = self.outputs[seed]
        return len(texts) == len(predictions) and all(
            _same(rows[t], p, labels) for t, p in zip(texts, predictions, strict=True)
        )

    def seed_of(
        self, texts: list[str], predictions: list[list[dict]], labels=DEFAULT_LABELS
    ) -> int | None:
        """The one seed whose outputs these are for every text (None: a mixture or unknown)."""
        found = [s for s in self.outputs if self.matches(s, texts, predictions, labels)]
        return found[0] if len(found) == 1 else None


def _same(probs: list[float], prediction: list[dict], labels: dict[int, str]) -> bool:
    scores = {p["label"]: p["score"] for p in prediction}
    return len(scores) == len(probs) and all(
        abs(scores.get(labels[i], -1.0) - p) <= TOL for i, p in enumerate(probs)
    )


# ---- raw HTTP ------------------------------------------------------------------------------
def http_request(
    path: str, body: bytes, content_type: str, *, port: int, headers: dict[str, str] | None = None
) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


def abandon(
    port: int, payload: dict, *, linger_s: float = 0.05, headers: dict[str, str] | None = None
) -> None:
    """POST /classify, then close the connection before the answer arrives."""
    body = json.dumps(payload).encode()
    raw = http_request("/classify", body, "application/json", port=port, headers=headers)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        time.sleep(linger_s)


def multipart(fields: dict[str, str], file_bytes: bytes, *, boundary: str = "XyZ") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n".encode()
    )
    return b"".join([*parts, file_bytes, f"\r\n--{boundary}--\r\n".encode()])


class SlowUpload:
    """An upload streamed in chunks over a raw socket, so a test can act between chunks."""

    def __init__(self, port: int, fields: dict[str, str], file_bytes: bytes) -> None:
        body = multipart(fields, file_bytes)
        self.raw = http_request("/adapters", body, "multipart/form-data; boundary=XyZ", port=port)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sent = 0

    def send(self, n: int) -> None:
        chunk = self.raw[self.sent : self.sent + n]
        self.sock.sendall(chunk)
        self.sent += len(chunk)

    @property
    def remaining(self) -> int:
        return len(self.raw) - self.sent

    def close(self) -> None:
        self.sock.close()


# ---- metrics and store ---------------------------------------------------------------------
def metric(text: str, name: str) -> float:
    """A sample of the Prometheus text `text`, by its full name with labels (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def scratch_entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".trash-")))


def assert_store_whole(root: Path, *, expect: Iterable[str] | None = None) -> dict[str, int]:
    """Every adapter in the store re-hashes to its manifest; no scratch folder is left.

    Returns {name: version}; with `expect`, the names must be exactly those.
    """
    store = AdapterStore(root)
    leftovers = scratch_entries(root)
    assert not leftovers, f"scratch folders left in the store: {leftovers}"
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    listed = {m.name: m.version for m in store.list()}
    assert sorted(listed) == dirs, f"folders without a valid manifest: {set(dirs) - set(listed)}"
    for name in listed:
        store.verify(name)
    if expect is not None:
        assert sorted(listed) == sorted(expect), listed
    return listed
