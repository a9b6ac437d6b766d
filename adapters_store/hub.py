"""Import an adapter from a Hugging Face hub repository into the store.

The repo id, revision (a branch, tag or 40-hex commit) and subfolder are checked as text first
(`hub_refs`: the hub library joins them into cache paths). The hub's listing of the repo is read
next: the adapter's files (exact names, in the repo's root or one plain `subfolder`; glob
characters are refused) must be under the file-count and size caps as listed, before anything is
downloaded. Only those files are then downloaded (`huggingface_hub.snapshot_download`, pinned to
the listed commit, into the usual hub cache; without a reachable hub only the cache is read),
copied out of the cache (every path resolved, and refused outside the repo's folder of the
cache), converted from `.bin` to safetensors where needed, and imported exactly like an uploaded
archive: names, file count and sizes, base model, and the caller's fit check. The manifest
records `source: hub` with the repo, the requested revision and the commit it resolved to.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from adapters_store import format as fmt
from adapters_store import hub_refs
from adapters_store.archive import DEFAULT_MAX_FILES, DEFAULT_MAX_TOTAL_BYTES
from adapters_store.convert import PICKLED_WEIGHTS
from adapters_store.errors import (
    AdapterExists,
    ArchiveTooLarge,
    HubError,
    HubUnavailable,
    InvalidAdapter,
)
from adapters_store.store import AdapterStore

WANTED = (*fmt.REQUIRED_FILES, fmt.MODEL_CARD, *PICKLED_WEIGHTS)


def _patterns(subfolder: str | None) -> list[str]:
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    return [prefix + name for name in WANTED]


def list_files(
    repo_id: str, *, revision: str | None, subfolder: str | None, token: str | None
) -> tuple[str, dict[str, int | None]] | None:
    """(commit, {path: size}) of the adapter's files as the hub lists them, or None when the
    hub cannot be reached (offline mode included): then only the local cache is used."""
    import requests
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True, token=token)
    except (requests.ConnectionError, requests.Timeout, OfflineModeIsEnabled):
        return None
    except Exception as exc:  # not found, bad id, gated, server error: mapped like a download
        raise _hub_error(exc, repo_id, revision) from None
    if not hub_refs.COMMIT.fullmatch(str(info.sha)):
        raise HubError(f"the hub lists no commit for {repo_id}@{revision or 'main'}")
    wanted = set(_patterns(subfolder))
    files = {s.rfilename: s.size for s in info.siblings or [] if s.rfilename in wanted}
    return str(info.sha), files


def _check_listed(repo_id: str, files: dict[str, int | None], *, max_files: int, max_bytes: int):
    if not files:
        raise InvalidAdapter(f"{repo_id} lists no adapter files")
    if len(files) > max_files:
        raise ArchiveTooLarge(f"{len(files)} files; the cap is {max_files}")
    unsized = sorted(path for path, size in files.items() if size is None)
    if unsized:
        raise HubError(f"the hub lists no size for {unsized[0]}; nothing was downloaded")
    total = sum(size or 0 for size in files.values())
    if total > max_bytes:
        raise ArchiveTooLarge(
            f"the adapter's files in {repo_id} hold {total} bytes as the hub lists them; the "
            f"cap is {max_bytes}; nothing was downloaded"
        )


def _not_cached(repo_id: str, revision: str | None) -> HubUnavailable:
    """The one answer of a revision the cache does not hold: the same whatever the cache's
    files point at, so it tells nothing of paths outside the cache."""
    return HubUnavailable(
        f"{repo_id}@{revision or 'main'} is not in the local hub cache and the hub "
        "cannot be reached (offline?)"
    )


def _hub_error(exc: Exception, repo_id: str, revision: str | None, *, local: bool) -> Exception:
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError | HFValidationError):
        return HubError(f"{repo_id}@{revision or 'main'}: {_first_line(exc)}")
    if isinstance(exc, LocalEntryNotFoundError) or (local and isinstance(exc, OSError)):
        return _not_cached(repo_id, revision)
    if isinstance(exc, HfHubHTTPError | OSError | ValueError):
        return HubUnavailable(f"downloading {repo_id} failed: {_first_line(exc)}")
    return exc


def download(
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | None = None,
    max_files: int = DEFAULT_MAX_FILES,
    max_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> tuple[Path, str]:
    """The adapter's folder inside the hub cache, and the commit hash it was resolved to.

    The repo id, revision and subfolder are checked as text first (`hub_refs`). The hub's
    listing of the repo (with file sizes) is then read and the files are refused over the caps
    before any is downloaded; the download is pinned to the listed commit. When the hub cannot
    be reached, only what the cache already holds is used. Either way the snapshot must lie in
    the repo's own folder of the cache."""
    from huggingface_hub import snapshot_download

    hub_refs.check_repo_id(repo_id)
    hub_refs.check_revision(revision)
    subfolder = hub_refs.check_subfolder(subfolder)
    listed = list_files(repo_id, revision=revision, subfolder=subfolder, token=token)
    if listed is not None:
        _check_listed(repo_id, listed[1], max_files=max_files, max_bytes=max_bytes)
    try:
        snapshot = Path(
            snapshot_download(
                repo_id,
                revision=listed[0] if listed else revision,
                allow_patterns=sorted(listed[1]) if listed else _patterns(subfolder),
                cache_dir=cache_dir,
                token=token,
                local_files_only=listed is None,
            )
        )
    except Exception as exc:
        raise _hub_error(exc, repo_id, revision, local=listed is None) from None
    return _confined(snapshot, repo_id, revision, subfolder, cache_dir)


