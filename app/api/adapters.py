"""/adapters: list (paged, from the store's index), inspect, upload, download, delete, load and
unload stored adapters; a key with adapter patterns only those (app.api.deps), others 404."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import shutil
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from adapters_store import Filters, Listed, Manifest
from adapters_store import format as fmt
from adapters_store.fit import check_adapter_fits
from adapters_store.hub import import_from_hub
from adapters_store.listing import decode_cursor, encode_cursor
from app.api.deps import (
    UPLOAD_ROUTE,
    AdminAccess,
    AdminAdapterAccess,
    BatcherDep,
    CacheDep,
    ClassifyAccess,
    ClassifyAdapterAccess,
    DownloadAdapterAccess,
    EngineDep,
    SettingsDep,
    StoreDep,
    check_adapter,
    patterns,
)
from app.api.errors import InvalidRequest, error_responses
from app.schemas import UPLOAD_BODY, AdapterInfo, AdapterList, HubImportRequest
from app.serving.adapter_cache import AdapterCache

router = APIRouter(prefix="/adapters", tags=["adapters"])
PAGE_MAX = 1000  # also the page without `limit`: a store of up to 1,000 adapters in one answer


async def residency(cache: Any) -> Any:
    """What `info` reads residency from: the cache itself in one process; behind an engine
    process (app.procs), one fetch of the engine's residency."""
    fetch = getattr(cache, "fetch", None)
    return cache if fetch is None else await fetch()


def info(
    manifest: Manifest | Listed, cache: AdapterCache, residents: dict[str, Any] | None = None
) -> AdapterInfo:
    """The API's view of a stored adapter; `residents`: one `cache.snapshot()` for a page."""
    resident = (cache.snapshot() if residents is None else residents).get(manifest.name)
    last = cache.last_used(manifest.name)
    return AdapterInfo(
        name=manifest.name,
        version=manifest.version,
        labels=manifest.labels,
        base_model=manifest.base_model,
        adapter_config=manifest.adapter_config,
        source=manifest.source,
        hub=manifest.hub,
        size_bytes=manifest.size_bytes,
        metrics=manifest.metrics,
        created_at=manifest.created_at,
        resident=resident is not None and resident.version == manifest.version,
        last_used=datetime.fromtimestamp(last, UTC).isoformat() if last else None,
        task=manifest.task,
        thresholds=manifest.thresholds,
        text_pair=manifest.text_pair,
    )


@router.get(
    "",
    response_model=AdapterList,
    responses=error_responses(422),
    summary="Stored adapters in name order, a page at a time",
)
async def list_adapters(
    request: Request,
    store: StoreDep,
    cache: CacheDep,
    _access: ClassifyAccess,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="adapters per page")] = PAGE_MAX,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    prefix: Annotated[str | None, Query(max_length=129, description="name prefix")] = None,
    method: Annotated[
        str | None, Query(max_length=64, description="adapter_config: seq_bn, lora, ...")
    ] = None,
    source: Literal["trained", "uploaded", "hub"] | None = None,
) -> AdapterList:
    """Served from the store's listing index (no manifest is read). Without `limit`, a page of
    1,000: the whole store up to that size. `next_cursor` is null on the last page. A key with
    adapter patterns gets only the adapters they cover (`total` counts those)."""
    filters = Filters(prefix=prefix or None, method=method or None, source=source)
    # A cursor is bound to the query's filters (not the key's patterns: as before them).
    scope = {k: v for k, v in dataclasses.asdict(filters).items() if k != "patterns"}
    after = decode_cursor(cursor, scope) if cursor else None
    filters = dataclasses.replace(filters, patterns=patterns(request))
    page = await asyncio.to_thread(store.page, limit, after, filters)
    cache = await residency(cache)  # one call to an engine process for the page
    residents = cache.snapshot()
    return AdapterList(
        adapters=[info(entry, cache, residents) for entry in page.entries],
        next_cursor=encode_cursor(page.next_after, scope) if page.next_after else None,
        total=page.total,
    )


@router.get("/{name:adapter}", response_model=AdapterInfo, responses=error_responses(404, 422))
async def get_adapter(
    name: str, store: StoreDep, cache: CacheDep, _access: ClassifyAdapterAccess
) -> AdapterInfo:
    stored = await asyncio.to_thread(store.get, name)
    return info(stored.manifest, await residency(cache))


def _scratch_dir(store_root: Path) -> tempfile.TemporaryDirectory:
    """A scratch folder inside the store, named like the store's own (`.tmp-<host>-<pid>-`):
    if the process dies mid-upload, `store.cleanup()` at the next start removes it."""
    prefix = f".tmp-{socket.gethostname()}-{os.getpid()}-upload-"
    return tempfile.TemporaryDirectory(prefix=prefix, dir=store_root)


def _save_upload(upload: UploadFile, folder: Path) -> Path:
    path = folder / "upload"
    upload.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return path


