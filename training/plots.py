"""Learning curves as a PNG (matplotlib, Agg backend: no display needed).

The input is the manifest's ``training["curves"]`` (see training.curves): the training loss
per logged step, the eval loss and accuracy / macro-F1 per evaluation, and the best step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters_store.format import CURVES_PNG

SCORE_LINES = (
    ("accuracy", "o-", "accuracy", "tab:green"),
    ("f1_macro", "s--", "macro-F1", "tab:purple"),
    ("f1", "^:", "F1", "tab:red"),
    ("f1_micro", "v-.", "micro-F1", "tab:brown"),
    ("pearson", "o-", "Pearson", "tab:cyan"),
    ("spearman", "s--", "Spearman", "tab:olive"),
)


def _points(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    kept = [r for r in rows if isinstance(r.get(key), int | float)]
    return [int(r["step"]) for r in kept], [float(r[key]) for r in kept]


def write_curves_file(training: dict[str, Any], folder: str | Path, *, title: str) -> Path | None:
    """`folder`/learning_curves.png from a training record's curves (None without curves)."""
    curves = training.get("curves")
    if not isinstance(curves, dict) or not (curves.get("train") or curves.get("eval")):
        return None
    return write_curves_png(curves, Path(folder) / CURVES_PNG, title=title)


def write_curves_png(curves: dict[str, Any], path: str | Path, *, title: str = "") -> Path:
    """Draw loss (left) and eval accuracy / macro-F1 (right) against the step; return path."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    train, evals = curves.get("train") or [], curves.get("eval") or []
    fig = Figure(figsize=(10, 4), dpi=100)
    loss_ax, score_ax = fig.subplots(1, 2)
    loss_ax.plot(*_points(train, "loss"), label="train loss", color="tab:blue", linewidth=1)
    loss_ax.plot(*_points(evals, "loss"), "o-", label="eval loss", color="tab:orange")
    loss_ax.set(xlabel="step", ylabel="loss", title="loss")
    for key, style, label, color in SCORE_LINES:
        steps, values = _points(evals, key)
        if values:
            score_ax.plot(steps, values, style, label=f"eval {label}", color=color)
    score_ax.set(xlabel="step", ylabel="score", title="evaluation")
    best = curves.get("best_step")
    for ax in (loss_ax, score_ax):
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", label=f"best step {best}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
