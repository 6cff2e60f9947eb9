"""Response models and OpenAPI fragments: the documented contract of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.inputs import IMAGE_MEDIA_TYPES


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable code."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="stable error code, e.g. invalid_image, overloaded, timeout")


class ScoredLabel(BaseModel):
    label: str
    index: int
    probability: float


class Prediction(ScoredLabel):
    top_k: list[ScoredLabel]


class ClassifyResponse(BaseModel):
    model: str
    version: str = Field(description="the model version that answered")
    predictions: list[Prediction] = Field(description="one per image, in request order")


class Batching(BaseModel):
    max_batch_size: int = Field(
        description="images per forward pass gathered from several requests"
    )
    max_request_pass: int = Field(description="one request's images per forward pass")
    max_batch_delay_ms: float
    max_queue_size: int


class ModelMetadata(BaseModel):
    name: str
    version: str
    architecture: str
    labels: list[str]
    input: dict[str, Any]
    parameters: int
    device: str
    dtype: str
    jpeg_decode: Literal["device", "host"] = Field(
        description="where baseline JPEGs are decoded: on the model's device, or by the HTTP side"
    )
    batching: Batching
    metrics: dict[str, Any] | None
    weights_sha256: str


class ModelList(BaseModel):
    models: list[ModelMetadata]


def _problem(description: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {"application/problem+json": {}},
    }


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: _problem("unknown_model"),
    422: _problem("invalid_parameter"),
    503: _problem("not_ready"),
}

IMAGE_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    400: _problem("invalid_image, invalid_body"),
    413: _problem("payload_too_large, too_many_images, image_too_large, too_many_pixels"),
    415: _problem("unsupported_media_type, unsupported_image_format"),
    503: _problem("overloaded (with Retry-After), not_ready"),
    504: _problem("timeout"),
}

_BINARY = {"schema": {"type": "string", "format": "binary"}}

IMAGE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One image as raw bytes; or multipart/form-data where every file part is an "
        'image, in order; or JSON {"images": ["<base64 or data: URL>", ...]}.',
        "content": {
            **{kind: _BINARY for kind in IMAGE_MEDIA_TYPES},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "description": "base64 or data: URL"},
                        }
                    },
                }
            },
        },
    }
}
