"""PNGs whose samples are already the model's pixels: decoded by libpng in one call.

Pillow reads a PNG's chunks in Python: for a 28x28 digit that is about 30 us of
interpreter time, most of what the service spends on the image, and all of it
under the GIL that the event loop needs. An 8-bit grey or RGB PNG that is already
the model's size has nothing left to orient, convert, flatten or resize, and PNG
is lossless, so its decoded samples are exactly the pixels Pillow's path would
give: imagecodecs (libpng) decodes it in about 4 us, with the GIL released.

Only that case is taken, judged from the header and the chunk names alone (no
chunk is decompressed to judge it). Palettes, transparency, 16-bit or sub-byte
samples, interlacing, EXIF or text chunks (they may turn the image), any other size
or colour mode, and any chunk not named below go through Pillow as before, and so
does a file libpng refuses (its error is Pillow's to report). Torch-free: the
HTTP workers import it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import imagecodecs
import numpy as np
from numpy.typing import NDArray

from models.card import InputSpec
from models.pixels import crop_box, resized_size

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that change no sample Pillow's path yields: timestamps, physical size, colour-space
# and gamma notes (Pillow records them and leaves the samples alone). Not text chunks:
# Pillow reads an EXIF or XMP orientation from "Raw profile type exif" and XMP text.
PLAIN_CHUNKS = frozenset(
    {b"IHDR", b"IDAT", b"IEND", b"pHYs", b"tIME", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT"}
)
GREY, RGB = 0, 2  # IHDR colour types
_COLOUR_TYPE = {1: GREY, 3: RGB}  # the card's channels -> the colour type that is its pixels
_IHDR = struct.Struct(">IIBBBBB")
_CHUNK_HEAD = struct.Struct(">I4s")  # length, kind


@dataclass(slots=True)  # not frozen: a frozen one costs 4x as much to make, 64 times a request
class PlainPng:
    """A PNG whose decoded samples are the model's pixels as they are (see plain_png)."""

    data: bytes
    width: int
    height: int
    invert: bool  # the card's: 255 - value, as Pillow's path does after decoding

    def close(self) -> None:
        """Nothing to release (Pillow's images hold a decoder): one call for either kind."""

    def pixels(self) -> NDArray[np.uint8]:
        """The [C,H,W] uint8 pixels; imagecodecs.PngError where libpng refuses the file."""
        samples = imagecodecs.png_decode(self.data)
        expected = (self.height, self.width) if samples.ndim == 2 else (self.height, self.width, 3)
        if samples.dtype != np.uint8 or samples.shape != expected:
            raise imagecodecs.PngError(f"decoded {samples.dtype} {samples.shape}, not {expected}")
        if self.invert:
            samples = 255 - samples
        if samples.ndim == 2:
            return samples[np.newaxis]
        return np.ascontiguousarray(samples.transpose(2, 0, 1))


def plain_png(data: bytes, spec: InputSpec) -> PlainPng | None:
    """The image as a PlainPng when its samples are the model's pixels, else None."""
    if not data.startswith(SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    width, height, depth, colour, _, _, interlace = _IHDR.unpack_from(data, 16)
    if depth != 8 or interlace != 0 or colour != _COLOUR_TYPE.get(spec.channels):
        return None
    if resized_size(spec, width, height) != (width, height):
        return None
    box = crop_box(spec, width, height)
    if box is not None and box != (0, 0, width, height):
        return None
    if not _chunks_are_plain(data):
        return None
    return PlainPng(data, width, height, spec.invert)


def _chunks_are_plain(data: bytes) -> bool:
    """Every chunk up to IEND is one of PLAIN_CHUNKS, and the file holds them whole."""
    position: int = len(SIGNATURE)
    end = len(data)
    head = _CHUNK_HEAD.unpack_from
    while position + 8 <= end:
        length, kind = head(data, position)
        if kind not in PLAIN_CHUNKS:
            return False
        position += 12 + length  # length, kind, data, CRC
        if kind == b"IEND":
            return position <= end
    return False  # cut short before IEND: Pillow reports it
