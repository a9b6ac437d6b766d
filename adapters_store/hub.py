"""Import an adapter from a Hugging Face hub repository into the store.

Only the files an adapter is made of are downloaded (`huggingface_hub.snapshot_download` with
allow-patterns, into the usual hub cache), copied out of the cache, converted from `.bin` to
safetensors where needed, and imported exactly like an uploaded archive: names, file count and
sizes, base model, and the caller's fit check. The manifest records `source: hub` with the repo,
the requested revision and the commit it resolved to.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from adapters_store import format as fmt
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


def _check_subfolder(subfolder: str | None) -> None:
    if not subfolder:
        return
    rel = PurePosixPath(subfolder)
    if rel.is_absolute() or ".." in rel.parts or "\\" in subfolder:
        raise HubError(f"subfolder {subfolder!r} must be a relative path inside the repo")


def download(
    repo_id: str,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> tuple[Path, str]:
    """The adapter's folder inside the hub cache, and the commit hash it was resolved to."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    _check_subfolder(subfolder)
    try:
        snapshot = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=_patterns(subfolder),
                cache_dir=cache_dir,
                token=token,
            )
        )
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as exc:
        raise HubError(f"{repo_id}@{revision or 'main'}: {_first_line(exc)}") from None
    except LocalEntryNotFoundError:
        raise HubUnavailable(
            f"{repo_id}@{revision or 'main'} is not in the local hub cache and the hub "
            "cannot be reached (offline?)"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise HubUnavailable(f"downloading {repo_id} failed: {_first_line(exc)}") from None
    commit = snapshot.name  # the cache keeps each snapshot under snapshots/<commit hash>
    folder = snapshot / subfolder if subfolder else snapshot
    if not folder.is_dir():
        raise InvalidAdapter(f"{repo_id}@{commit[:12]} has no adapter files in {subfolder or '/'}")
    return folder, commit


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def copy_out(folder: Path, dest: Path, *, max_files: int, max_bytes: int) -> Path:
    """Copy the downloaded files (the cache holds links to blobs) into `dest`, under caps."""
    files = [p for p in sorted(folder.iterdir()) if p.name in WANTED and p.is_file()]
    if len(files) > max_files:
        raise ArchiveTooLarge(f"{len(files)} files; the cap is {max_files}")
    total = sum(p.stat().st_size for p in files)
    if total > max_bytes:
        raise ArchiveTooLarge(f"the adapter's files hold {total} bytes; the cap is {max_bytes}")
    for path in files:
        shutil.copyfile(path, dest / path.name)  # follows the cache's link to its blob
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
    if not overwrite and store.exists(name):  # before a download that would be thrown away
        raise AdapterExists(f"adapter {name!r} already exists (pass overwrite to replace)")
    folder, commit = download(
        repo_id, revision=revision, subfolder=subfolder, cache_dir=cache_dir, token=token
    )
    origin = fmt.HubOrigin(
        repo_id=repo_id, revision=revision or "main", commit=commit, subfolder=subfolder
    )
    limit = min(max_bytes or store.max_total_bytes, store.max_total_bytes)
    with store.scratch() as scratch:
        copy_out(folder, scratch, max_files=store.max_files, max_bytes=limit)
        return store.import_dir(
            name,
            scratch,
            expected_base=expected_base,
            overwrite=overwrite,
            check=check,
            hub=origin,
        )
