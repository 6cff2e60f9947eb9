"""Only the documented image formats are decoded; every other Pillow decoder is out of reach.

Each body is a real file Pillow wrote (or a hand-written EPS header), sent to the real app in
every body form: raw bytes, multipart, JSON base64 and /v2 BYTES.
"""

from __future__ import annotations

import base64
import io
import warnings
from typing import Any

from PIL import Image

from tests.conftest import AppClientFactory
from tests.helpers import Digits, png_bytes

# A minimal EPS: the DSC header alone. Decoding it would need Ghostscript.
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n0 0 moveto 28 28 lineto stroke\n"

# Formats with a signature are named in a 415; TGA and IM have none, so nothing identifies them.
NAMED = {"PCX": "PCX", "SGI": "SGI", "ICO": "ICO", "PPM": "PPM", "JPEG2000": "JPEG2000"}
UNNAMED = ("TGA", "IM")


def undocumented_bodies(digit: Image.Image) -> dict[str, bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Pillow 13 deprecates writing IM
        bodies = {name: png_bytes(digit, name) for name in (*NAMED, *UNNAMED)}
    bodies["EPS"] = EPS
    return bodies


def expected(name: str) -> tuple[int, str]:
    if name in UNNAMED:
        return 400, "invalid_image"
    return 415, "unsupported_image_format"


def request_forms(body: bytes) -> dict[str, dict[str, Any]]:
    return {
        "raw": {"content": body, "headers": {"content-type": "application/octet-stream"}},
        "multipart": {"files": [("images", ("x.img", body, "application/octet-stream"))]},
        "JSON base64": {"json": {"images": [base64.b64encode(body).decode()]}},
    }


def v2_request(body: bytes) -> dict[str, Any]:
    data = [base64.b64encode(body).decode()]
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": data}]}


async def test_undocumented_formats_are_refused_in_every_body_form(
    app_client: AppClientFactory, digits: Digits
) -> None:
    bodies = undocumented_bodies(digits.images[0])
    async with app_client() as client:
        for name, body in bodies.items():
            status, code = expected(name)
            for form, kwargs in request_forms(body).items():
                response = await client.post("/v1/classify", **kwargs)
                what = f"{name} as {form}"
                assert response.status_code == status, f"{what}: {response.text}"
                assert response.headers["content-type"] == "application/problem+json", what
                problem = response.json()
                assert problem["code"] == code, what
                assert "PNG, JPEG, WebP, BMP, GIF or TIFF" in problem["detail"], what
                if status == 415:
                    assert f"image 0 is {NAMED.get(name, name)}" in problem["detail"], what
            answer = await client.post("/v2/models/mnist-cnn/infer", json=v2_request(body))
            assert answer.status_code == status, f"{name} over /v2: {answer.text}"
            assert "PNG, JPEG, WebP, BMP, GIF or TIFF" in answer.json()["error"], name


async def test_documented_formats_still_classify_over_v1_and_v2(
    app_client: AppClientFactory, digits: Digits
) -> None:
    label = int(digits.labels[0])
    async with app_client() as client:
        for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"):
            body = png_bytes(digits.images[0], fmt, **({"quality": 100} if fmt == "JPEG" else {}))
            v1 = await client.post("/v1/classify", **request_forms(body)["JSON base64"])
            v2 = await client.post("/v2/models/mnist-cnn/infer", json=v2_request(body))
            assert v1.status_code == 200, f"{fmt}: {v1.text}"
            assert v1.json()["predictions"][0]["index"] == label, fmt
            assert v2.status_code == 200, f"{fmt}: {v2.text}"
            probabilities = v2.json()["outputs"][0]["data"]
            assert max(range(10), key=probabilities.__getitem__) == label, fmt


def test_the_eps_body_is_what_pillow_would_hand_ghostscript() -> None:
    """Guard on the fixture: unrestricted, Pillow takes this body for an EPS image."""
    with Image.open(io.BytesIO(EPS)) as image:
        assert (image.format, image.size) == ("EPS", (28, 28))


async def test_bodies_shorter_than_a_signature_check_reads_are_4xx_not_5xx(
    app_client: AppClientFactory,
) -> None:
    # Some of Pillow's checks index past a 1- or 2-byte body; SGI's magic is 2 bytes long.
    expected = {b"\x00": "invalid_image", b"P": "invalid_image", b"BM": "invalid_image",
                b"\x01\xda": "unsupported_image_format"}  # fmt: skip
    async with app_client() as client:
        for body, code in expected.items():
            response = await client.post(
                "/v1/classify", content=body, headers={"content-type": "image/png"}
            )
            assert response.json()["code"] == code, f"{body!r}: {response.text}"
            assert response.status_code == (415 if code == "unsupported_image_format" else 400)
