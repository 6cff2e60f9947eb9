"""Heatmap PNGs: the colours, the orientation, the blend and the image underneath."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from models import LoadedModel, load
from models.card import InputSpec
from models.preprocess import Preprocessor, seen_pixels
from service.errors import InvalidParameter, ResponseTooLarge
from service.heatmaps import INFERNO, heatmap_png, overlay_png
from tests.helpers import ROOT, Digits


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def mnist() -> LoadedModel:
    return load(ROOT / "models" / "weights" / "mnist-cnn.json")


def test_inferno_is_matplotlibs_and_grows_lighter() -> None:
    original = np.array([matplotlib.colormaps["inferno"](i / 255)[:3] for i in range(256)]) * 255
    assert INFERNO.shape == (256, 3)
    assert np.abs(INFERNO.astype(float) - original).max() <= 2.0
    luma = INFERNO.astype(float) @ np.array([0.2126, 0.7152, 0.0722])
    # Lightness rises throughout (Rec. 709 luma dips by under 1/2 level where rounding bites).
    assert (np.diff(luma) > -0.5).all()
    assert luma[-1] - luma[0] > 200


def test_the_model_saw_pixels_come_back_exactly(mnist: LoadedModel, digits: Digits) -> None:
    image = digits.images[4]
    x = mnist.preprocess(image)[None]
    np.testing.assert_array_equal(
        seen_pixels(x, mnist.preprocess), mnist.preprocess.to_uint8(image)
    )
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    spec = InputSpec(channels=3, height=5, width=7, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    preprocess = Preprocessor(spec)
    back = seen_pixels(preprocess(rgb)[None], preprocess)
    np.testing.assert_array_equal(back, np.asarray(rgb).transpose(2, 0, 1))


def test_heatmap_keeps_orientation_and_scale() -> None:
    attribution = np.zeros((2, 3), dtype=np.float32)
    attribution[0, 2] = 5.0  # top right: brightest
    attribution[1, 0] = -1.0  # bottom left: darkest
    pixels = decode(heatmap_png(attribution, scale=4))
    assert pixels.shape == (8, 12, 3)
    np.testing.assert_array_equal(pixels[0:4, 8:12], np.broadcast_to(INFERNO[255], (4, 4, 3)))
    np.testing.assert_array_equal(pixels[4:8, 0:4], np.broadcast_to(INFERNO[0], (4, 4, 3)))
    middle = round(255 * 1 / 6)  # 0 on a -1..5 scale
    np.testing.assert_array_equal(pixels[0, 0], INFERNO[middle])


def test_a_digit_is_enlarged_to_224_pixels_by_default() -> None:
    assert decode(heatmap_png(np.ones((28, 28), dtype=np.float32))).shape == (224, 224, 3)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_overlay_blends_the_heatmap_over_the_image(alpha: float) -> None:
    attribution = np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32)
    grey = np.array([[[10, 200], [90, 255]]], dtype=np.uint8)
    got = decode(overlay_png(attribution, grey, alpha=alpha, scale=1)).astype(float)
    levels = np.rint(attribution / 4.0 * 255).astype(int)
    expected = (1 - alpha) * grey[0][:, :, None].astype(float) + alpha * INFERNO[levels]
    np.testing.assert_array_equal(got, np.rint(expected))


def test_overlay_of_an_rgb_image() -> None:
    rgb = np.zeros((3, 2, 2), dtype=np.uint8)
    rgb[0] = 255  # pure red
    got = decode(overlay_png(np.zeros((2, 2), dtype=np.float32), rgb, alpha=0.0, scale=1))
    np.testing.assert_array_equal(got[..., 0], 255)
    np.testing.assert_array_equal(got[..., 1:], 0)


def test_bad_options_are_refused() -> None:
    attribution = np.zeros((28, 28), dtype=np.float32)
    grey = np.zeros((1, 28, 28), dtype=np.uint8)
    with pytest.raises(InvalidParameter, match="alpha=1.5: must be between 0 and 1"):
        overlay_png(attribution, grey, alpha=1.5)
    with pytest.raises(InvalidParameter, match="scale=0: must be 1 to 32"):
        heatmap_png(attribution, scale=0)
    with pytest.raises(ResponseTooLarge, match="7168x7168"):
        heatmap_png(np.zeros((224, 224), dtype=np.float32), scale=32)
