"""Decoding on the device: which JPEGs it takes, and how close its pixels are to the PIL path.

On a CPU torchvision's decode_jpeg runs libjpeg-turbo where a GPU runs nvJPEG; the resize,
crop and inversion after it are the same tensor code on both. Real photographs
(scikit-learn's samples), resized, recompressed, grey and turned by EXIF, give pixels
within a level or two of the PIL path that the CPU engines use.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image  # type: ignore[import-untyped]

import models
from models.card import InputSpec
from models.pixels import PixelPipeline
from service.batching import Batcher
from service.device_decode import TensorPixels, device_decodable, jpeg_header
from service.devices import plan_for
from service.engine import Engine
from service.errors import InvalidImage
from service.jpeg import EncodedJpegs
from service.results import ItemResult
from tests.helpers import held_out_digits

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


def corrupt(data: bytes) -> bytes:
    """The same header, its scan cut short: no decoder can finish it."""
    return data[: len(data) // 2]


def test_jpegs_cross_processes_back_to_back_and_split_like_pixels() -> None:
    files = tuple(data for _, data in PHOTOS[:5])
    kept = EncodedJpegs(files)
    joined, lengths = kept.joined()
    assert len(joined) == sum(lengths) and lengths == [len(data) for data in files]
    assert EncodedJpegs.from_joined(memoryview(joined), lengths) == kept
    with pytest.raises(ValueError, match="bytes of JPEG files"):
        EncodedJpegs.from_joined(joined + b"\x00", lengths)
    parts = kept.split(2)
    assert [len(part) for part in parts] == [2, 2, 1]
    assert tuple(data for part in parts for data in part.data) == files


def test_a_file_that_no_decoder_reads_is_a_clear_invalid_image() -> None:
    tensors = TensorPixels(IMAGENET)
    good = PHOTOS[0][1]
    with pytest.raises(InvalidImage, match="image 1"):
        tensors.decode([good, corrupt(good)], torch.device("cpu"))


class RefusesLargeFiles(TensorPixels):
    """A device decoder that refuses files over a size, as nvJPEG refuses some it cannot do."""

    def __init__(self, spec: InputSpec, limit: int) -> None:
        super().__init__(spec)
        self.limit = limit
        self.calls: list[int] = []

    def _decode(self, images: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
        self.calls.append(len(images))
        if any(len(data) > self.limit for data in images):
            raise RuntimeError("not supported by this decoder")
        return super()._decode(images, device)


def test_files_the_device_refuses_take_the_cpu_path_and_the_rest_stay_on_it() -> None:
    small, large = sorted((data for _, data in PHOTOS[:3]), key=len)[:2]
    decoder = RefusesLargeFiles(IMAGENET, limit=len(small))
    pixels = decoder.decode([small, large], torch.device("cpu"))
    # One batched call, then each file alone: the small one on the device decoder.
    assert decoder.calls == [2, 1, 1]
    assert torch.equal(pixels[0], TensorPixels(IMAGENET).decode([small], torch.device("cpu"))[0])
    expected = PixelPipeline(IMAGENET).to_uint8(Image.open(io.BytesIO(large)))
    assert np.array_equal(pixels[1].numpy(), expected)  # exactly the PIL path's pixels


def digit_jpegs(count: int) -> list[bytes]:
    digits = held_out_digits()
    return [jpeg(image, quality=90) for image in digits.images[:count]]


def test_the_engine_decodes_a_batch_of_jpegs_beside_pixels_sent_decoded() -> None:
    loaded = models.load(models.default_model_path())
    engine = Engine(loaded, plan_for("cpu", "fp32", device_decode="on"))
    files = digit_jpegs(5)
    decoded = TensorPixels(loaded.card.input).decode(files, torch.device("cpu"))
    normalized = loaded.preprocess.normalize(decoded[4:])  # a V2 FP32 request's tensor
    mixed = engine.run([EncodedJpegs(tuple(files[:2])), decoded[2:4], normalized]).probabilities
    assert np.allclose(mixed, engine.run([decoded]).probabilities, atol=1e-6)
    jpegs_only = engine.run([EncodedJpegs(tuple(files[:3])), EncodedJpegs(tuple(files[3:]))])
    assert np.allclose(jpegs_only.probabilities, mixed, atol=1e-6)


def test_a_broken_jpeg_fails_its_own_request_and_the_rest_of_its_batch_is_answered() -> None:
    loaded = models.load(models.default_model_path())
    engine = Engine(loaded, plan_for("cpu", "fp32", device_decode="on"))
    batcher = Batcher("digits", [engine], max_batch_size=8, max_delay_s=0.05, max_queue_images=64)
    files = digit_jpegs(3)
    requests = [files[0], corrupt(files[1]), files[2]]
    outcomes: dict[int, object] = {}
    done = threading.Event()

    def answer(index: int) -> Callable[[object], None]:
        def settle(outcome: object) -> None:
            outcomes[index] = outcome
            if len(outcomes) == len(requests):
                done.set()

        return settle

    deadline = time.monotonic() + 30
    for index, data in enumerate(requests):  # queued before the worker starts: one batch
        batcher.enqueue(EncodedJpegs((data,)), deadline=deadline, on_done=answer(index))
    batcher.start()
    try:
        assert done.wait(30)
    finally:
        batcher.stop(5)
    assert isinstance(outcomes[1], InvalidImage)
    expected = engine.run([EncodedJpegs((files[0], files[2]))]).probabilities
    for index, row in ((0, 0), (2, 1)):
        result = outcomes[index]
        assert isinstance(result, ItemResult)
        assert np.allclose(result.probabilities[0], expected[row], atol=1e-6)
