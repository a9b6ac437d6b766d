"""Tiny datasets of each task shape, built from the keyword vocabulary (tests/support/tiny.py).

- multi-label: `labels` lists of "positive" / "negative" / "question" (a sentence may hold a
  positive and a negative keyword, and a question word), or none of them;
- regression: `score` = 0.5 x the number of positive keywords + 0.25 (never an integer);
- pairs: `text`, `text_pair`, `label` 1 when both halves carry the same polarity.
"""

from __future__ import annotations

import random

from tests.support.tiny import FILLER, NEGATIVE, POSITIVE

QUESTION = ["why", "how", "what"]
MULTI_LABELS = ["negative", "positive", "question"]


def _words(rng: random.Random, extra: list[str]) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
    for word in extra:
        words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def multi_label_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [name for name in MULTI_LABELS if rng.random() < 0.4]
        pool = {"negative": NEGATIVE, "positive": POSITIVE, "question": QUESTION}
        rows.append({"text": _words(rng, [rng.choice(pool[x]) for x in labels]), "labels": labels})
    return rows


def regression_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(0, 3)
        rows.append({"text": _words(rng, rng.sample(POSITIVE, k)), "score": 0.5 * k + 0.25})
    return rows


def pair_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 1), rng.randint(0, 1)
        first = _words(rng, [rng.choice(POSITIVE if a else NEGATIVE)])
        second = _words(rng, [rng.choice(POSITIVE if b else NEGATIVE)])
        rows.append({"text": first, "text_pair": second, "label": int(a == b)})
    return rows
