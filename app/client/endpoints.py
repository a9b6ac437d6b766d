"""The client's endpoints, written once for the sync and the async client (see `app.client`)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TypedDict

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")
DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """A request that failed: `status` (None when the server was not reached), `code`."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(f"{status or '-'} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class TextPair(TypedDict):
    """A sentence pair as the Hugging Face text-classification pipeline takes it."""

    text: str
    text_pair: str


# One input: a text, a {"text", "text_pair"} dict, or a (text, text_pair) tuple.
Input = str | TextPair | tuple[str, str]


def _input(item: Input) -> str | dict[str, str]:
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError("a sentence pair is a (text, text_pair) tuple of two texts")
        return {"text": item[0], "text_pair": item[1]}
    return item if isinstance(item, str) else dict(item)


def _inputs(inputs: Input | list[Input]) -> Any:
    """The request's `inputs`: a tuple is one pair (JSON would make it a list of texts)."""
    return [_input(i) for i in inputs] if isinstance(inputs, list) else _input(inputs)


def _error(response: httpx.Response) -> ApiError:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        return ApiError(response.status_code, str(error.get("code")), str(error.get("message")))
    if isinstance(error, str):
        return ApiError(response.status_code, "error", error)
    return ApiError(
        response.status_code, "http_error", response.text[:300] or response.reason_phrase
    )


def _parse(response: httpx.Response, parse: Callable[[Any], Any] | None, raw: bool) -> Any:
    if response.status_code >= 400:
        raise _error(response)
    value = response if raw else response.json()
    return parse(value) if parse else value


def _archive(path: str | Path) -> tuple[str, bytes]:
    """An archive file as it is, or a folder (what save_adapter wrote) zipped in memory."""
    path = Path(path)
    if path.is_file():
        return path.name, path.read_bytes()
    if not path.is_dir():
        raise ApiError(None, "not_found", f"{path} is neither an archive nor a folder")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for item in sorted(path.iterdir()):
            if item.is_file():
                zf.write(item, arcname=item.name)
    return f"{path.name}.zip", buffer.getvalue()


def _job_id(job: str | dict) -> str:
    return job if isinstance(job, str) else str(job["id"])


# A conversation of several requests, written once for both clients: a generator that yields
# a GET as (path, params) or a pause in seconds, receives the answer, and returns the result.
Steps = Generator[tuple[str, dict[str, Any]] | float, Any, Any]


