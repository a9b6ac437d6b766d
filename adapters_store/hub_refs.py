"""What a hub import may name (a repo id, a revision, a subfolder), and where it may read.

`huggingface_hub` builds cache paths from these values: without a reachable hub it reads the
commit from `refs/<revision>` and returns `snapshots/<that commit>`, both joined as paths, so a
revision that is an absolute path or holds `..` reads any file or folder on the server (issue
26). So every value is checked as text before the hub or its cache is asked, and everything the
cache hands back is resolved and must lie in the repo's own folder of the cache.

- repo id: `name` or `owner/name`, each part ASCII letters, digits, '.', '_', '-' (no `..`,
  no `--`), at most 96 characters: what the hub itself accepts.
- revision: a 40-hex commit, or a branch or tag name following git's check-ref-format rules
  (roughly): parts of ASCII letters, digits, '.', '_', '-', '+' joined by single '/'; no part
  empty, starting with '.', '-' or '+', or ending in '.lock'; no `..`; not ending in '.'.
- subfolder: a relative folder path inside the repo: parts of letters, digits, '_', '-', '.',
  spaces (not at a part's ends), no `.` or `..` part, no leading '/', no glob characters.
"""

from __future__ import annotations

import re
from pathlib import Path

from adapters_store.errors import HubError

COMMIT = re.compile(r"\A[0-9a-f]{40}\Z")
MAX_REPO_ID = 96
MAX_REVISION = 255
MAX_SUBFOLDER = 255
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"\A(?:{_REPO_PART}/)?{_REPO_PART}\Z")
_REF_PART = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9._+-]*\Z")
_FOLDER_PART = re.compile(r"\A[A-Za-z0-9_.-](?:[A-Za-z0-9_. -]*[A-Za-z0-9_.-])?\Z")


def check_repo_id(repo_id: str) -> str:
    bad = "--" in repo_id or ".." in repo_id or len(repo_id) > MAX_REPO_ID
    if bad or not _REPO_ID.fullmatch(repo_id):
        raise HubError(
            f"repo_id {repo_id[:100]!r} must be a hub repo id: 'name' or 'owner/name' of ASCII "
            f"letters, digits, '.', '_', '-' (no '..' or '--'), at most {MAX_REPO_ID} characters"
        )
    return repo_id


def _ref_ok(revision: str) -> bool:
    if not 0 < len(revision) <= MAX_REVISION or ".." in revision or revision.endswith("."):
        return False
    parts = revision.split("/")
    return all(_REF_PART.fullmatch(p) and not p.endswith(".lock") for p in parts)


def check_revision(revision: str | None) -> str | None:
    """The revision when it is a commit, branch or tag name (None: the default branch)."""
    if revision is None or COMMIT.fullmatch(revision) or _ref_ok(revision):
        return revision
    raise HubError(
        f"revision {revision[:100]!r} must be a branch, tag or 40-hex commit: parts of ASCII "
        "letters, digits, '.', '_', '-', '+' joined by '/', none empty or starting with '.', "
        "'-' or '+', no '..', no ending in '.' or '.lock' (git's ref-name rules)"
    )


def check_subfolder(subfolder: str | None) -> str | None:
    """The subfolder without a trailing '/' (None or '' : the repo's root)."""
    if not subfolder:
        return None
    parts = subfolder.removesuffix("/").split("/")
    ok = len(subfolder) <= MAX_SUBFOLDER and all(
        _FOLDER_PART.fullmatch(p) and p not in (".", "..") for p in parts
    )
    if not ok:
        raise HubError(
            f"subfolder {subfolder[:100]!r} must be a folder path inside the repo: letters, "
            "digits, '_', '-', '.', spaces and '/' (no glob patterns, no '.' or '..' parts, "
            "no leading '/')"
        )
    return "/".join(parts)


def repo_cache_dir(repo_id: str, cache_dir: str | Path | None) -> Path:
    """The repo's own folder in the hub cache (resolved), as `huggingface_hub` names it."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    root = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    return (root / repo_folder_name(repo_id=repo_id, repo_type="model")).resolve()


def inside(path: Path, folder: Path) -> Path | None:
    """`path` resolved (links followed) when it lies in `folder` (resolved), else None."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a link loop, a name too long
        return None
    return resolved if resolved.is_relative_to(folder) else None
