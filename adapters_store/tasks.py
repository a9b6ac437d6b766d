"""Task types and head kinds, declared once.

A task is what an adapter's head computes: one label of several (single_label, softmax), any
number of labels (multi_label, sigmoid per label against its threshold), or one number
(regression). The adapters library names head kinds by `head_type`; the two we serve map to
tasks here (a `classification` head of one label is regression).
"""

from __future__ import annotations

from typing import Literal, get_args

Task = Literal["single_label", "multi_label", "regression"]
TASKS: tuple[str, ...] = get_args(Task)
DEFAULT_TASK: Task = "single_label"

HEAD_TASKS: dict[str, str] = {
    "classification": "single_label",
    "multilabel_classification": "multi_label",
}
HEAD_TYPES = frozenset(HEAD_TASKS)
