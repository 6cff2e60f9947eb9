"""The feature-map debugging page: `/`, its static files, and the input the model saw.

The page is plain HTML, CSS and one JavaScript module shipped inside the package (no build
step, no CDN), so it works offline and under a strict Content-Security-Policy: nothing is
inline. It talks to the public API only, plus one small endpoint of its own here that renders
the preprocessed input (decoded, oriented, converted, resized: the pixels before
normalization), so the page shows exactly what the shared `Preprocessor` made of the image
instead of re-implementing the card's resize rules in JavaScript.
"""

from __future__ import annotations

import asyncio
import io

from fastapi import APIRouter, Request
from PIL import Image
from starlette.responses import Response

from models.pixels import PixelPipeline
from service.api.assets import PackagedFiles
from service.api.deps import ModelCallDep
from service.api.schemas import IMAGE_PROBLEM_RESPONSES, IMAGE_REQUEST_BODY
from service.errors import InvalidBody
from service.inputs import read_images
from service.pipeline import decode_pixels

router = APIRouter()

# The only files served under /static. Revalidated on every load: a restarted server with a
# new page must not pair with a cached script.
_STATIC = PackagedFiles(
    "service",
    "static",
    {
        "app.js": "text/javascript; charset=utf-8",
        "explain.js": "text/javascript; charset=utf-8",
        "pad.js": "text/javascript; charset=utf-8",
        "app.css": "text/css; charset=utf-8",
        "favicon.svg": "image/svg+xml",
    },
    headers={"Cache-Control": "no-cache"},
)


@router.get("/", include_in_schema=False)
async def index() -> Response:
    page = _STATIC.read("index.html")
    return Response(page, media_type="text/html; charset=utf-8", headers=_STATIC.headers)


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> Response:
    return _STATIC.response(name)


def render_input(data: bytes, preprocess: PixelPipeline, *, max_pixels: int) -> bytes:
    """The uint8 pixels the model is fed (before normalization) as a PNG at the model's size."""
    pixels = decode_pixels(preprocess, data, max_pixels=max_pixels)
    image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@router.post(
    "/v1/models/{name}/preprocessed",
    tags=["debugging"],
    summary="The preprocessed input: what the model sees of one image, as a PNG",
    description="Decoded, oriented, converted to the card's colour mode and resized to the "
    "model's input size: the pixels before normalization, one image per request.",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "a PNG of the model's input size"},
        **IMAGE_PROBLEM_RESPONSES,
    },
    openapi_extra=IMAGE_REQUEST_BODY,
)
async def preprocessed(request: Request, call: ModelCallDep) -> Response:
    images = await read_images(
        request, max_images=call.settings.max_images_per_request, spool=call.state.spool
    )
    if len(images) != 1:
        raise InvalidBody(f"this endpoint renders one image; the request carries {len(images)}")
    data, preprocess = images[0], call.served.pixels
    png = await asyncio.get_running_loop().run_in_executor(
        call.state.executor,
        lambda: render_input(data, preprocess, max_pixels=call.settings.max_image_pixels),
    )
    return Response(png, media_type="image/png")
