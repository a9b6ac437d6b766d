"""The Open Inference Protocol's outputs, per task of the adapter (app.serving.tasks).

| task | outputs (datatype, shape) |
|---|---|
| single_label | `labels` BYTES [n, k], `probabilities` FP32 [n, k], `logits` FP32 [n, labels] |
| multi_label | the same, and `over_threshold` BOOL [n, k] |
| regression | `score` FP32 [n, 1], `logits` FP32 [n, 1] |

`labels`, `probabilities` and `over_threshold` are ranked best first (`k`: every label, or the
parameter `top_k`); `probabilities` holds the task's scores (softmax; sigmoid for multi-label)
or those of the parameter `function_to_apply` (softmax | sigmoid | none); `over_threshold`
says whether each ranked label's sigmoid reaches its threshold (the parameter `threshold`, else
the adapter's own). `logits` are the head's raw outputs in label order.
"""

from __future__ import annotations

from typing import Any

from app.api.errors import InvalidRequest
from app.serving import tasks
from app.serving.passes import AdapterResult

_RANKED = {"labels": "BYTES", "probabilities": "FP32"}
OUTPUTS: dict[str, dict[str, str]] = {
    "single_label": {**_RANKED, "logits": "FP32"},
    "multi_label": {**_RANKED, "over_threshold": "BOOL", "logits": "FP32"},
    "regression": {"score": "FP32", "logits": "FP32"},
}
FUNCTIONS = ("softmax", "sigmoid", "none")


def outputs_of(task: str) -> dict[str, str]:
    return OUTPUTS.get(task, OUTPUTS["single_label"])


def output_metadata(task: str) -> list[dict]:
    shape = [-1, 1] if task == "regression" else [-1, -1]
    return [{"name": n, "datatype": d, "shape": shape} for n, d in outputs_of(task).items()]


def requested_outputs(payload: dict, task: str) -> list[str] | None:
    """The output names asked for (None: every output of the task); 422 for unknown ones."""
    requested = payload.get("outputs")
    if requested is None:
        return None
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise InvalidRequest("'outputs' must be a list of objects")
    names = [o.get("name") for o in requested]
    known = outputs_of(task)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidRequest(
            f"unknown output {unknown[0]!r}; this adapter's outputs are {', '.join(known)}"
        )
    return names


def parameters(payload: dict) -> dict[str, Any]:
    """The request parameters we read: top_k, function_to_apply, threshold (checked)."""
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidRequest("'parameters' must be an object")
    top_k = params.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise InvalidRequest("parameter top_k must be a positive integer")
    function = params.get("function_to_apply")
    if function is not None and function not in FUNCTIONS:
        raise InvalidRequest(f"parameter function_to_apply must be one of {', '.join(FUNCTIONS)}")
    threshold = params.get("threshold")
    if threshold is not None and (
        not isinstance(threshold, int | float) or isinstance(threshold, bool)
    ):
        raise InvalidRequest("parameter threshold must be a number")
    if threshold is not None and not 0 <= threshold <= 1:
        raise InvalidRequest("parameter threshold must be between 0 and 1")
    return {"top_k": top_k, "function": function, "threshold": threshold}


def columns(result: AdapterResult, params: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Every output of the result's task, as rows."""
    head = result.head
    rows = [tasks.scores(head, logits, params["function"]) for logits in result.logits]
    out: dict[str, list[list[Any]]] = {"logits": [list(row) for row in result.logits]}
    if head.task == "regression":
        out["score"] = [[row[0]] for row in rows]
        return out
    orders = [tasks.ranked(row, params["top_k"]) for row in rows]
    out["labels"] = [[head.label(i) for i in order] for order in orders]
    pairs = list(zip(rows, orders, strict=True))
    out["probabilities"] = [[row[i] for i in order] for row, order in pairs]
    if head.task == "multi_label":
        chosen = [set(tasks.over_threshold(head, lg, params["threshold"])) for lg in result.logits]
        out["over_threshold"] = [[i in c for i in o] for o, c in zip(orders, chosen, strict=True)]
    return out


def render_outputs(
    result: AdapterResult, params: dict[str, Any], wanted: list[str] | None
) -> list[dict]:
    """The response's `outputs`: the wanted ones (every one when None) of the result's task."""
    available = outputs_of(result.head.task)
    names = list(available) if wanted is None else wanted
    missing = [n for n in names if n not in available]
    if missing:  # the adapter was replaced by one of another task while the request ran
        raise InvalidRequest(f"output {missing[0]!r} is not one of this adapter's outputs now")
    data = columns(result, params)
    return [
        {
            "name": name,
            "datatype": available[name],
            "shape": [len(data[name]), len(data[name][0])],
            "data": [v for row in data[name] for v in row],
        }
        for name in names
    ]
