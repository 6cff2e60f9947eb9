"""Classification: top-k labels for one or many images per request."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.deps import DefaultModelCallDep, ModelCall, NamedModelCallDep, TopKQuery
from service.api.schemas import IMAGE_PROBLEM_RESPONSES, IMAGE_REQUEST_BODY, ClassifyResponse
from service.inference import classify_images
from service.responses import json_response

router = APIRouter(prefix="/v1", tags=["classification"])


async def _classify(request: Request, call: ModelCall, top_k: int | None) -> Response:
    body = await classify_images(
        request, call.state, call.served, top_k=top_k, deadline=call.deadline
    )
    return json_response(body)


@router.post(
    "/classify",
    summary="Classify images with the default model",
    response_model=ClassifyResponse,
    responses=IMAGE_PROBLEM_RESPONSES,
    openapi_extra=IMAGE_REQUEST_BODY,
)
async def classify_default(
    request: Request, call: DefaultModelCallDep, top_k: TopKQuery = None
) -> Response:
    return await _classify(request, call, top_k)


@router.post(
    "/models/{name}/classify",
    summary="Classify images with a named model",
    response_model=ClassifyResponse,
    responses=IMAGE_PROBLEM_RESPONSES,
    openapi_extra=IMAGE_REQUEST_BODY,
)
async def classify_named(
    request: Request, call: NamedModelCallDep, top_k: TopKQuery = None
) -> Response:
    return await _classify(request, call, top_k)
