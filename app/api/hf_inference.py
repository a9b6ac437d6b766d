"""POST /models/{adapter}: the Hugging Face Inference API's text-classification task.

`huggingface_hub.InferenceClient(model=f"{url}/models/{name}", token=API_KEY)
.text_classification(text)` works unchanged: the body is `{"inputs": str | [str],
"parameters": {"top_k", "function_to_apply"}}` and the answer is a list per input of
`{"label", "score"}`, best first (every label unless `top_k`). An input may also be a pair
`{"text", "text_pair"}`, as the pipeline takes it. Scores use the adapter's task's function
(softmax, sigmoid for multi-label, none for regression: one `{"label": target, "score"}`)
unless `function_to_apply` names another. The texts go through the same path as /classify
(limits, batcher, errors in the one shape).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters_store import rendering
from app.api.classify import (
    ClientDisconnected,
    classify_texts,
    client_closed,
    failed,
    timing_headers,
)
from app.api.deps import INFERENCE_ROUTE, ClassifierDep, ClassifyAccess, SettingsDep
from app.api.errors import error_responses
from app.inference.service import ClassifyFailed
from app.schemas import NO_INPUT_IN_ERRORS, FunctionToApply, Input, Prediction, input_texts
from app.serving.engine import Text

router = APIRouter(tags=["protocols"])


class HFParameters(BaseModel):
    model_config = NO_INPUT_IN_ERRORS

    top_k: int | None = Field(None, ge=1, description="labels per input; absent = all labels")
    function_to_apply: FunctionToApply | None = Field(
        None, description="softmax, sigmoid or none (logits); default: the adapter's task's"
    )


class HFRequest(BaseModel):
    model_config = ConfigDict(
        **NO_INPUT_IN_ERRORS,
        json_schema_extra={"examples": [{"inputs": "great phone", "parameters": {"top_k": 2}}]},
    )

    inputs: Input | list[Input] = Field(description="one input or a list (text or pair)")
    parameters: HFParameters = Field(default_factory=HFParameters)
    # The hosted API's request options (wait_for_model, use_cache): accepted, nothing to do.
    options: dict[str, bool] | None = None

    @field_validator("inputs")
    @classmethod
    def _not_empty(cls, value: Input | list[Input]) -> Input | list[Input]:
        input_texts(value)
        return value

    @property
    def texts(self) -> list[Text]:
        return input_texts(self.inputs)


@router.post(
    "/models/{adapter:adapter}",
    response_model=list[list[Prediction]],
    responses=error_responses(401, 403, 404, 422, 503, 504),
    summary="Hugging Face Inference API: text classification with an adapter",
    openapi_extra=INFERENCE_ROUTE,
)
async def hf_text_classification(
    adapter: str,
    request: Request,
    body: HFRequest,
    classifier: ClassifierDep,
    settings: SettingsDep,
    _access: ClassifyAccess,  # the adapter: classify_texts checks it (app.api.deps)
) -> JSONResponse:
    """The answer is a list per input (also for a single string), as the hosted API gives it."""
    try:
        result, timing = await classify_texts(
            request, classifier, settings, texts=body.texts, adapters=[adapter]
        )
    except ClassifyFailed as failure:
        return failed(failure.error, failure.timing)
    except ClientDisconnected:
        return client_closed()
    (scored,) = result.results
    params = body.parameters
    answer = rendering.render(
        scored.head, scored.logits, function=params.function_to_apply, top_k=params.top_k
    )
    predictions = answer.predictions()
    headers = {**timing_headers(timing), "x-adapter-version": str(scored.version)}
    return JSONResponse(predictions, headers=headers)