def _given(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _every_page(params: dict[str, Any]) -> Steps:
    adapters, cursor = [], None
    while True:
        page = yield ("/adapters", params | _given(cursor=cursor))
        adapters += page["adapters"]
        cursor = page.get("next_cursor")
        if not cursor:
            return adapters


def _polling(job: str | dict, progress: bool, poll_s: float, timeout_s: float | None) -> Steps:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    bar = _Bar(progress, _job_id(job))
    try:
        while True:
            record = yield (f"/train-jobs/{_job_id(job)}", {})
            bar.show(record)
            if record["status"] in TERMINAL:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise _timed_out(record, timeout_s or 0)
            yield poll_s
    finally:
        bar.close()


class _Endpoints:
    """The API's routes, once: `_request` runs one, `_run` a conversation of several (`Steps`),
    blocking or as a coroutine."""

    def _request(self, method: str, path: str, *, parse=None, raw=False, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _run(self, steps: Steps) -> Any:
        raise NotImplementedError

    def classify(
        self,
        adapter: str | list[str],
        inputs: Input | list[Input],
        *,
        top_k: int | None = 1,
        truncation: bool = True,
    ) -> Any:
        """POST /classify; a list of adapter names classifies with each (`results`). An input
        is a text or a sentence pair: `{"text": a, "text_pair": b}` or the tuple `(a, b)`."""
        body: dict[str, Any] = {"inputs": _inputs(inputs), "top_k": top_k,
                                "truncation": truncation}  # fmt: skip
        body["adapters" if isinstance(adapter, list) else "adapter"] = adapter
        return self._request("POST", "/classify", json=body)

    def list_adapters(
        self,
        *,
        prefix: str | None = None,
        method: str | None = None,
        source: str | None = None,
        page_size: int | None = None,
    ) -> Any:
        """Every adapter (matching the filters) in name order, following the pages."""
        params = _given(prefix=prefix, method=method, source=source, limit=page_size)
        return self._run(_every_page(params))

    def adapters_page(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        prefix: str | None = None,
        method: str | None = None,
        source: str | None = None,
    ) -> Any:
        """One page: `{"adapters": [...], "next_cursor": str | None, "total": int}`."""
        params = _given(limit=limit, cursor=cursor, prefix=prefix, method=method, source=source)
        return self._request("GET", "/adapters", params=params)

    def get_adapter(self, name: str) -> Any:
        return self._request("GET", f"/adapters/{name}")

    def upload_adapter(self, name: str, path: str | Path, *, overwrite: bool = False) -> Any:
        filename, content = _archive(path)
        form = {"name": name, "overwrite": "true" if overwrite else "false"}
        return self._request("POST", "/adapters", data=form, files={"file": (filename, content)})

    def download_adapter(self, name: str, out: str | Path, *, format: str = "zip") -> Any:
        def save(response: httpx.Response) -> Path:
            target = Path(out)
            target.write_bytes(response.content)
            return target

        params = {"format": format}
        return self._request(
            "GET", f"/adapters/{name}/archive", params=params, parse=save, raw=True
        )

    def delete_adapter(self, name: str) -> Any:
        return self._request("DELETE", f"/adapters/{name}")

    def load_adapter(self, name: str) -> Any:
        return self._request("POST", f"/adapters/{name}/load")

    def unload_adapter(self, name: str) -> Any:
        return self._request("POST", f"/adapters/{name}/unload")

    def import_adapter(
        self,
        name: str,
        repo_id: str,
        *,
        revision: str | None = None,
        subfolder: str | None = None,
        overwrite: bool = False,
    ) -> Any:
        """POST /adapters/import: the server downloads the hub repo and checks it."""
        body = {"name": name, "repo_id": repo_id, "revision": revision, "subfolder": subfolder}
        return self._request("POST", "/adapters/import", json={**body, "overwrite": overwrite})

    def submit_job(self, config: dict[str, Any] | None = None, **fields: Any) -> Any:
        """POST /train-jobs with a training config (a dict, keywords, or both)."""
        return self._request("POST", "/train-jobs", json={**(config or {}), **fields})

    def get_job(self, job: str | dict) -> Any:
        return self._request("GET", f"/train-jobs/{_job_id(job)}")

    def list_jobs(self, *, status: str | None = None, limit: int = 100) -> Any:
        params: dict[str, Any] = {"limit": limit} | ({"status": status} if status else {})
        return self._request("GET", "/train-jobs", params=params, parse=lambda b: b["jobs"])

    def cancel_job(self, job: str | dict) -> Any:
        return self._request("POST", f"/train-jobs/{_job_id(job)}/cancel")

    def wait(
        self,
        job: str | dict,
        *,
        progress: bool = False,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> Any:
        """Poll the job until it succeeds, fails or is cancelled; return its final record."""
        return self._run(_polling(job, progress, poll_s, timeout_s))


class _Bar:
    """A tqdm bar over a job's steps (or nothing, when progress is off)."""

    def __init__(self, enabled: bool, job_id: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=None, desc=f"job {job_id[:8]}", unit="step")

    def show(self, job: dict) -> None:
        if self.bar is None:
            return
        progress = job.get("progress") or {}
        if progress.get("total_steps") and self.bar.total != progress["total_steps"]:
            self.bar.total = progress["total_steps"]
        self.bar.n = progress.get("step") or 0
        loss = progress.get("loss")
        self.bar.set_postfix_str(
            job["status"] + (f" loss={loss:.4f}" if isinstance(loss, float) else ""), refresh=True
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _timed_out(job: dict, timeout_s: float) -> ApiError:
    return ApiError(
        None, "wait_timeout", f"job {job['id']} still {job['status']} after {timeout_s}s"
    )
