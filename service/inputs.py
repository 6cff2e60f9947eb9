"""Reading the images out of a request body: raw bytes, multipart, or JSON.

The body forms accepted by every image endpoint:
- the raw bytes of one image (Content-Type image/* or application/octet-stream);
- multipart/form-data where every file part is an image, in order;
- JSON {"images": ["<base64 or data: URL>", ...]}.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from service.errors import InvalidBody, ServiceError, TooManyImages, UnsupportedMediaType
from service.multipart import boundary_of, split_files
from service.spool import SpoolBudget, read_form

IMAGE_MEDIA_TYPES = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/bmp",
    "image/gif",
    "image/tiff",
    "application/octet-stream",
)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_images(request: Request, *, max_images: int, spool: SpoolBudget) -> list[bytes]:
    kind = media_type(request)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return [await request.body()]
    if kind == "multipart/form-data":
        return await _multipart_images(request, max_images, spool)
    if kind == "application/json":
        return _json_images(await request.body(), max_images)
    accepted = ", ".join((*IMAGE_MEDIA_TYPES, "multipart/form-data", "application/json"))
    shown = (kind[:64] + "...") if len(kind) > 64 else (kind or "none")  # never echo a huge one
    raise UnsupportedMediaType(f"Content-Type {shown!r} is not accepted; use one of: {accepted}")


def check_image_count(count: int, max_images: int) -> None:
    """The one rule for images per request, whichever body form or protocol carries them."""
    if count > max_images:
        raise TooManyImages(
            f"{count} images in one request; the limit is {max_images} (CNN_MAX_IMAGES_PER_REQUEST)"
        )
    if count == 0:
        raise InvalidBody("the request carries no image")


# A multipart body up to this size, announced by Content-Length, is read whole and split
# in place (service.multipart); larger or chunked ones stream through python-multipart.
FAST_MULTIPART_BYTES = 1024 * 1024


async def _multipart_images(request: Request, max_images: int, spool: SpoolBudget) -> list[bytes]:
    length = request.headers.get("content-length", "")
    boundary = boundary_of(request.headers.get("content-type", ""))
    if boundary is not None and length.isdigit() and int(length) <= FAST_MULTIPART_BYTES:
        body = await request.body()
        images = split_files(body, boundary, max_parts=max_images + 1)
        if images is not None:
            check_image_count(len(images), max_images)
            return images
    try:
        images = await read_form(
            request.headers,
            request.stream(),
            spool,
            max_files=max_images + 1,
            max_fields=max_images + 16,
        )
    except (ServiceError, ClientDisconnect):
        raise
    except Exception as exc:  # starlette raises its own and python-multipart's errors
        raise InvalidBody(f"malformed multipart body: {exc}") from exc
    check_image_count(len(images), max_images)
    return images


def decode_base64(text: str | bytes, where: str) -> bytes:
    """An image carried as base64 text in JSON (/v1's images, /v2's BYTES elements)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBody(f"{where} is not valid base64: {exc}") from exc


def _decode_b64(text: Any, index: int) -> bytes:
    if not isinstance(text, str):
        raise InvalidBody(f"images[{index}] must be a base64 string or a data: URL")
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidBody(f"images[{index}] is a data: URL without ';base64,'")
    return decode_base64(text, f"images[{index}]")


def _json_images(body: bytes, max_images: int) -> list[bytes]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"malformed JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise InvalidBody('expected a JSON object {"images": ["<base64>", ...]}')
    images = document["images"]
    check_image_count(len(images), max_images)
    return [_decode_b64(text, i) for i, text in enumerate(images)]
