"""`Client` and `AsyncClient`: the endpoints over httpx, sync and async (see `app.client`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx

from app.client.endpoints import (
    DEFAULT_URL,
    ApiError,
    Steps,
    _Endpoints,
    _parse,
)


class Client(_Endpoints):
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    def _request(self, method: str, path: str, *, parse=None, raw=False, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(None, "unreachable", f"{method} {path}: {exc}") from exc
        return _parse(response, parse, raw)

    def _run(self, steps: Steps) -> Any:
        answer = None
        with contextlib.closing(steps):
            while True:
                try:
                    step = steps.send(answer)
                except StopIteration as done:
                    return done.value
                if isinstance(step, tuple):
                    answer = self._request("GET", step[0], params=step[1])
                else:
                    answer = time.sleep(step)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Endpoints):
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    async def _request(  # type: ignore[override]
        self, method: str, path: str, *, parse=None, raw=False, **kwargs: Any
    ) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(None, "unreachable", f"{method} {path}: {exc}") from exc
        return _parse(response, parse, raw)

    async def _run(self, steps: Steps) -> Any:  # type: ignore[override]
        answer = None
        with contextlib.closing(steps):
            while True:
                try:
                    step = steps.send(answer)
                except StopIteration as done:
                    return done.value
                if isinstance(step, tuple):
                    answer = await self._request("GET", step[0], params=step[1])
                else:
                    answer = await asyncio.sleep(step)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
