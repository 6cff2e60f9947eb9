from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx

from tests.conftest import AppClientFactory


async def test_openapi_documents_body_forms_and_errors(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    classify = schema["paths"]["/v1/models/{name}/classify"]["post"]
    content = classify["requestBody"]["content"]
    assert {"image/png", "image/jpeg", "multipart/form-data", "application/json"} <= set(content)
    assert {"200", "400", "413", "415", "503", "504"} <= set(classify["responses"])
    assert "/v1/classify" in schema["paths"]
    assert "/readyz" in schema["paths"]
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
V2_ERROR_REF = {"$ref": "#/components/schemas/V2Error"}


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def error_contents(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        status: response.get("content", {})
        for status, response in operation["responses"].items()
        if int(status) >= 400
    }


async def test_errors_are_documented_in_the_shape_they_are_sent(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    seen = {"problem": 0, "v2": 0}
    for path, method, operation in operations(schema):
        for status, content in error_contents(operation).items():
            where = f"{method.upper()} {path} {status}"
            if path.startswith("/v2"):
                if content != {"application/json": {"schema": V2_ERROR_REF}}:
                    assert "V2Error" not in str(content), where  # a body of its own (readiness)
                    continue
                seen["v2"] += 1
            elif content:
                assert content == {"application/problem+json": {"schema": PROBLEM_REF}}, where
                seen["problem"] += 1
    assert seen["problem"] >= 20 and seen["v2"] >= 20
    components = schema["components"]["schemas"]
    assert set(components["Problem"]["required"]) >= {"type", "title", "status", "detail"}
    assert components["V2Error"]["properties"]["error"]["type"] == "string"
    assert "HTTPValidationError" not in components  # no response sends FastAPI's 422 body
    # The shapes are the ones really sent: a bad top_k and an unknown model under /v2.
    v1 = await client.post(
        "/v1/classify?top_k=0", content=b"x", headers={"content-type": "image/png"}
    )
    assert v1.status_code == 422 and v1.headers["content-type"] == "application/problem+json"
    v2 = await client.get("/v2/models/nope")
    assert v2.status_code == 404 and list(v2.json()) == ["error"]


async def test_protected_routes_document_401_500_and_the_bearer_scheme(
    app_client: AppClientFactory,
) -> None:
    async with app_client() as open_client:
        open_schema = (await open_client.get("/openapi.json")).json()
    async with app_client(api_key="k3y") as keyed_client:
        keyed_schema = (await keyed_client.get("/openapi.json")).json()
        unauthorized = await keyed_client.get("/v1/models")
    for schema, security in ((open_schema, [{"apiKey": []}, {}]), (keyed_schema, [{"apiKey": []}])):
        assert schema["components"]["securitySchemes"]["apiKey"] == {
            "type": "http",
            "scheme": "bearer",
            "description": "the value of CNN_API_KEY; required only when the server sets one",
        }
        protected = [(p, o) for p, _, o in operations(schema) if p.startswith(("/v1/", "/v2"))]
        assert len(protected) >= 15
        for path, operation in protected:
            assert {"401", "500"} <= set(operation["responses"]), path
            assert operation["security"] == security, path
        for path, _, operation in operations(schema):
            if path in ("/healthz", "/readyz"):
                assert "security" not in operation and "401" not in operation["responses"]
    assert unauthorized.status_code == 401
    assert unauthorized.headers["content-type"] == "application/problem+json"


async def test_docs_pages_load_every_asset_from_the_server_itself(
    client: httpx.AsyncClient,
) -> None:
    for page, kinds in (("/docs", {"js", "css", "png"}), ("/redoc", {"js", "png"})):
        html = (await client.get(page)).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert "http://" not in html and "https://" not in html, page  # no CDN, no fonts
        assets = [url for url in urls if url != "/openapi.json"]
        assert {url.rsplit(".", 1)[1] for url in assets} == kinds, page
        for url in assets:
            assert url.startswith("/docs/assets/"), url
            answer = await client.get(url)
            assert answer.status_code == 200, url
            expected = {"js": "text/javascript", "css": "text/css", "png": "image/png"}
            assert answer.headers["content-type"].startswith(expected[url.rsplit(".", 1)[1]])
            assert len(answer.content) > 1000, url
        assert "/openapi.json" in html
    assert "SwaggerUIBundle" in (await client.get("/docs/assets/swagger-ui-bundle.js")).text
    assert (await client.get("/docs/assets/..%2fcore.py")).status_code == 404
