"""The page's routes through the real app: files, media types, the switch, the input rendering."""

from __future__ import annotations

import io
import re

import httpx
import numpy as np
from PIL import Image

import models
from service.explain_terms import DEFAULT_STEPS, MAX_OCCLUSION_PASSES, MAX_STEPS, METHODS
from tests.conftest import AppClientFactory
from tests.helpers import ROOT, Digits, png_bytes


async def test_page_and_its_files_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # Nothing inline, so a strict Content-Security-Policy (script-src 'self') leaves it working.
    assert "<style" not in page.text and " style=" not in page.text
    scripts = re.findall(r"<script\b[^>]*>", page.text)
    assert scripts == ['<script type="module" src="/static/app.js">']
    linked = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert set(linked) == {"/static/app.js", "/static/app.css", "/static/favicon.svg"}
    kinds = {path: (await client.get(path)).headers["content-type"] for path in linked}
    assert kinds["/static/app.js"].startswith("text/javascript")
    assert kinds["/static/app.css"].startswith("text/css")
    assert kinds["/static/favicon.svg"] == "image/svg+xml"
    # The modules only call the service's own API: the page works offline, no CDN.
    for module in ("/static/app.js", "/static/explain.js", "/static/pad.js"):
        script = await client.get(module)
        assert script.headers["content-type"].startswith("text/javascript")
        assert re.findall(r"https?://", script.text) == []
    imported = re.findall(r'from "([^"]+)"', (await client.get("/static/app.js")).text)
    assert imported == ["./explain.js", "./pad.js"]


async def test_explain_panel_shows_the_servers_limits(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    steps = re.search(r'<input id="explain-steps"[^>]*>', page)
    assert steps is not None
    assert f'max="{MAX_STEPS}"' in steps.group() and 'min="1"' in steps.group()
    assert f'value="{DEFAULT_STEPS}"' in steps.group()
    assert f"1–{MAX_STEPS}</span>" in page
    assert (
        f'id="explain-passes" class="muted" data-methods="occlusion" data-limit="{MAX_OCCLUSION_PASSES}"'
        in page
    )
    methods = re.findall(
        r'<option value="([a-z_]+)">', page.split('id="explain-method"')[1].split("</select>")[0]
    )
    assert tuple(methods) == METHODS


async def test_unknown_static_file_is_a_problem_404(client: httpx.AsyncClient) -> None:
    for path in ("/static/nope.js", "/static/..%2Fapp.py", "/static/index.html.bak"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"


async def test_ui_false_turns_the_page_off(app_client: AppClientFactory) -> None:
    async with app_client(ui=False) as client:
        assert (await client.get("/")).status_code == 404
        assert (await client.get("/static/app.js")).status_code == 404
        rendered = await client.post(
            "/v1/models/mnist-cnn/preprocessed",
            content=b"\x89PNG",
            headers={"content-type": "image/png"},
        )
        assert rendered.status_code == 404
        assert (await client.get("/v1/models")).status_code == 200


async def test_preprocessed_is_what_the_shared_preprocessor_makes(
    client: httpx.AsyncClient, digits: Digits
) -> None:
    # A large RGB image with a transparent corner: converted, flattened and resized server-side.
    big = digits.images[3].convert("RGBA").resize((300, 200))
    big.putpixel((0, 0), (0, 0, 0, 0))
    body = png_bytes(big)
    response = await client.post(
        "/v1/models/mnist-cnn/preprocessed", content=body, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.content)))
    expected = models.load(models.default_model_path()).preprocess.to_uint8(big)
    assert shown.shape == (28, 28)
    np.testing.assert_array_equal(shown, expected[0])


async def test_preprocessed_errors_are_problem_json(
    client: httpx.AsyncClient, digits: Digits
) -> None:
    broken = await client.post(
        "/v1/models/mnist-cnn/preprocessed",
        content=b"not an image",
        headers={"content-type": "image/png"},
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "invalid_image"
    two = [("images", (f"{i}.png", digits.png(i), "image/png")) for i in range(2)]
    many = await client.post("/v1/models/mnist-cnn/preprocessed", files=two)
    assert many.status_code == 400
    assert many.json()["detail"] == "this endpoint renders one image; the request carries 2"
    unknown = await client.post(
        "/v1/models/nope/preprocessed", content=digits.png(0), headers={"content-type": "image/png"}
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "unknown_model"


async def test_every_static_file_is_served(client: httpx.AsyncClient) -> None:
    # The routes serve a fixed list: a file added to service/static must be added to it too.
    files = sorted(path.name for path in (ROOT / "service" / "static").iterdir())
    assert "index.html" in files
    for name in files:
        path = "/" if name == "index.html" else f"/static/{name}"
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.content == (ROOT / "service" / "static" / name).read_bytes()