def _fit_check(engine, settings) -> functools.partial:
    cap = settings.max_adapter_param_bytes
    return functools.partial(check_adapter_fits, engine.base_config, max_param_bytes=cap)


def _flag(value: object) -> bool:
    text = str(value or "false").strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise InvalidRequest("overwrite must be true or false")
    return text in ("true", "1", "yes")


@router.post(
    "",
    status_code=201,
    response_model=AdapterInfo,
    openapi_extra={**UPLOAD_ROUTE, "requestBody": UPLOAD_BODY},
    responses=error_responses(409, 413, 422),
    summary="Upload an archive of a saved adapter (multipart: file, name, overwrite)",
)
async def upload_adapter(
    request: Request,
    store: StoreDep,
    engine: EngineDep,
    cache: CacheDep,
    settings: SettingsDep,
    _access: AdminAccess,
) -> AdapterInfo:
    # app.api.guard caps the body at APP_MAX_UPLOAD_BYTES (413), as it streams in
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload, name = form.get("file"), form.get("name")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("form field 'file' (the archive) is required")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("form field 'name' is required")
        check_adapter(request, name)
        overwrite = _flag(form.get("overwrite"))
        with _scratch_dir(store.root) as folder:
            path = await asyncio.to_thread(_save_upload, upload, Path(folder))
            manifest = await asyncio.to_thread(
                store.import_archive,
                name,
                path,
                expected_base=engine.base_ref,
                overwrite=overwrite,
                check=_fit_check(engine, settings),
            )
    finally:
        await form.close()
    return info(manifest, await residency(cache))


@router.post(
    "/import",
    status_code=201,
    response_model=AdapterInfo,
    responses=error_responses(409, 413, 422, 503),
    summary="Import an adapter from a Hugging Face hub repository",
)
async def import_adapter(
    request: Request,
    body: HubImportRequest,
    store: StoreDep,
    engine: EngineDep,
    cache: CacheDep,
    settings: SettingsDep,
    _access: AdminAccess,
) -> AdapterInfo:
    """Downloads only the adapter's files, converts `.bin` weights to safetensors (weights-only
    loading), and checks them like an upload; the manifest records the repo and its commit."""
    check_adapter(request, body.name)
    manifest = await asyncio.to_thread(
        import_from_hub,
        store,
        body.name,
        body.repo_id,
        revision=body.revision,
        subfolder=body.subfolder,
        expected_base=engine.base_ref,
        check=_fit_check(engine, settings),
        overwrite=body.overwrite,
        max_bytes=settings.max_upload_bytes,
    )
    return info(manifest, await residency(cache))


@router.get(
    "/{name:adapter}/archive",
    response_class=FileResponse,
    responses=error_responses(404, 422),
    summary="Download a stored adapter as an archive (its weights: `download` or `admin` scope)",
)
async def download_adapter(
    name: str,
    store: StoreDep,
    _access: DownloadAdapterAccess,
    format: Literal["zip", "tar.gz"] = "zip",
) -> FileResponse:
    folder = Path(tempfile.mkdtemp(prefix="export-"))
    try:
        version = (await asyncio.to_thread(store.get, name)).manifest.version
        filename = f"{fmt.folder_name(name)}-v{version}.{format}"
        path = await asyncio.to_thread(
            store.export_archive, name, folder / filename, archive_format=format
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    cleanup = BackgroundTask(shutil.rmtree, folder, ignore_errors=True)
    return FileResponse(path, filename=filename, background=cleanup)


@router.delete("/{name:adapter}", response_model=AdapterInfo, responses=error_responses(404, 422))
async def delete_adapter(
    name: str, store: StoreDep, cache: CacheDep, batcher: BatcherDep, _access: AdminAdapterAccess
) -> AdapterInfo:
    """Remove the adapter from the store and unload it; later requests get 404."""
    manifest = await asyncio.to_thread(store.delete, name)
    await batcher.run_exclusive(cache.unload, name)
    return info(manifest, await residency(cache))


@router.post(
    "/{name:adapter}/load", response_model=AdapterInfo, responses=error_responses(404, 422)
)
async def load_adapter(
    name: str, store: StoreDep, cache: CacheDep, batcher: BatcherDep, _access: AdminAdapterAccess
) -> AdapterInfo:
    """Make the adapter resident now (idempotent), evicting the least recently used."""
    await batcher.run_exclusive(cache.ensure, name)
    return info((await asyncio.to_thread(store.get, name)).manifest, await residency(cache))


@router.post(
    "/{name:adapter}/unload", response_model=AdapterInfo, responses=error_responses(404, 422)
)
async def unload_adapter(
    name: str, store: StoreDep, cache: CacheDep, batcher: BatcherDep, _access: AdminAdapterAccess
) -> AdapterInfo:
    """Evict the adapter from the device (idempotent); it reloads on its next use."""
    stored = await asyncio.to_thread(store.get, name)
    await batcher.run_exclusive(cache.unload, name)
    return info(stored.manifest, await residency(cache))
