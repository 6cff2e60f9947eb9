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

import sys
import warnings
from collections.abc import Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as transforms

from models.card import InputSpec
from models.pixels import PixelPipeline, crop_box, resized_size
from service.imaging import decode_image
from service.jpeg import JpegHeader, device_decodable, jpeg_header

__all__ = ["JpegHeader", "TensorPixels", "device_decodable", "jpeg_header"]


class TensorPixels:
    """A decoded [C,H,W] uint8 image -> the card's [C,H,W] uint8 pixels, on its device."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.mode = ImageReadMode.GRAY if spec.channels == 1 else ImageReadMode.RGB
        self._host = PixelPipeline(spec)  # the CPU path, for files the device refuses

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
        """Decode a batch of device-decodable JPEGs on `device`: [N,C,H,W] uint8 pixels.

        One call decodes them all. When it fails (a file corrupt past its header), each is
        decoded alone, and one the device decoder still refuses takes the CPU path; a file
        that path cannot read either raises InvalidImage, for that request alone (the
        batch is bisected: service.batch_run).
        """
        try:
            pixels = [self(image) for image in self._decode(images, device)]
        except RuntimeError:
            pixels = [self._decode_one(data, device, index) for index, data in enumerate(images)]
        return torch.stack(pixels)

    def _decode(self, images: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in images]
        with warnings.catch_warnings():
            # torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec;
            # they are still the ones with a batched nvJPEG decode in this torch release.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded: list[torch.Tensor] = decode_jpeg(
                encoded, mode=self.mode, device=device, apply_exif_orientation=True
            )
        return decoded

    def _decode_one(self, data: bytes, device: torch.device, index: int) -> torch.Tensor:
        try:
            return self(self._decode([data], device)[0])
        except RuntimeError:
            # Its size was checked against the limits before it was queued.
            image = decode_image(data, max_pixels=sys.maxsize, index=index)
            return torch.from_numpy(self._host.to_uint8(image)).to(device)
