"""The GPU check's shared pieces: its results, its printer, and `part`, which runs one part
of the check and records a failure instead of stopping (bench/gpu_check.py).
"""

from __future__ import annotations

import time
import traceback

RESULTS: dict = {}


def say(line: str) -> None:
    print(line, flush=True)


def part(name: str):
    """Run a part; record and print its failure instead of stopping the check."""

    def wrap(fn):
        def run(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # report, keep going
                RESULTS[name] = {"error": f"{type(exc).__name__}: {exc}"}
                say(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
                traceback.print_exc(limit=3)
            finally:
                say(f"[{name}] {time.perf_counter() - started:.1f} s")

        return run

    return wrap
