"""Decoding on the device: which JPEGs it takes, and how close its pixels are to the PIL path.

On a CPU torchvision's decode_jpeg runs libjpeg-turbo where a GPU runs nvJPEG; the resize,
crop and inversion after it are the same tensor code on both. Real photographs
(scikit-learn's samples), resized, recompressed, grey and turned by EXIF, give pixels
within a level or two of the PIL path that the CPU engines use.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image  # type: ignore[import-untyped]

from models.card import InputSpec
from models.pixels import PixelPipeline
from service.device_decode import TensorPixels, device_decodable, jpeg_header

IMAGENET = InputSpec(
    channels=3,
    height=224,
    width=224,
    resize="resize_center_crop",
    resize_size=256,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
STRETCHED = InputSpec(channels=3, height=64, width=96, mean=(0.5,) * 3, std=(0.25,) * 3)
GREY = InputSpec(channels=1, height=28, width=28, mean=(0.5,), std=(0.25,), invert=True)
_ORIENTATION = 0x0112


def jpeg(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def photographs() -> Iterator[tuple[str, bytes]]:
    """Real photos in several sizes, qualities, colour modes and orientations."""
    for name in ("china.jpg", "flower.jpg"):
        photo = Image.fromarray(load_sample_image(name))
        for scale in (1.0, 0.45, 1.6):
            size = (round(photo.width * scale), round(photo.height * scale))
            resized = photo.resize(size, Image.Resampling.LANCZOS)
            for quality in (60, 90):
                yield f"{name} x{scale} q{quality}", jpeg(resized, quality=quality)
        yield f"{name} grey", jpeg(photo.convert("L"), quality=85)
        exif = Image.Exif()
        exif[_ORIENTATION] = 6  # shown turned 90 degrees clockwise
        yield f"{name} exif-turned", jpeg(photo, quality=85, exif=exif.tobytes())


PHOTOS = list(photographs())


def test_the_frame_header_says_what_the_device_decoder_takes() -> None:
    photo = Image.fromarray(load_sample_image("china.jpg"))
    baseline = jpeg(photo, quality=90)
    header = jpeg_header(baseline)
    assert header is not None
    assert (header.width, header.height, header.components) == (photo.width, photo.height, 3)
    assert header.baseline and header.precision == 8
    assert device_decodable(baseline)
    assert device_decodable(jpeg(photo.convert("L")))
    progressive = jpeg(photo, progressive=True)
    assert jpeg_header(progressive) is not None and not device_decodable(progressive)
    cmyk = jpeg(photo.convert("CMYK"))
    cmyk_header = jpeg_header(cmyk)
    assert cmyk_header is not None and cmyk_header.components == 4
    assert not device_decodable(cmyk)
    png = io.BytesIO()
    photo.save(png, "PNG")
    for other in (png.getvalue(), b"", b"\xff\xd8", baseline[:40], b"\xff\xd8\xff\xda\x00\x02"):
        assert not device_decodable(other)


@pytest.mark.parametrize("spec", [IMAGENET, STRETCHED, GREY], ids=["crop", "stretch", "grey"])
def test_device_pixels_stay_within_a_level_or_two_of_the_pil_path(spec: InputSpec) -> None:
    pil, tensors = PixelPipeline(spec), TensorPixels(spec)
    assert all(device_decodable(data) for _, data in PHOTOS)
    batch = tensors.decode([data for _, data in PHOTOS], torch.device("cpu"))
    assert batch.shape == (len(PHOTOS), *spec.shape) and batch.dtype == torch.uint8
    means = []
    for (name, data), device_pixels in zip(PHOTOS, batch, strict=True):
        expected = pil.to_uint8(Image.open(io.BytesIO(data))).astype(np.int16)
        difference = np.abs(device_pixels.numpy().astype(np.int16) - expected)
        means.append(float(difference.mean()))
        # A level or two on average; a few pixels more at sharp edges.
        assert difference.mean() < 2.0, (name, difference.mean())
        assert np.percentile(difference, 99) <= 12, (name, np.percentile(difference, 99))
    print(f"mean absolute pixel difference ({spec.height}x{spec.width}): {np.mean(means):.3f}")
