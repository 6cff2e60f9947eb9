"""Decoded image -> the uint8 [C,H,W] pixels a model's card asks for: orient, convert, resize.

The first half of preprocessing (models.preprocess adds the normalization), in PIL and
NumPy alone: a process that only decodes (an HTTP worker) imports it without torch.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from models.card import InputSpec

_ORIENTATION = 0x0112  # the EXIF tag
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float grey images: scale to 0..255 instead of letting PIL clip them."""
    if image.mode not in _SIXTEEN_BIT_MODES:
        return image
    pixels = np.asarray(image, dtype=np.float32)
    top = 1.0 if image.mode == "F" else 65535.0
    return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8))


def _oriented(image: Image.Image) -> Image.Image:
    """The image as the camera's EXIF orientation says to show it.

    `ImageOps.exif_transpose` copies an image that needs no turning (most of them):
    for a 40 M pixel photo that copy is 160 MB of memory for nothing.
    """
    if image.getexif().get(_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent images onto white, the way a viewer shows them."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image


class PixelPipeline:
    """Any PIL image -> the [C,H,W] uint8 pixels of the card's input size and colour mode."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self._mode = "L" if spec.channels == 1 else "RGB"

    def to_uint8(self, image: Image.Image) -> NDArray[np.uint8]:
        """Orient, convert and resize: the [C,H,W] uint8 pixels the model will see."""
        image = _oriented(image)
        image = _flatten_alpha(_to_8bit(image))
        if image.mode != self._mode:
            image = image.convert(self._mode)
        image = self._resize(image)
        pixels = np.asarray(image, dtype=np.uint8)
        if self.spec.invert:
            pixels = 255 - pixels
        if pixels.ndim == 2:
            return pixels[np.newaxis, :, :].copy()
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def _resize(self, image: Image.Image) -> Image.Image:
        new_size = resized_size(self.spec, *image.size)
        if new_size != image.size:
            image = image.resize(new_size, Image.Resampling.BILINEAR)
        box = crop_box(self.spec, *image.size)
        return image if box is None else image.crop(box)


# The geometry of the card's resize, shared by every implementation of it (this one in
# PIL, service.device_decode's on tensors): one definition of what the model sees.


def resized_size(spec: InputSpec, width: int, height: int) -> tuple[int, int]:
    """(width, height) after the resize, before any crop."""
    if spec.resize == "resize_center_crop":
        target_short = spec.resize_size or min(spec.height, spec.width)
        scale = target_short / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return spec.width, spec.height


def crop_box(spec: InputSpec, width: int, height: int) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the centre crop of a resized image; None: no crop."""
    if spec.resize != "resize_center_crop":
        return None
    left = (width - spec.width) // 2
    top = (height - spec.height) // 2
    return left, top, left + spec.width, top + spec.height
