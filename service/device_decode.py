"""JPEG decoding where the model runs: torchvision's batched decode (nvJPEG on a GPU), then
the card's resize and crop on tensors.

A 16-core node decodes a 427x640 photo in about 3 ms per core, which caps a GPU engine
fed by CPU decoding near 5,000 images/s. Decoding on the device moves that work to the
GPU. What nvJPEG takes here: baseline 8-bit JPEGs with one or three components, read
from their frame header before any decoding (`jpeg_header`). Progressive and
arithmetic-coded JPEGs, CMYK and YCCK (four components), 12-bit samples and every other
format keep the CPU path (service.pipeline), as does every CPU engine.

The geometry is models.pixels' (`resized_size`, `crop_box`): one definition of the card's
preprocessing, in PIL there and on tensors here. Resizing is bilinear with antialiasing,
as PIL's; the two decoders and resamplers round differently, so pixels may differ by a
level or two (tests/service/test_device_decode.py measures it on real photographs).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as transforms

from models.card import InputSpec
from models.pixels import crop_box, resized_size

# Start-of-frame markers (ITU T.81, B.1.1.3): 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) are not.
_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_BASELINE_HUFFMAN = frozenset({0xC0, 0xC1})  # baseline and extended sequential, Huffman
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length follows
_START_OF_SCAN = 0xDA


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    components: int  # 1 grey, 3 YCbCr (or RGB), 4 CMYK or YCCK
    precision: int  # bits per sample
    baseline: bool  # sequential, Huffman-coded: what nvJPEG decodes


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header of a JPEG, from its markers alone; None for anything else."""
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2 or marker == _START_OF_SCAN:
            return None  # malformed, or a scan before any frame header
        if marker in _FRAMES:
            frame = data[position + 4 : position + 2 + length]
            if len(frame) < 6:
                return None
            return JpegHeader(
                width=int.from_bytes(frame[3:5], "big"),
                height=int.from_bytes(frame[1:3], "big"),
                components=frame[5],
                precision=frame[0],
                baseline=marker in _BASELINE_HUFFMAN,
            )
        position += 2 + length
    return None


def device_decodable(data: bytes) -> bool:
    """Whether the device decoder takes this image (else the CPU path decodes it)."""
    header = jpeg_header(data)
    return (
        header is not None
        and header.baseline
        and header.precision == 8
        and header.components in (1, 3)
        and header.width > 0
        and header.height > 0
    )


class TensorPixels:
    """A decoded [C,H,W] uint8 image -> the card's [C,H,W] uint8 pixels, on its device."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.mode = ImageReadMode.GRAY if spec.channels == 1 else ImageReadMode.RGB

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _, height, width = image.shape
        new_width, new_height = resized_size(self.spec, width, height)
        if (new_width, new_height) != (width, height):
            image = transforms.resize(
                image,
                [new_height, new_width],
                interpolation=InterpolationMode.BILINEAR,
                antialias=True,
            )
        box = crop_box(self.spec, new_width, new_height)
        if box is not None:
            left, top, right, bottom = box
            image = image[:, top:bottom, left:right]
        if self.spec.invert:
            image = 255 - image
        return image.contiguous()

    def decode(self, images: Sequence[bytes], device: torch.device) -> torch.Tensor:
        """Decode a batch of device-decodable JPEGs on `device`: [N,C,H,W] uint8 pixels."""
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in images]
        with warnings.catch_warnings():
            # torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec;
            # they are still the ones with a batched nvJPEG decode in this torch release.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = decode_jpeg(
                encoded, mode=self.mode, device=device, apply_exif_orientation=True
            )
        return torch.stack([self(image) for image in decoded])
