"""Request and response models of the HTTP API (pydantic; no FastAPI imports)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from adapters_store import BaseModelRef, HubOrigin


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"adapter": "amazon-polarity", "inputs": ["great phone"], "top_k": 1}]
        },
    )

    adapter: StrictStr | None = Field(None, description="the adapter to classify with")
    adapters: list[StrictStr] | None = Field(
        None, min_length=1, max_length=16, description="several adapters, same inputs"
    )
    inputs: StrictStr | list[StrictStr] = Field(description="one text or a list of texts")
    top_k: int | None = Field(1, ge=1, description="labels per input; null = all labels")
    truncation: bool = Field(True, description="cut texts over the token limit (else 422)")

    @model_validator(mode="after")
    def _check(self) -> ClassifyRequest:
        if (self.adapter is None) == (self.adapters is None):
            raise ValueError("give exactly one of 'adapter' or 'adapters'")
        if self.adapters is not None and len(set(self.adapters)) != len(self.adapters):
            raise ValueError("'adapters' lists an adapter twice")
        texts = self.texts
        if not texts:
            raise ValueError("'inputs' is empty")
        for index, text in enumerate(texts):
            if not text:
                raise ValueError(f"inputs[{index}] is an empty string")
        return self

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters) if self.adapters is not None else [str(self.adapter)]


class Prediction(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    adapter: str
    version: int
    predictions: list[list[Prediction]] = Field(
        description="per input, the top_k labels with softmax scores, best first"
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


class HubImportRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "imdb", "repo_id": "AdapterHub/roberta-base-pf-imdb"}]
        },
    )

    name: StrictStr = Field(description="the adapter's name in the store")
    repo_id: StrictStr = Field(min_length=1, description="a Hugging Face hub model repo")
    revision: StrictStr | None = Field(None, description="branch, tag or commit (default main)")
    subfolder: StrictStr | None = Field(None, description="the adapter's folder in the repo")
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
                                "name": {"type": "string", "enum": ["text"]},
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
                        "properties": {"top_k": {"type": "integer", "minimum": 1}},
                    },
                },
            }
        }
    },
}
