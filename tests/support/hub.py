"""Hugging Face hub repositories laid out on disk, for offline import tests.

    commit = cache_repo(cache_dir, "org/name", folder, revision="main", subfolder=None)

writes the hub cache layout that `huggingface_hub` itself writes and reads
(`models--org--name/{blobs,refs,snapshots}`, snapshot files linked to blobs), so that
`snapshot_download(..., cache_dir=cache_dir)` with HF_HUB_OFFLINE=1 resolves it exactly as
it would resolve a real download. Also: `.bin` copies of saved adapters and a pickle that
runs code when it is loaded unsafely.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

BIN_NAMES = {
    "adapter.safetensors": "pytorch_adapter.bin",
    "model_head.safetensors": "pytorch_model_head.bin",
}


def cache_repo(
    cache_dir: Path,
    repo_id: str,
    folder: Path,
    *,
    revision: str = "main",
    subfolder: str | None = None,
    extra: dict[str, bytes] | None = None,
) -> str:
    """Put the files of `folder` (under `subfolder`) into the cache as `repo_id@revision`."""
    files = {
        (f"{subfolder}/{p.name}" if subfolder else p.name): p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }
    files.update(extra or {})
    digest = hashlib.sha1(repo_id.encode())
    for rel, data in sorted(files.items()):
        digest.update(rel.encode() + data)
    commit = digest.hexdigest()
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return commit


def as_pickled(folder: Path, out: Path) -> Path:
    """The same adapter as `save_adapter(dir, name)` (no safetensors) writes it: torch.save'd
    state dicts in pytorch_adapter.bin / pytorch_model_head.bin."""
    import torch
    from safetensors.torch import load_file

    out.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.name in BIN_NAMES:
            torch.save(load_file(str(path)), out / BIN_NAMES[path.name])
        else:
            shutil.copyfile(path, out / path.name)
    return out


class Payload:
    """Unpickling this runs `Path(marker).touch()`: the code a malicious .bin would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def malicious_bin(folder: Path, out: Path, marker: Path) -> Path:
    """`as_pickled(folder)` with a head file that runs code when loaded with a full unpickle."""
    import torch

    as_pickled(folder, out)
    state = torch.load(out / "pytorch_model_head.bin", weights_only=True)
    state["payload"] = Payload(marker)
    torch.save(state, out / "pytorch_model_head.bin")
    return out


class FakeHub:
    """A hub API on 127.0.0.1 serving one repo: the listing (`/api/models/...`, with sizes)
    and file downloads (`/{repo}/resolve/{revision}/{path}`), recording every request.

        with FakeHub("org/name", files, listed={"README.md": 10**9}) as hub:
            env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
            hub.requests                       # ["GET /api/models/org/name/revision/main", ...]

    `listed` overrides the sizes the listing reports (a repo can claim any size). huggingface_hub
    reads HF_ENDPOINT once, at import: pick the `port` first when the client is this process.
    """

    def __init__(
        self, repo_id: str, files: dict[str, bytes], *, listed: dict | None = None, port: int = 0
    ) -> None:
        self.repo_id, self.files, self.listed, self.port = repo_id, files, listed or {}, port
        digest = hashlib.sha1(repo_id.encode())
        for rel, data in sorted(files.items()):
            digest.update(rel.encode() + data)
        self.commit = digest.hexdigest()
        self.requests: list[str] = []
        self._server = None

    def __enter__(self) -> FakeHub:
        import threading
        from http.server import ThreadingHTTPServer

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def listing(self) -> dict:
        siblings = [
            {"rfilename": rel, "size": self.listed.get(rel, len(data)),
             "blobId": hashlib.sha1(data).hexdigest()}
            for rel, data in sorted(self.files.items())
        ]  # fmt: skip
        return {"id": self.repo_id, "modelId": self.repo_id, "sha": self.commit,
                "siblings": siblings, "private": False}  # fmt: skip

    def downloads(self) -> list[str]:
        return [r for r in self.requests if "/resolve/" in r]


def _handler(hub: FakeHub):
    import json
    from http.server import BaseHTTPRequestHandler

    api = f"/api/models/{hub.repo_id}/revision/"
    resolve = f"/{hub.repo_id}/resolve/"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            hub.requests.append(f"{self.command} {path}")
            if path.startswith(api) or path == api.removesuffix("/revision/"):
                body = json.dumps(hub.listing()).encode()
                return self._reply(200, body, {"Content-Type": "application/json"})
            if path.startswith(resolve):
                rel = path[len(resolve) :].split("/", 1)[-1]
                if rel in hub.files:
                    data = hub.files[rel]
                    etag = f'"{hashlib.sha256(data).hexdigest()}"'
                    return self._reply(200, data, {"X-Repo-Commit": hub.commit, "ETag": etag})
            body = b'{"error": "not found"}'
            return self._reply(404, body, {"X-Error-Code": "EntryNotFound"})

        do_HEAD = do_GET

    return Handler
