"""Response models and OpenAPI fragments of the /v2 endpoints: the documented contract."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class V2Error(BaseModel):
    error: str = Field(description="what went wrong")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks the batch dimension")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata] = Field(description="give exactly one per request")
    outputs: list[TensorMetadata]


def _error(description: str) -> dict[str, Any]:
    return {"model": V2Error, "description": description}


V2_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error(
        "malformed request: JSON, tensor datatype or shape, unknown output, truncated body"
    ),
    404: _error("no such model or version"),
    413: _error("body or batch over the limit"),
    503: _error("starting, draining or overloaded"),
    504: _error("no answer within the request timeout"),
}

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "flat or nested; absent with binary_data_size"},
    },
}

INFER_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The JSON inference request; or, with the Inference-Header-Content-Length "
        "header, that many bytes of JSON followed by the binary inputs (binary_data_size); a "
        "header of 0 sends one raw FP32 [N,C,H,W] tensor.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
