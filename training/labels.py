"""Label sets: integer or string label columns, checked against the configured names."""

from __future__ import annotations

from typing import Any

from training.errors import TrainingError
from training.tasks import REGRESSION_TARGET, flat_values, regression_values

MAX_CLASSES = 1000


def resolve_label_names(
    ds: Any, column: str, label_names: list[str] | None, task: str = "single_label"
) -> list[str]:
    """The label set: given names, else ClassLabel names, sorted strings, or LABEL_i.

    Regression: one target name (the given one, else "score"); multi-label: the labels of
    all rows' lists together."""
    if task == "regression":
        regression_values(ds, column)
        return list(label_names or [REGRESSION_TARGET])[:1]
    values = flat_values(ds, column) if task == "multi_label" else label_values(ds, column)
    if all(isinstance(v, str) for v in values):
        names = label_names or sorted(values)
    else:
        feature = ds.features.get(column)
        feature_names = getattr(getattr(feature, "feature", feature), "names", None)
        top = max(values) + 1
        if not (label_names or feature_names) and top > MAX_CLASSES:
            raise TrainingError(f"label column {column!r} has label {top - 1}; max {MAX_CLASSES}")
        names = label_names or feature_names or [f"LABEL_{i}" for i in range(top)]
    check_label_values(values, names, column=column, where="the training data")
    if len(names) < 2:
        raise TrainingError(f"label column {column!r} has only one label; need at least 2")
    if len(names) > MAX_CLASSES:
        raise TrainingError(f"label column {column!r} has {len(names)} labels; max {MAX_CLASSES}")
    return names


def label_values(ds: Any, column: str) -> list[Any]:
    values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in ds.unique(column)]
    if any(v is None for v in values):
        raise TrainingError(f"label column {column!r} has missing values")
    is_int = [isinstance(v, int) and not isinstance(v, bool) for v in values]
    if not (all(is_int) or all(isinstance(v, str) for v in values)):
        kinds = sorted({type(v).__name__ for v in values})
        raise TrainingError(
            f"label column {column!r} must hold integers or strings, found {', '.join(kinds)}"
        )
    if all(is_int) and min(values) < 0:
        raise TrainingError(f"label column {column!r} has negative label {min(values)}")
    return values


def check_label_values(values: list[Any], names: list[str], *, column: str, where: str) -> None:
    """Every value must be a valid index into `names` (ints) or one of `names` (strings)."""
    if all(isinstance(v, str) for v in values):
        unknown = sorted(set(values) - set(names))
        if len(set(values)) > len(names):
            raise TrainingError(
                f"label column {column!r} in {where} has {len(set(values))} distinct labels but "
                f"only {len(names)} label names are configured: {', '.join(names)}",
                code="too_many_labels",
            )
        if unknown:
            raise TrainingError(
                f"label column {column!r} in {where} has labels not in the label set "
                f"{names}: {', '.join(map(repr, unknown[:5]))}",
                code="too_many_labels",
            )
        return
    outside = sorted(v for v in values if v >= len(names))
    if outside:
        raise TrainingError(
            f"label column {column!r} in {where} has label {outside[-1]}, outside "
            f"0..{len(names) - 1} for the {len(names)} configured labels ({', '.join(names)})",
            code="too_many_labels",
        )
