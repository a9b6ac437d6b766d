"""POST /models/{adapter}: the Hugging Face Inference API's text-classification task.

`huggingface_hub.InferenceClient(model=f"{url}/models/{name}", token=API_KEY)
.text_classification(text)` works unchanged: the body is `{"inputs": str | [str],
"parameters": {"top_k", "function_to_apply"}}` and the answer is a list per input of
`{"label", "score"}`, best first (every label unless `top_k`). The texts go through the same
path as /classify (limits, batcher, errors in the one shape).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from app.api.classify import (
    ClassifyFailed,
    ClientDisconnected,
    classify_texts,
    client_closed,
    failed,
    timing_headers,
)
from app.api.deps import BatcherDep, ClassifyAccess, SettingsDep
from app.api.errors import InvalidRequest, error_responses
from app.schemas import Prediction
from app.serving.passes import rank

router = APIRouter(tags=["protocols"])


class HFParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(None, ge=1, description="labels per input; absent = all labels")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        None, description="only softmax (the default) is served: heads here are single-label"
    )


class HFRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": "great phone", "parameters": {"top_k": 2}}]},
    )

    inputs: StrictStr | list[StrictStr] = Field(description="one text or a list of texts")
    parameters: HFParameters = Field(default_factory=HFParameters)
    # The hosted API's request options (wait_for_model, use_cache): accepted, nothing to do.
    options: dict[str, bool] | None = None

    @field_validator("inputs")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("'inputs' is empty")
        if any(not t for t in texts):
            raise ValueError("'inputs' holds an empty string")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


@router.post(
    "/models/{adapter:adapter}",
    response_model=list[list[Prediction]],
    responses=error_responses(401, 403, 404, 422, 503, 504),
    summary="Hugging Face Inference API: text classification with an adapter",
)
async def hf_text_classification(
    adapter: str,
    request: Request,
    body: HFRequest,
    batcher: BatcherDep,
    settings: SettingsDep,
    _access: ClassifyAccess,  # the adapter: classify_texts checks it (app.api.access)
) -> JSONResponse:
    """The answer is a list per input (also for a single string), as the hosted API gives it."""
    function = body.parameters.function_to_apply
    if function not in (None, "softmax"):
        raise InvalidRequest(
            f"function_to_apply {function!r} is not served: adapters here have single-label "
            "heads scored with softmax"
        )
    try:
        result, timing = await classify_texts(
            request, batcher, settings, texts=body.texts, adapters=[adapter]
        )
    except ClassifyFailed as failure:
        return failed(failure.error, failure.timing)
    except ClientDisconnected:
        return client_closed()
    (scored,) = result.results
    top_k = body.parameters.top_k
    predictions = [rank(p, scored.labels, top_k) for p in scored.probs]
    headers = {**timing_headers(timing), "x-adapter-version": str(scored.version)}
    return JSONResponse(predictions, headers=headers)
