"""POST /classify: texts -> pipeline-shaped predictions, through the dynamic batcher."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import BatcherDep, ClassifyAccess, SettingsDep
from app.api.errors import InvalidRequest, error_responses
from app.config import Settings
from app.engine import rank
from app.inference import Classified
from app.schemas import ClassifyRequest, ClassifyResponse, MultiClassifyResponse

router = APIRouter(tags=["classify"])


def check_limits(body: ClassifyRequest, settings: Settings) -> list[str]:
    texts = body.texts
    if len(texts) > settings.max_inputs_per_request:
        raise InvalidRequest(
            f"{len(texts)} inputs; at most {settings.max_inputs_per_request} per request"
        )
    for index, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise InvalidRequest(
                f"inputs[{index}] has {len(text)} characters; the limit is "
                f"{settings.max_text_chars}"
            )
    return texts


def render(result: Classified, body: ClassifyRequest) -> dict:
    items = [
        {
            "adapter": r.adapter,
            "version": r.version,
            "predictions": [rank(p, r.labels, body.top_k) for p in r.probs],
        }
        for r in result.results
    ]
    return items[0] if body.adapters is None else {"results": items}


@router.post(
    "/classify",
    response_model=ClassifyResponse | MultiClassifyResponse,
    responses=error_responses(404, 422, 503, 504),
    summary="Classify one text or a list with an adapter (or several)",
)
async def classify(
    body: ClassifyRequest, batcher: BatcherDep, settings: SettingsDep, _access: ClassifyAccess
) -> JSONResponse:
    """Scores are softmax probabilities, best first; `top_k: null` returns every label.

    Headers `x-queue-time` and `x-inference-time` give the milliseconds spent waiting for a
    batch and in the forward pass.
    """
    texts = check_limits(body, settings)
    result = await batcher.classify(
        texts=texts, adapters=body.adapter_names, truncation=body.truncation
    )
    headers = {
        "x-queue-time": f"{result.queue_ms:.3f}",
        "x-inference-time": f"{result.inference_ms:.3f}",
    }
    # Built by us from validated data: skip re-validating it against the response model.
    return JSONResponse(render(result, body), headers=headers)
