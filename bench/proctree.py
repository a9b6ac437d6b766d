"""A server's processes as the benches read them from /proc: the whole tree, per role.

`python -m app --api-workers N` is a supervisor, one engine process and N API processes (and
the embedded training worker, when on); with one API process it is one process. Every bench
that reads the server's CPU or memory reads the server's pid **and every descendant**:

- `process_tree(pid)`: `pid` and its live descendants (parent ids of every /proc entry);
- `role_of(pid, root)`: a process's role, read off its title (`adapter-serve: engine`,
  `adapter-serve: api N`, set with setproctitle): `engine`, `api`, `main` (the root: the
  supervisor, or with one API process the whole server) or `other` (anything else it started);
  a zombie (exited, not yet reaped) has its parent's role, where reaping moves its CPU;
- `role_cpu_seconds(root)`: utime + stime per role, plus cutime + cstime (what reaped children
  used: a restarted process's CPU stays counted, with its parent's role);
- `tree_cpu_seconds(root)`: the same, summed;
- `role_rss_mb(root)`: VmRSS per role (API processes summed) and `total`; a sum of RSS counts
  the pages the processes share (libraries) once per process;
- `cpu_window(root, warmup, seconds)`: per-role CPU seconds spent in a window of a load that
  runs beside it in the same event loop (`await`ed with `asyncio.gather`).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

ROLES = ("engine", "api", "main", "other")


def stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (index 1: ppid, 11-14: times)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (from every process's parent id in /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat(int(entry))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def role_of(pid: int, root: int) -> str:
    if pid == root:
        return "main"
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "other"
    if not raw and (fields := stat(pid)) is not None:  # exiting or a zombie: no title left;
        return role_of(int(fields[1]), root)  # its parent's role, where reaping puts its CPU
    title = raw.split(b"\0")[0].decode()
    if title == "adapter-serve: engine":
        return "engine"
    return "api" if title.startswith("adapter-serve: api ") else "other"


def role_counts(root: int) -> dict[str, int]:
    """How many live processes (zombies left out) of each role `root`'s tree has."""
    counts = dict.fromkeys(ROLES, 0)
    for member in process_tree(root):
        if (fields := stat(member)) is not None and fields[0] != "Z":
            counts[role_of(member, root)] += 1
    return counts


def role_cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds (user + system, reaped children included) per role of `root`'s tree."""
    seconds = dict.fromkeys(ROLES, 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    for member in process_tree(root):
        if (fields := stat(member)) is not None:  # utime stime cutime cstime
            seconds[role_of(member, root)] += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    return seconds


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) of `root` and its descendants, reaped children included."""
    return sum(role_cpu_seconds(root).values())


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MiB (0 when it is gone or has no memory: a zombie)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return next((int(x.split()[1]) / 1024 for x in lines if x.startswith("VmRSS:")), 0.0)


def role_rss_mb(root: int) -> dict[str, float]:
    """VmRSS in MiB per role of `root`'s tree, and `total`."""
    out = dict.fromkeys(ROLES, 0.0)
    for member in process_tree(root):
        out[role_of(member, root)] += rss_mb(member)
    out["total"] = sum(out.values())
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {role: after[role] - before[role] for role in before}


def per_request(cpu: dict[str, float], requests: int) -> dict[str, float]:
    """CPU seconds per role -> CPU ms per request per role (NaN when nothing was answered)."""
    return {role: s * 1000 / requests if requests else float("nan") for role, s in cpu.items()}


async def cpu_window(root: int, warmup: float, seconds: float) -> dict[str, float]:
    """CPU seconds per role from `warmup` seconds on, for `seconds` (run it beside a load)."""
    await asyncio.sleep(warmup)
    before = role_cpu_seconds(root)
    await asyncio.sleep(seconds)
    return delta(before, role_cpu_seconds(root))


def roles_text(values: dict[str, float], fmt: str = ".2f") -> str:
    """`engine / api / main` as a table cell (main: the supervisor when split)."""
    return " / ".join(format(values.get(role, float("nan")), fmt) for role in ROLES[:3])
