"""The task of a label column: single-label, multi-label or regression, inferred or forced.

A label column holds integers or strings (one label per row: single_label), lists of integers
or strings (any number of labels per row: multi_label), or numbers with a fractional part (one
target value per row: regression). `--task` forces the reading where the data is ambiguous
(e.g. integer ratings as regression targets). Any other shape is refused with one line that
names the column and the shapes accepted.
"""

from __future__ import annotations

import math
from typing import Any

from adapters_store.tasks import Task
from training.errors import TrainingError

SHAPES = (
    "integers or strings (single_label), lists of integers or strings (multi_label), "
    "or numbers (regression)"
)
REGRESSION_TARGET = "score"


def bad_shape(column: str, found: str) -> TrainingError:
    return TrainingError(
        f"label column {column!r} holds {found}; a label column holds {SHAPES}",
        code="bad_label_shape",
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def column_kind(ds: Any, column: str) -> str:
    """'list', 'float', 'int' or 'str' from the column's feature (no full scan); else refuse."""
    feature = ds.features.get(column)
    name = type(feature).__name__
    if name in ("Sequence", "List", "LargeList"):
        inner = getattr(feature, "feature", None)
        inner_type = getattr(inner, "dtype", None) or type(inner).__name__
        if inner_type == "ClassLabel" or str(inner_type).startswith(("int", "uint", "string")):
            return "list"
        nested = inner_type in ("List", "Sequence", "LargeList")
        raise bad_shape(column, "lists of lists" if nested else f"lists of {inner_type}")
    if name == "ClassLabel":
        return "int"
    dtype = str(getattr(feature, "dtype", name))
    if dtype.startswith(("int", "uint")):
        return "int"
    if dtype.startswith("float"):
        return "float"
    if dtype in ("string", "large_string"):
        return "str"
    raise bad_shape(column, f"values of type {dtype}")


def infer_task(ds: Any, column: str, forced: str | None = None) -> Task:
    """The task the column's values imply, or `forced` where the values allow it."""
    kind = column_kind(ds, column)
    if kind == "float":
        values = [v for v in ds.unique(column) if v is not None]
        if any(not math.isfinite(v) for v in values):
            raise TrainingError(f"label column {column!r} has values that are not finite")
        natural: Task = "regression" if any(v != int(v) for v in values) else "single_label"
    else:
        natural = {"list": "multi_label", "int": "single_label", "str": "single_label"}[kind]
    if forced is None or forced == natural:
        return natural
    if forced == "regression" and kind in ("int", "float"):
        return "regression"
    if forced == "single_label" and kind == "float":
        raise bad_shape(column, "numbers with a fractional part (use task regression)")
    if forced == "multi_label" and kind in ("int", "str"):
        return "multi_label"  # one label per row is a multi-label set of one
    found = {"list": "lists", "str": "strings", "int": "integers", "float": "numbers"}[kind]
    raise TrainingError(
        f"task {forced!r} cannot use label column {column!r}: it holds {found}; a label "
        f"column holds {SHAPES}",
        code="bad_label_shape",
    )


def flat_values(ds: Any, column: str) -> list[Any]:
    """The distinct labels of a multi-label (list) or single-label column."""
    seen: set[Any] = set()
    for row in ds[column]:
        if row is None:
            raise TrainingError(f"label column {column!r} has missing values")
        seen.update(row if isinstance(row, list) else [row])
    kinds = {_kind(v) for v in seen}
    if not (kinds <= {"int"} or kinds <= {"str"}):
        raise bad_shape(column, f"lists of {', '.join(sorted(kinds))}")
    if kinds == {"int"} and min(seen) < 0:
        raise TrainingError(f"label column {column!r} has negative label {min(seen)}")
    return sorted(seen)


def multi_hot(row: Any, index: dict[str, int], size: int) -> list[float]:
    """A label list (names or ids; a bare label is a list of one) as a 0/1 vector."""
    out = [0.0] * size
    for value in row if isinstance(row, list) else [row]:
        out[index[value] if isinstance(value, str) else int(value)] = 1.0
    return out


def regression_values(ds: Any, column: str) -> None:
    """Refuse missing targets (regression labels need no name set)."""
    if any(v is None for v in ds.unique(column)):
        raise TrainingError(f"label column {column!r} has missing values")
