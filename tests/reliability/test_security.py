"""The API key, security headers and CORS, through the real app."""

from __future__ import annotations

import hmac
from pathlib import Path

import httpx
import pytest

import service.security
from tests.conftest import AppClientFactory
from tests.helpers import Digits

KEY = "s3cret-key-with-enough-entropy-0123456789"
PNG = {"content-type": "image/png"}
OPEN_PATHS = ["/healthz", "/readyz", "/openapi.json", "/docs", "/"]
PROTECTED = [
    ("GET", "/v1/models"),
    ("GET", "/v1/models/mnist-cnn"),
    ("POST", "/v1/classify"),
    ("POST", "/v1/models/mnist-cnn/classify"),
    ("GET", "/v1"),
    ("GET", "/v1/no-such-route"),  # refused before routing: no probing for routes
    ("GET", "/v2/health/live"),
    ("POST", "/v2/models/mnist-cnn/infer"),
]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_without_a_valid_key_every_v1_and_v2_path_is_401(
    app_client: AppClientFactory, digits: Digits
) -> None:
    wrong = [
        {},
        bearer("nope"),
        bearer(KEY[:-1]),  # a prefix of the key
        bearer(KEY + "x"),
        {"authorization": KEY},  # no scheme
        {"authorization": f"Basic {KEY}"},
        {"authorization": "Bearer "},
        bearer("k" * 50_000),
    ]
    async with app_client(api_key=KEY) as client:
        for method, path in PROTECTED:
            for headers in wrong:
                response = await client.request(
                    method, path, content=digits.png(0), headers={**PNG, **headers}
                )
                assert response.status_code == 401, (method, path, headers.keys())
                body = response.json()
                if path.startswith("/v2"):  # the Open Inference Protocol's error shape
                    assert "API key" in body["error"]
                else:
                    assert body["code"] == "unauthorized"
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert KEY not in response.text
        for path in OPEN_PATHS:
            assert (await client.get(path)).status_code == 200, path
        ok = await client.post(
            "/v1/classify", content=digits.png(0), headers={**PNG, **bearer(KEY)}
        )
        lowercase_scheme = await client.get(
            "/v1/models", headers={"authorization": f"bearer {KEY}"}
        )
    assert ok.status_code == 200
    assert ok.json()["predictions"][0]["index"] == digits.labels[0]
    assert lowercase_scheme.status_code == 200


async def test_the_key_is_compared_in_constant_time(
    app_client: AppClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def recording_compare(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(service.security.hmac, "compare_digest", recording_compare)
    async with app_client(api_key=KEY) as client:
        refused = await client.get("/v1/models", headers=bearer(KEY[:10]))
        accepted = await client.get("/v1/models", headers=bearer(KEY))
    assert (refused.status_code, accepted.status_code) == (401, 200)
    assert compared == [(KEY[:10].encode(), KEY.encode()), (KEY.encode(), KEY.encode())]


async def test_the_key_can_come_from_a_file(app_client: AppClientFactory, tmp_path: Path) -> None:
    secret = tmp_path / "api-key"
    secret.write_text(KEY + "\n")  # as mounted from a Kubernetes secret, trailing newline
    async with app_client(api_key_file=secret) as client:
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/v1/models", headers=bearer(KEY))).status_code == 200


async def test_no_key_configured_means_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/models")).status_code == 200


async def test_security_headers_on_every_response_and_csp_on_the_page(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    api = await client.get("/v1/models")
    problem = await client.get("/v1/models/nope")
    docs = await client.get("/docs")
    for response in (page, api, problem, docs):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "content-security-policy" not in api.headers  # JSON needs none
    assert "content-security-policy" not in docs.headers  # Swagger UI loads from its CDN


async def test_cors_is_off_by_default_and_on_for_configured_origins(
    app_client: AppClientFactory, client: httpx.AsyncClient
) -> None:
    origin = {"origin": "https://app.example"}
    preflight = {
        **origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    closed = await client.get("/v1/models", headers=origin)
    assert "access-control-allow-origin" not in closed.headers
    async with app_client(cors_origins="https://app.example", api_key=KEY) as cors_client:
        allowed = await cors_client.options("/v1/classify", headers=preflight)
        other = await cors_client.options(
            "/v1/classify", headers={**preflight, "origin": "https://evil.example"}
        )
        refused = await cors_client.get("/v1/models", headers=origin)  # no key
    assert allowed.status_code == 200  # a preflight carries no key, by design
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    # A refusal still carries CORS headers, so the page can show the 401.
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://app.example"


async def test_no_endpoint_takes_a_path_or_a_url(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    names: list[str] = []
    for operations in schema["paths"].values():
        for operation in operations.values():
            names += [p["name"].lower() for p in operation.get("parameters", [])]
            for content in operation.get("requestBody", {}).get("content", {}).values():
                names += [n.lower() for n in content.get("schema", {}).get("properties", {})]
    assert len(names) > 10  # the schema was read
    suspicious = [n for n in names if any(w in n for w in ("path", "url", "uri", "file", "dir"))]
    assert suspicious == []
