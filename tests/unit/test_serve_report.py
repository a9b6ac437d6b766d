"""bench.serve's goal lines: a window in which no request finished (a short smoke run on a
loaded box) leaves its ratio out instead of failing the whole report."""

from __future__ import annotations

from types import SimpleNamespace

from bench.serve_report import Cell, goals


def _cell(kind: str, adapters: int, texts_s: float) -> Cell:
    return Cell(kind, adapters, 64, requests=0, errors=0, texts_s=texts_s, p50_ms=0, p99_ms=0)


def test_a_window_with_nothing_done_leaves_its_ratio_out():
    opts = SimpleNamespace(clients=[64], adapters=[1, 64])
    idle = [_cell("served", 1, 0.0), _cell("served", 64, 0.0), _cell("naive", 1, 0.0)]
    lines = goals(idle, (8, 10.0, 5.0), opts)
    assert not any("adapters vs 1" in line or "naive" in line for line in lines)
    busy = [_cell("served", 1, 10.0), _cell("served", 64, 9.5)]
    assert any(
        "64 adapters vs 1 at 64 clients: 0.95x" in line
        for line in goals(busy, (8, 10.0, 5.0), opts)
    )
