"""PNGs decoded by libpng as they are (service.png) give Pillow's pixels, and only those are.

Every comparison is with the Pillow path (models.pixels.PixelPipeline after
service.imaging.decode_image), which stays the definition of what the model sees.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import models
from models.card import InputSpec
from models.data import mnist_arrays
from models.pixels import PixelPipeline
from service.errors import ImageTooLarge, InvalidImage
from service.imaging import decode_image
from service.pipeline import decode_pixels, open_header
from service.png import PlainPng, plain_png

GREY_28 = InputSpec(channels=1, height=28, width=28, mean=(0.5,), std=(0.5,))
RGB_32 = InputSpec(channels=3, height=32, width=32, mean=(0.5,) * 3, std=(0.5,) * 3)
RGB_CROP_32 = InputSpec(
    channels=3, height=32, width=32, resize="resize_center_crop", resize_size=32,
    mean=(0.5,) * 3, std=(0.5,) * 3,
)  # fmt: skip
rng = np.random.default_rng(7)


def png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def pillow_pixels(data: bytes, spec: InputSpec) -> np.ndarray:
    return PixelPipeline(spec).to_uint8(decode_image(data, max_pixels=sys.maxsize))


def plain_pixels(data: bytes, spec: InputSpec) -> np.ndarray:
    plain = plain_png(data, spec)
    assert plain is not None
    return plain.pixels()


def test_every_shipped_digit_as_a_png_decodes_to_pillows_pixels() -> None:
    spec = models.load(models.default_model_path()).card.input
    images, _ = mnist_arrays()
    for digit in images:
        data = png(Image.fromarray(digit))
        np.testing.assert_array_equal(plain_pixels(data, spec), pillow_pixels(data, spec))


@pytest.mark.parametrize("spec", [RGB_32, RGB_CROP_32], ids=["resize", "centre-crop"])
def test_rgb_of_the_models_size_decodes_to_pillows_pixels(spec: InputSpec) -> None:
    data = png(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    pixels = plain_pixels(data, spec)
    assert pixels.shape == (3, 32, 32)
    np.testing.assert_array_equal(pixels, pillow_pixels(data, spec))


def test_an_inverting_card_inverts_the_plain_pixels_as_pillows() -> None:
    spec = GREY_28.model_copy(update={"invert": True})
    data = png(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)))
    np.testing.assert_array_equal(plain_pixels(data, spec), pillow_pixels(data, spec))
    np.testing.assert_array_equal(plain_pixels(data, spec), 255 - plain_pixels(data, GREY_28))


def test_colour_space_and_size_notes_leave_a_png_plain() -> None:
    grey = Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8))
    data = png(grey, dpi=(300, 300), icc_profile=b"\0" * 128)  # pHYs and iCCP chunks
    assert b"pHYs" in data and b"iCCP" in data
    np.testing.assert_array_equal(plain_pixels(data, GREY_28), pillow_pixels(data, GREY_28))


def with_interlace(data: bytes) -> bytes:
    """The same file with IHDR's interlace byte set (and its CRC kept right)."""
    body = bytearray(data[12:29])
    body[-1] = 1
    return data[:12] + bytes(body) + struct.pack(">I", zlib.crc32(body)) + data[33:]


def text_chunk() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", "exif\n  10\n0000")
    return info


def exif_orientation() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


GREY = rng.integers(0, 256, (28, 28), dtype=np.uint8)
NOT_PLAIN = {
    "a palette": lambda: png(Image.fromarray(GREY).convert("P")),
    "transparency": lambda: png(Image.fromarray(GREY), transparency=0),
    "grey with alpha": lambda: png(Image.fromarray(GREY).convert("LA")),
    "RGB for a grey card": lambda: png(Image.fromarray(GREY).convert("RGB")),
    "16-bit samples": lambda: png(Image.fromarray(GREY.astype(np.uint16) * 257)),
    "one-bit samples": lambda: png(Image.fromarray(GREY).convert("1")),
    "another size": lambda: png(Image.fromarray(GREY).resize((30, 30))),
    "interlacing": lambda: with_interlace(png(Image.fromarray(GREY))),
    "a text chunk": lambda: png(Image.fromarray(GREY), pnginfo=text_chunk()),
    "an EXIF chunk": lambda: png(Image.fromarray(GREY), exif=exif_orientation()),
    "a file cut before IEND": lambda: png(Image.fromarray(GREY))[:-12],
    "a JPEG": lambda: _jpeg(Image.fromarray(GREY)),
}


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", sorted(NOT_PLAIN))
def test_anything_else_goes_through_pillow(case: str) -> None:
    data = NOT_PLAIN[case]()
    assert plain_png(data, GREY_28) is None
    assert not isinstance(open_header(data, GREY_28, max_pixels=10**6), PlainPng)


def test_the_plain_case_is_judged_by_the_exact_header_the_file_has() -> None:
    data = png(Image.fromarray(GREY))
    assert plain_png(data, GREY_28) == PlainPng(data, 28, 28, invert=False)
    assert plain_png(data, RGB_32) is None


def test_a_request_reads_a_plain_png_as_plain_within_the_pixel_limit_only() -> None:
    data = png(Image.fromarray(GREY))
    assert open_header(data, GREY_28, max_pixels=28 * 28) == PlainPng(data, 28, 28, False)
    with pytest.raises(ImageTooLarge):  # Pillow's header read refuses it, as for any image
        open_header(data, GREY_28, max_pixels=28 * 28 - 1)


def broken_idat(data: bytes) -> bytes:
    """The chunk list intact (so the header says plain), the compressed samples garbage."""
    start = data.index(b"IDAT") + 4
    (length,) = struct.unpack(">I", data[start - 8 : start - 4])
    garbage = bytes(rng.integers(0, 256, length, dtype=np.uint8))
    body = b"IDAT" + garbage
    return (
        data[: start - 4] + body + struct.pack(">I", zlib.crc32(body)) + data[start + length + 4 :]
    )


def test_a_plain_looking_png_that_libpng_refuses_is_pillows_to_report() -> None:
    data = broken_idat(png(Image.fromarray(GREY)))
    assert plain_png(data, GREY_28) is not None
    pipeline = PixelPipeline(GREY_28)
    with pytest.raises(InvalidImage) as raised:
        decode_pixels(pipeline, data, max_pixels=10**6)
    with pytest.raises(InvalidImage) as by_pillow:
        pipeline.to_uint8(decode_image(data, max_pixels=10**6))
    assert raised.value.detail == by_pillow.value.detail
