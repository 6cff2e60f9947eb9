from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from models import InputSpec, Preprocessor
from tests.helpers import ROOT

GREY = InputSpec(channels=1, height=28, width=28, mean=(0.1307,), std=(0.3081,))
RGB = InputSpec(
    channels=3,
    height=8,
    width=8,
    resize="resize_center_crop",
    resize_size=10,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "CMYK", "I;16", "1", "LA", "I", "F"])
def test_every_mode_becomes_the_card_shape(mode: str) -> None:
    image = Image.new("L", (30, 20), 200).convert(mode)
    for spec in (GREY, RGB):
        out = Preprocessor(spec)(image)
        assert out.shape == spec.shape and out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_sixteen_bit_images_are_scaled_not_clipped() -> None:
    pixels = np.full((28, 28), 32768, dtype=np.uint16)
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"
    uint8 = Preprocessor(GREY).to_uint8(image)
    assert int(uint8[0, 0, 0]) == round(32768 * 255 / 65535)


def test_normalization_arithmetic() -> None:
    image = Image.new("RGB", (10, 10), (255, 0, 128))
    out = Preprocessor(RGB)(image)
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(out[:, 0, 0], torch.tensor(expected))


def test_exif_orientation_is_applied() -> None:
    image = Image.new("L", (40, 20), 0)
    image.paste(255, (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    buffer.seek(0)
    shown = Preprocessor(GREY).to_uint8(Image.open(buffer))
    # after rotation the white half is at the top
    assert shown[0, :10].mean() > 200 and shown[0, -10:].mean() < 50


def test_transparent_pixels_sit_on_white() -> None:
    image = Image.new("RGBA", (28, 28), (0, 0, 0, 0))
    assert int(Preprocessor(GREY).to_uint8(image).min()) == 255


def test_center_crop_keeps_the_middle() -> None:
    image = Image.new("L", (40, 20), 0)
    image.paste(255, (15, 0, 25, 20))  # a white band in the middle
    out = Preprocessor(RGB).to_uint8(image)
    assert out.shape == (3, 8, 8)
    assert out[:, :, 3:5].mean() > 150 and out[:, :, 0].mean() < 50


def test_decoding_to_pixels_needs_no_torch() -> None:
    """A process that only decodes (an HTTP worker) turns images into the model's pixels
    without importing torch, and gets exactly what the Preprocessor gives."""
    code = (
        "import sys, numpy as np; from PIL import Image; "
        "from models.card import InputSpec; from models.pixels import PixelPipeline; "
        "spec = InputSpec(channels=3, height=8, width=8, mean=(0.5,) * 3, std=(0.5,) * 3); "
        "image = Image.fromarray(np.arange(30 * 20 * 3, dtype=np.uint8).reshape(30, 20, 3)); "
        "print(PixelPipeline(spec).to_uint8(image).sum(), 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    total, imported = done.stdout.split()
    spec = InputSpec(channels=3, height=8, width=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    image = Image.fromarray(np.arange(30 * 20 * 3, dtype=np.uint8).reshape(30, 20, 3))
    assert int(total) == int(Preprocessor(spec).to_uint8(image).sum())
    assert imported == "False"
