from __future__ import annotations

import httpx


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
