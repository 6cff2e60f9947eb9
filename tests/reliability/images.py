"""Image files for the bad-input tests: every mode a client may send, and broken ones."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

from tests.helpers import png_bytes


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width x height grey pixels; its data is far too short.

    Decoding it fails (truncated), so an answer other than 'invalid image' proves the
    service judged it from the header alone.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def truncated_jpeg(digit: Image.Image) -> bytes:
    data = png_bytes(digit.resize((112, 112)), "JPEG", quality=95)
    return data[: len(data) * 2 // 3]


def converted_variants(digit: Image.Image) -> dict[str, bytes]:
    """The same grey digit (white on black) in the modes and formats clients send."""
    grey = np.asarray(digit.convert("L"))
    # Alpha only: black paint whose opacity is the ink; composited onto white it is the digit.
    rgba = np.zeros((*grey.shape, 4), dtype=np.uint8)
    rgba[..., 3] = 255 - grey
    second = Image.fromarray(255 - grey)
    frames: list[Image.Image] = [digit.convert("P"), second.convert("P")]
    return {
        "16-bit grey PNG": png_bytes(Image.fromarray(grey.astype(np.uint16) * 257)),
        "palette PNG": png_bytes(digit.convert("P")),
        "CMYK JPEG": png_bytes(digit.convert("CMYK"), "JPEG", quality=100),
        "RGBA PNG, ink in the alpha channel": png_bytes(Image.fromarray(rgba, "RGBA")),
        "grey + alpha PNG": png_bytes(digit.convert("LA")),
        "animated GIF (first frame is the digit)": png_bytes(
            frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0
        ),
        "RGB WebP, lossless": png_bytes(digit.convert("RGB"), "WEBP", lossless=True),
        "BMP": png_bytes(digit, "BMP"),
        "TIFF": png_bytes(digit, "TIFF"),
    }
