"""Scratch folders inside a store root (`.tmp-<host>-<pid>-*`), removing those left behind, and
the store's write lock (`<root>/.lock`).

A writer builds a complete copy in a scratch folder before renaming it into place; a replace or
delete renames the old folder to `.trash-*` before removing it. A process that dies in between
leaves them behind: `remove_leftovers` removes them at the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def store_lock(root: Path) -> Iterator[None]:
    """The store's write lock: a file lock shared by every process using the same root."""
    with (root / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def scratch_dir(root: Path, *, keep: bool = False) -> Iterator[Path]:
    """A new scratch folder in `root`, removed on exit (unless `keep` and it was moved away)."""
    prefix = f".tmp-{socket.gethostname()}-{os.getpid()}-"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield path
    finally:
        if not keep or path.exists():
            shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(root: Path) -> int:
    """Remove scratch folders of dead processes on this host and every `.trash-*`; how many.

    Nothing reads a `.trash-*` folder (an old version renamed aside by a replace or delete
    that died before removing it), and removing one that a live process is deleting at the
    same time is harmless.
    """
    removed = 0
    mine = f".tmp-{socket.gethostname()}-"  # host names may hold '-' (Kubernetes pods)
    for child in root.glob(".tmp-*"):
        if not child.name.startswith(mine):
            continue
        pid = child.name[len(mine) :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    for child in root.glob(".trash-*"):
        shutil.rmtree(child, ignore_errors=True)
        removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True
