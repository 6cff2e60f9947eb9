"""Classification: top-k labels for one or many images per request."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.deps import ModelCallDep, TopKQuery
from service.api.schemas import IMAGE_PROBLEM_RESPONSES, IMAGE_REQUEST_BODY, ClassifyResponse
from service.inference import classify_images
from service.responses import json_response

router = APIRouter(prefix="/v1", tags=["classification"])


@router.post(
    "/classify",
    summary="Classify images with the default model",
    response_model=ClassifyResponse,
    responses=IMAGE_PROBLEM_RESPONSES,
    openapi_extra=IMAGE_REQUEST_BODY,
)
@router.post(
    "/models/{name}/classify",
    summary="Classify images with a named model",
    response_model=ClassifyResponse,
    responses=IMAGE_PROBLEM_RESPONSES,
    openapi_extra=IMAGE_REQUEST_BODY,
)
@router.post(
    "/models/{name}/versions/{version}/classify",
    summary="Classify images with one version of a named model",
    response_model=ClassifyResponse,
    responses=IMAGE_PROBLEM_RESPONSES,
    openapi_extra=IMAGE_REQUEST_BODY,
)
async def classify(request: Request, call: ModelCallDep, top_k: TopKQuery = None) -> Response:
    return json_response(await classify_images(request, call, top_k))
