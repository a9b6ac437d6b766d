"""A Python client of the adapter-serve HTTP API (httpx), sync and async.

    from app.client import Client, AsyncClient, ApiError

    with Client("http://127.0.0.1:8000", api_key="...") as client:
        client.classify("sentiment", ["great phone", "awful battery"], top_k=None)
        client.classify("paraphrase", [("a cat", "a kitten"), {"text": "a", "text_pair": "b"}])
        client.list_adapters(prefix="senti")                         # every page, one list
        client.upload_adapter("sentiment", "./final_adapter")       # a folder or an archive
        job = client.submit_job(name="reviews", dataset="reviews.jsonl", num_epochs=1)
        client.wait(job, progress=True)                              # a tqdm bar

    async with AsyncClient(url, api_key="...") as client:
        await client.classify("sentiment", "great phone")

Every method of `Client` exists on `AsyncClient` as a coroutine. Every failure, the server's
(4xx/5xx in the `{"error": {"code", "message"}}` shape) and the transport's, raises `ApiError`
with `status` and `code`. Importing this module imports neither torch nor transformers.
"""

from app.client.clients import AsyncClient, Client
from app.client.endpoints import DEFAULT_URL, TERMINAL, ApiError, Input, TextPair

__all__ = ["DEFAULT_URL", "TERMINAL", "ApiError", "AsyncClient", "Client", "Input", "TextPair"]
