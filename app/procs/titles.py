"""What every process of the group does first: its title in ps/top, and dying with its parent."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def set_title(title: str) -> None:
    """`adapter-serve: engine`, `adapter-serve: api 2`, ... (the setproctitle package)."""
    from setproctitle import setproctitle

    setproctitle(title)


def stop_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux: get `sig` when the supervisor dies (even by kill -9), so no process outlives it."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
