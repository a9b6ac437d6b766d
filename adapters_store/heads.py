"""What an adapter's prediction head computes, read from the adapters library's head_config.json.

Supported head types: ``classification`` (num_labels >= 2: single_label, softmax; num_labels
== 1: regression, the logit is the value) and ``multilabel_classification`` (multi_label,
sigmoid per label, each label against its threshold). Any other head type (tagging, question
answering, multiple choice, ...) is refused with InvalidAdapter (HTTP 422).
"""

from __future__ import annotations

from typing import Any

from adapters_store import format as fmt
from adapters_store.errors import InvalidAdapter
from adapters_store.tasks import HEAD_TASKS

DEFAULT_THRESHOLD = 0.5


def head_task(head_config: dict) -> str:
    """The task of a head config: single_label, multi_label or regression."""
    config = head_config.get("config")
    head_type = config.get("head_type") if isinstance(config, dict) else None
    if head_type not in HEAD_TASKS:
        supported = ", ".join(HEAD_TASKS)
        raise InvalidAdapter(
            f"head_config.json describes a head of type {str(head_type)[:60]!r}; supported "
            f"head types: {supported} (1 label: regression)"
        )
    if head_type == "classification" and config.get("num_labels") == 1:
        return "regression"
    return HEAD_TASKS[head_type]


def head_labels(head_config: dict) -> dict[int, str]:
    """id2label of a supported head (`labels_from_head_config` reads classification heads)."""
    task = head_task(head_config)
    config = dict(head_config["config"], head_type="classification")
    labels = fmt.labels_from_head_config({**head_config, "config": config})
    if task == "regression" and labels == {0: "LABEL_0"}:
        return {0: "score"}
    return labels


def head_fields(
    info: dict[str, Any], prior: fmt.Manifest | None, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """labels, task, thresholds and text_pair of a manifest for a folder inspected with
    `inspect_folder` (`info`): the head decides labels and task; thresholds and text_pair come
    from `given` (training), else from the folder's own manifest when it describes the same
    head, else defaults (multi_label: 0.5 per label)."""
    labels, task = info["labels"], info["task"]
    extra = dict(given or {})
    if not extra and prior is not None and prior.task == task and prior.labels == labels:
        extra = {"thresholds": prior.thresholds, "text_pair": prior.text_pair}
    thresholds = extra.get("thresholds")
    if task == "multi_label":
        thresholds = _thresholds(thresholds, labels)
    return {
        "labels": labels,
        "task": task,
        "thresholds": thresholds if task == "multi_label" else None,
        "text_pair": bool(extra.get("text_pair", False)),
    }


def _thresholds(given: dict[int, float] | None, labels: dict[int, str]) -> dict[int, float]:
    if given is None:
        return dict.fromkeys(labels, DEFAULT_THRESHOLD)
    if sorted(given) != sorted(labels) or not all(0.0 <= t <= 1.0 for t in given.values()):
        raise InvalidAdapter("thresholds must give each label index a value between 0 and 1")
    return {int(i): float(t) for i, t in given.items()}