def _confined(
    snapshot: Path,
    repo_id: str,
    revision: str | None,
    subfolder: str | None,
    cache_dir: str | Path | None,
) -> tuple[Path, str]:
    """(the adapter's folder, the commit) when the snapshot is `<repo>/snapshots/<commit>` of
    the cache (links resolved) and the subfolder lies in it; a snapshot anywhere else (a cache
    file that names a path) is answered like a revision the cache does not hold."""
    snapshots = hub_refs.repo_cache_dir(repo_id, cache_dir) / "snapshots"
    commit = snapshot.name  # the cache keeps each snapshot under snapshots/<commit hash>
    real = hub_refs.inside(snapshot, snapshots)
    if real is None or real.parent != snapshots or not hub_refs.COMMIT.fullmatch(commit):
        raise _not_cached(repo_id, revision)
    folder = hub_refs.inside(real / subfolder, real) if subfolder else real
    if folder is None or not folder.is_dir():
        raise InvalidAdapter(f"{repo_id}@{commit[:12]} has no adapter files in {subfolder or '/'}")
    return folder, commit


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def copy_out(folder: Path, dest: Path, *, within: Path, max_files: int, max_bytes: int) -> Path:
    """Copy the downloaded files into `dest`, under caps. The cache holds links to its blobs:
    each is resolved and must lie in `within` (the repo's folder of the cache)."""
    files: list[tuple[str, Path]] = []
    for path in sorted(folder.iterdir()):
        if path.name not in WANTED:
            continue
        real = hub_refs.inside(path, within)
        if real is None:
            raise InvalidAdapter(f"{path.name} is not a file of the hub cache")
        if real.is_file():
            files.append((path.name, real))
    if len(files) > max_files:
        raise ArchiveTooLarge(f"{len(files)} files; the cap is {max_files}")
    total = sum(real.stat().st_size for _, real in files)
    if total > max_bytes:
        raise ArchiveTooLarge(f"the adapter's files hold {total} bytes; the cap is {max_bytes}")
    for name, real in files:
        shutil.copyfile(real, dest / name)
    return dest


def import_from_hub(
    store: AdapterStore,
    name: str,
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    expected_base: fmt.BaseModelRef | None = None,
    check: Callable[[Path], None] | None = None,
    overwrite: bool = False,
    max_bytes: int | None = None,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> fmt.Manifest:
    fmt.validate_name(name)
    subfolder = hub_refs.check_subfolder(subfolder)
    if not overwrite and store.exists(name):  # before a download that would be thrown away
        raise AdapterExists(f"adapter {name!r} already exists (pass overwrite to replace)")
    limit = min(max_bytes or store.max_total_bytes, store.max_total_bytes)
    folder, commit = download(
        repo_id, revision=revision, subfolder=subfolder, cache_dir=cache_dir, token=token,
        max_files=store.max_files, max_bytes=limit,
    )  # fmt: skip
    origin = fmt.HubOrigin(
        repo_id=repo_id, revision=revision or "main", commit=commit, subfolder=subfolder
    )
    with store.scratch() as scratch:
        within = hub_refs.repo_cache_dir(repo_id, cache_dir)
        copy_out(folder, scratch, within=within, max_files=store.max_files, max_bytes=limit)
        return store.import_dir(
            name,
            scratch,
            expected_base=expected_base,
            overwrite=overwrite,
            check=check,
            hub=origin,
        )
