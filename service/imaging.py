"""Decoding image bytes into a PIL image, safely.

The pixel limit is checked from the header, before any pixel is decoded, so a
small file that claims 20000x20000 pixels costs nothing. Multi-frame files
(GIF, TIFF) give their first frame.

Only the documented formats are ever parsed: Pillow registers some forty decoders,
and each one a request can reach is attack surface (EPS even runs Ghostscript).
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage, UnsupportedImageFormat

# The formats the README documents; Pillow's JPEG opener also reads MPO (phone camera) files.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
SUPPORTED = "PNG, JPEG, WebP, BMP, GIF or TIFF"

# We enforce our own limit (max_image_pixels) before decoding; PIL's global one would
# raise its own error type, or only warn, at a different threshold.
Image.MAX_IMAGE_PIXELS = None


def open_image(data: bytes, *, max_pixels: int, index: int = 0) -> Image.Image:
    """Read only the header: the format and the size, refused when over the pixel limit."""
    where = f"image {index}"
    if not data:
        raise InvalidImage(f"{where} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd-but-readable files (EXIF, palettes)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as exc:
        _refuse_unsupported(data, where)
        raise InvalidImage(f"{where} is not in a supported image format ({SUPPORTED})") from exc
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"{where} is not in a supported image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise InvalidImage(f"{where} could not be read (truncated or corrupt): {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{where} is {width}x{height} = {width * height} pixels; "
            f"the limit is {max_pixels} (CNN_MAX_IMAGE_PIXELS)"
        )
    return image


def _signature_format(data: bytes) -> str | None:
    """The format whose signature the bytes start with, by Pillow's prefix checks alone.

    Only those checks run, never an undocumented format's parser; formats without a
    signature (TGA, IM) stay unnamed.
    """
    prefix = data[:16]  # what Pillow itself hands its checks
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name not in FORMATS and accept is not None and _accepts(accept, prefix):
            return name
    return None


def _accepts(accept: Callable[[bytes], object], prefix: bytes) -> bool:
    try:
        return bool(accept(prefix))
    except (struct.error, IndexError, TypeError, ValueError, SyntaxError):
        return False  # a check that reads past a short body: Pillow's open catches the same


def _refuse_unsupported(data: bytes, where: str) -> None:
    name = _signature_format(data)
    if name is not None:
        raise UnsupportedImageFormat(f"{where} is {name}; the service decodes {SUPPORTED} only")


def load_image(image: Image.Image, *, index: int = 0) -> Image.Image:
    """Decode the pixels of an opened image (its first frame)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise InvalidImage(
            f"image {index} could not be decoded (truncated or corrupt): {exc}"
        ) from exc
    return image


def decode_image(data: bytes, *, max_pixels: int, index: int = 0) -> Image.Image:
    return load_image(open_image(data, max_pixels=max_pixels, index=index), index=index)
