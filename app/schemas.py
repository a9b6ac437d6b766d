"""Request and response models of the HTTP API (pydantic; no FastAPI imports)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from adapters_store import BaseModelRef, HubOrigin
from adapters_store.tasks import Task
from app.serving.engine import Text

# Request models that hold texts: a ValidationError's own text never quotes the input (it may
# reach a log line, and logs hold no request text).
NO_INPUT_IN_ERRORS = ConfigDict(extra="forbid", hide_input_in_errors=True)


class TextPair(BaseModel):
    """One input as the Hugging Face text-classification pipeline takes a sentence pair."""

    model_config = NO_INPUT_IN_ERRORS

    text: StrictStr = Field(description="the first text")
    text_pair: StrictStr | None = Field(None, description="the second text of a pair")


Input = StrictStr | TextPair
FunctionToApply = Literal["softmax", "sigmoid", "none"]


def input_texts(inputs: Input | list[Input]) -> list[Text]:
    """Each input as the engine takes it: a string, or a (text, text_pair) tuple. ValueError
    naming the input (`inputs[2]`, `inputs[0].text_pair`) for an empty text or one that is not
    Unicode text (`unicode_error`)."""
    items = inputs if isinstance(inputs, list) else [inputs]
    if not items:
        raise ValueError("'inputs' is empty")
    return [_input_text(item, index) for index, item in enumerate(items)]


def _input_text(item: Input, index: int) -> Text:
    if isinstance(item, str):
        return _checked(item, index, "")
    text = _checked(item.text, index, ".text")
    return text if item.text_pair is None else (text, _checked(item.text_pair, index, ".text_pair"))


def _checked(text: str, index: int, part: str) -> str:
    problem = "holds an empty string" if not text else unicode_error(text)
    if problem is not None:
        raise ValueError(f"inputs[{index}]{part} {problem}")
    return text


def unicode_error(text: str) -> str | None:
    """What keeps `text` from being text to classify, None when nothing does: UTF-8 cannot
    encode an unpaired surrogate (which the JSON escape "\\ud800" makes), and the tokenizer
    would fail on it. It says where, never what the text holds."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode: an unpaired surrogate at character {exc.start}"
    return None


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        **NO_INPUT_IN_ERRORS,
        json_schema_extra={
            "examples": [
                {"adapter": "amazon-polarity", "inputs": ["great phone"], "top_k": 1},
                {"adapter": "paraphrase", "inputs": [{"text": "a cat", "text_pair": "a kitten"}]},
            ]
        },
    )

    adapter: StrictStr | None = Field(None, description="the adapter to classify with")
    adapters: list[StrictStr] | None = Field(
        None, min_length=1, max_length=16, description="several adapters, same inputs"
    )
    inputs: Input | list[Input] = Field(
        description="one input or a list; an input is a text or {text, text_pair}"
    )
    top_k: int | None = Field(
        1, ge=1, description="labels per input; null = all (multi-label default: all)"
    )
    truncation: bool = Field(True, description="cut texts over the token limit (else 422)")
    function_to_apply: FunctionToApply | None = Field(
        None, description="scores: softmax, sigmoid or none (raw logits); default per task"
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="multi-label: one threshold for every label"
    )

    @model_validator(mode="after")
    def _check(self) -> ClassifyRequest:
        if (self.adapter is None) == (self.adapters is None):
            raise ValueError("give exactly one of 'adapter' or 'adapters'")
        if self.adapters is not None and len(set(self.adapters)) != len(self.adapters):
            raise ValueError("'adapters' lists an adapter twice")
        input_texts(self.inputs)
        return self

    @property
    def texts(self) -> list[Text]:
        return input_texts(self.inputs)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters) if self.adapters is not None else [str(self.adapter)]

    def top_k_for(self, task: str) -> int | None:
        """`top_k` as sent; unsent, 1 label (single-label) or every label (multi-label)."""
        if "top_k" not in self.model_fields_set and task == "multi_label":
            return None
        return self.top_k


class Prediction(BaseModel):
    label: str
    score: float


class Score(BaseModel):
    score: float = Field(description="regression: the head's number (with function_to_apply)")


class ClassifyResponse(BaseModel):
    adapter: str
    version: int
    task: Task = "single_label"
    predictions: list[list[Prediction]] | list[Score] = Field(
        description="per input: the top_k labels with scores, best first (single- and "
        "multi-label); {score} for regression"
    )
    labels: list[list[str]] | None = Field(
        None, description="multi-label: per input, the labels at or over their threshold"
    )


class MultiClassifyResponse(BaseModel):
    results: list[ClassifyResponse]


class AdapterInfo(BaseModel):
    name: str
    version: int
    labels: dict[int, str]
    base_model: BaseModelRef
    adapter_config: str
    source: str
    hub: HubOrigin | None = None
    size_bytes: int
    metrics: dict[str, float]
    created_at: str
    resident: bool
    last_used: str | None = None
    task: str = Field("single_label", description="single_label, multi_label or regression")
    thresholds: dict[int, float] | None = Field(None, description="multi_label: per label")
    text_pair: bool = Field(False, description="trained on sentence pairs")


class HubImportRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "imdb", "repo_id": "AdapterHub/roberta-base-pf-imdb"}]
        },
    )

    name: StrictStr = Field(description="the adapter's name in the store")
    repo_id: StrictStr = Field(
        min_length=1, description="a Hugging Face hub model repo: `name` or `owner/name`"
    )
    revision: StrictStr | None = Field(
        None, description="branch, tag or 40-hex commit (default main); never a path"
    )
    subfolder: StrictStr | None = Field(
        None, description="the adapter's folder in the repo (a relative path, no `..`)"
    )
    overwrite: bool = Field(False, description="replace an existing adapter (new version)")


class AdapterList(BaseModel):
    adapters: list[AdapterInfo]
    next_cursor: str | None = Field(
        None, description="pass as `cursor` for the next page; null on the last page"
    )
    total: int = Field(description="the adapters that match the filters, on all pages")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    details: dict[str, Any] = Field(default_factory=dict)


# The Open Inference Protocol's infer request (JSON form), for the OpenAPI document only: the
# route parses the body itself (app.api.open_inference), binary tensors included.
OIP_INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "inputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "datatype", "shape", "data"],
                            "properties": {
                                "name": {"type": "string", "enum": ["text", "text_pair"]},
                                "datatype": {"type": "string", "enum": ["BYTES"]},
                                "shape": {"type": "array", "items": {"type": "integer"}},
                                "data": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    },
                    "outputs": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                    },
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "top_k": {"type": "integer", "minimum": 1},
                            "function_to_apply": {
                                "type": "string",
                                "enum": ["softmax", "sigmoid", "none"],
                            },
                            "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    },
                },
            }
        }
    },
}


# The multipart body of POST /adapters (app.api.adapters), as OpenAPI shows it.
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "name"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": ".zip or .tar.gz of a folder written by save_adapter",
                    },
                    "name": {"type": "string", "description": "the adapter's name in the store"},
                    "overwrite": {
                        "type": "boolean",
                        "default": False,
                        "description": "replace an existing adapter (new version)",
                    },
                },
            }
        }
    },
}
