"""What a head's logits mean, per task (the manifest's `task`): the one renderer of answers.

Pure (no app, no HTTP): the engine returns each row's raw logits; every protocol (app/api) and
training's predictions turn them into answers here, with `render`:
- single_label: softmax over the labels, ranked (the text-classification pipeline's shape);
- multi_label: a sigmoid per label, and the labels whose sigmoid reaches their threshold (the
  request's `threshold`, else the one stored for the label, else 0.5);
- regression: the one logit is the number.
`function_to_apply` (softmax | sigmoid | none) overrides the task's default function for the
scores, as in the Hugging Face pipeline; the labels over threshold are always decided on the
sigmoid, so a threshold keeps its meaning whatever the scores show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Function = Literal["softmax", "sigmoid", "none"]
DEFAULT_FUNCTION: dict[str, Function] = {
    "single_label": "softmax",
    "multi_label": "sigmoid",
    "regression": "none",
}
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Head:
    """What one adapter's head computes (from its manifest)."""

    labels: dict[int, str]
    task: str = "single_label"
    thresholds: dict[int, float] | None = None

    def label(self, index: int) -> str:
        return self.labels.get(index, f"LABEL_{index}")

    def threshold(self, index: int, override: float | None = None) -> float:
        if override is not None:
            return override
        return (self.thresholds or {}).get(index, DEFAULT_THRESHOLD)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def apply(function: str, logits: Sequence[float]) -> list[float]:
    """`function` (softmax | sigmoid | none) of one row's logits."""
    if function == "softmax":
        return softmax(logits)
    if function == "sigmoid":
        return [sigmoid(x) for x in logits]
    return [float(x) for x in logits]


def scores(head: Head, logits: Sequence[float], function: str | None = None) -> list[float]:
    """One row's scores: `function`, else the task's own (softmax, sigmoid, the number)."""
    return apply(function or DEFAULT_FUNCTION.get(head.task, "softmax"), logits)


def ranked(scored: Sequence[float], top_k: int | None) -> list[int]:
    """The indices of the best `top_k` scores (every one when None), best first."""
    order = sorted(range(len(scored)), key=lambda i: -scored[i])
    return order if top_k is None else order[:top_k]


def rank(scored: Sequence[float], labels: dict[int, str], top_k: int | None) -> list[dict]:
    """Pipeline-shaped predictions: [{"label", "score"}] sorted by score, the best `top_k`."""
    return [
        {"label": labels.get(i, f"LABEL_{i}"), "score": scored[i]} for i in ranked(scored, top_k)
    ]


def over_threshold(head: Head, logits: Sequence[float], threshold: float | None) -> list[int]:
    """Multi-label: the indices whose sigmoid reaches the threshold, best first."""
    probs = [sigmoid(x) for x in logits]
    chosen = [i for i, p in enumerate(probs) if p >= head.threshold(i, threshold)]
    return sorted(chosen, key=lambda i: -probs[i])


@dataclass(frozen=True)
class Answer:
    """One adapter's answers to its rows, per task: what every protocol encodes its own way."""

    head: Head
    logits: list[list[float]]  # the head's raw outputs, in label order
    scores: list[list[float]]  # per row: the task's function (or the request's) of the logits
    orders: list[list[int]]  # per row: label indices ranked best first (the best `top_k`)
    chosen: list[list[int]] | None  # multi_label: per row, the labels over threshold, best first

    def predictions(self) -> list[list[dict]]:
        """Pipeline-shaped predictions per row: [{"label", "score"}], best first."""
        label = self.head.label
        return [
            [{"label": label(i), "score": row[i]} for i in order]
            for row, order in zip(self.scores, self.orders, strict=True)
        ]

    def numbers(self) -> list[float]:
        """Regression: the one number of each row."""
        return [row[0] for row in self.scores]

    def labels_over_threshold(self) -> list[list[str]]:
        return [[self.head.label(i) for i in row] for row in self.chosen or []]


def render(
    head: Head,
    logits: Sequence[Sequence[float]],
    *,
    function: str | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
) -> Answer:
    """The answers of one adapter's head to its rows' `logits` (see the module's doc)."""
    rows = [scores(head, row, function) for row in logits]
    multi = head.task == "multi_label"
    return Answer(
        head=head,
        logits=[list(row) for row in logits],
        scores=rows,
        orders=[ranked(row, top_k) for row in rows],
        chosen=[over_threshold(head, row, threshold) for row in logits] if multi else None,
    )
