"""The OpenAPI document, made to say what the service really answers.

FastAPI files every declared error response under application/json and adds a 422
HTTPValidationError to each operation; the service answers problem+json (and, under /v2,
the Open Inference Protocol's {"error": "..."}) for all of them. This pass rewrites the
error responses, adds the 401 and 500 that every /v1 and /v2 route can give, and declares
the bearer scheme those routes accept, so Swagger UI can send the key.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.problems import PROBLEM_MEDIA_TYPE, is_v2_path

SCHEME = "apiKey"
_PROTECTED = ("/v1/", "/v2")
_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_V2_ERROR = {"$ref": "#/components/schemas/V2Error"}
_UNUSED = ("HTTPValidationError", "ValidationError")
_ADDED = {
    "401": "unauthorized: CNN_API_KEY is set and the bearer key is missing or wrong",
    "500": "internal_error, inference_failed (the detail names the request id)",
}


def install_openapi(app: FastAPI, *, key_required: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, key_required=key_required)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def document(app: FastAPI, *, key_required: bool) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "the value of CNN_API_KEY; required only when the server sets one",
        }
    }
    for path, item in schema["paths"].items():
        for operation in item.values():
            _fix_operation(path, operation, key_required)
    for name in _UNUSED:  # FastAPI's 422 body, which no response sends
        components.get("schemas", {}).pop(name, None)
    return schema


def _fix_operation(path: str, operation: dict[str, Any], key_required: bool) -> None:
    v2 = is_v2_path(path)
    media, error = ("application/json", _V2_ERROR) if v2 else (PROBLEM_MEDIA_TYPE, _PROBLEM)
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if path.startswith(_PROTECTED):
        for status, description in _ADDED.items():
            responses.setdefault(status, {"description": description, "content": {}})
        # Without a key configured the routes take requests with no credentials too.
        operation["security"] = [{SCHEME: []}] if key_required else [{SCHEME: []}, {}]
    for status, response in responses.items():
        content = response.get("content")
        if int(status) >= 400 and (content == {} or _is_error_body(content or {})):
            response["content"] = {media: {"schema": error}}
        if response.get("description") == "Validation Error":  # FastAPI's words for its 422
            response["description"] = "invalid_parameter: a parameter out of range or malformed"


def _is_error_body(content: dict[str, Any]) -> bool:
    """Documented with an error schema, not a body of its own (a readiness answer, say)."""
    refs = {str(entry.get("schema", {}).get("$ref", "")) for entry in content.values()}
    refs.discard("")
    ours = {f"#/components/schemas/{name}" for name in ("Problem", "V2Error", *_UNUSED)}
    return bool(refs) and refs <= ours
