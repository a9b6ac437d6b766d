"""bench/serve.py's results: one measured cell, the table rows and the goals' verdicts."""

from __future__ import annotations

from dataclasses import dataclass

from bench.proctree import roles_text

MIX = ("seq_bn", "lora", "ia3", "prefix_tuning")


@dataclass
class Cell:
    kind: str
    adapters: int
    clients: int
    requests: int
    errors: int
    texts_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float | None = None
    load: float = 0.0
    cpu_ms: dict[str, float] | None = None  # server CPU ms per request per role (proctree)


def mix_goal(cells: list[Cell]) -> list[str]:
    """The mixed cell against each method's share in its own homogeneous passes."""
    mixed = next((c for c in cells if c.kind == "mixed"), None)
    alone = {c.kind: c.texts_s for c in cells if c.kind in MIX}
    if mixed is None or len(alone) != len(MIX) or min(alone.values()) <= 0:
        return []
    own = 1 / sum(1 / len(MIX) / alone[m] for m in MIX)
    r = mixed.texts_s / own
    shares = ", ".join(f"{m} {alone[m]:.1f}" for m in MIX)
    verdict = "met" if r >= 0.9 else "NOT met"
    return [
        f"each method alone ({mixed.adapters // len(MIX)} adapters, {mixed.clients} clients), "
        f"texts/s: {shares}; the mix in own passes would get {own:.1f}",
        f"{mixed.adapters} adapters over {len(MIX)} methods: {mixed.texts_s:.1f} texts/s = "
        f"{r:.2f}x own passes (goal >= 0.9: {verdict})",
    ]


def row(c: Cell) -> str:
    batch = f"{c.mean_batch:.1f}" if c.mean_batch is not None else "-"
    return (
        f"| {c.kind} | {c.adapters} | {c.clients} | {c.texts_s:.1f} | {c.p50_ms:.1f} | "
        f"{c.p99_ms:.1f} | {batch} | {c.errors} | {c.load:.1f} | "
        f"{roles_text(c.cpu_ms) if c.cpu_ms else '-'} |"
    )


def goals(cells: list[Cell], raw: tuple[int, float, float], opts) -> list[str]:
    size, raw_texts_s, one_ms = raw

    def find(kind: str, adapters: int, clients: int) -> Cell | None:
        match = (kind, adapters, clients)
        return next((c for c in cells if (c.kind, c.adapters, c.clients) == match), None)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = [f"best raw: batch {size}, {raw_texts_s:.1f} texts/s; raw batch-1 {one_ms:.1f} ms"]
    for cell in (c for c in cells if c.kind == "served" and c.adapters == 1):
        r = cell.texts_s / raw_texts_s
        lines.append(
            f"{cell.clients} client(s), 1 adapter: {cell.texts_s:.1f} texts/s = {r:.2f}x best "
            f"raw (goal >= 0.9: {verdict(r >= 0.9)})"
        )
    top = max(opts.clients)
    one = find("served", 1, top)
    for count in (a for a in opts.adapters if a > 1):
        if one and one.texts_s > 0 and (many := find("served", count, top)):  # 0: none done
            r = many.texts_s / one.texts_s
            lines.append(
                f"{count} adapters vs 1 at {top} clients: {r:.2f}x (goal >= 0.9: "
                f"{verdict(r >= 0.9)})"
            )
    if lone := find("served", 1, 1):
        limit = one_ms + 5
        lines.append(
            f"1 client p50 {lone.p50_ms:.1f} ms vs raw batch-1 forward {one_ms:.1f} ms + 5 = "
            f"{limit:.1f} ms ({verdict(lone.p50_ms <= limit)})"
        )
    for n in (c for c in cells if c.kind == "naive"):
        if n.texts_s > 0 and (s := find("served", n.adapters, n.clients)):
            r = s.texts_s / n.texts_s
            lines.append(
                f"{n.adapters} adapter(s), {n.clients} clients: {r:.2f}x the naive pipeline "
                f"server (goal >= 3: {verdict(r >= 3)})"
            )
    return lines
