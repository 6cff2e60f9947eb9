"""From request bytes to model input: decode and preprocess off the event loop.

Headers are read on the event loop (cheap: format and size only, which also
enforces the per-image and per-request pixel limits before any decoding).
Decoding runs in a thread pool, a request with many images spread across its
threads, except for small requests: a 28x28 digit decodes in tens of microseconds
through Pillow, less than the hop to a pool thread and back costs, so those are
finished in place. A PNG that is already the model's pixels (service.png) skips
Pillow: libpng decodes it in a few microseconds, so requests of many such images
are decoded in place too.

Memory: each thread decodes one image, resizes it to the model's size and frees
the full-size decode before it starts the next. The pool's threads are the only
places a full-size decode happens, so at most `workers` of them exist at once
across every request, whatever the requests hold; a large one's freed memory is
handed back to the system at once (service.allocator).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from models.card import InputSpec
from models.pixels import PixelPipeline
from service.allocator import release_freed_memory
from service.errors import RequestTimeout, TooManyPixels
from service.imaging import load_image, open_image
from service.jpeg import EncodedJpegs, device_decodable
from service.png import PlainPng, plain_png

# Up to this many pixels in a whole request, decoding in place beats a thread hop: through
# Pillow, and (about 0.3 ms for 64 digits) through libpng.
INLINE_PIXELS = 64 * 64
INLINE_PLAIN_PIXELS = 100_000
# A decode at least this large hands its freed memory back to the system when done:
# kept, as glibc keeps it (see service.allocator), a few would stay resident for good.
RELEASE_PIXELS = 4_000_000


# An image whose header has been read: Pillow's, or a PNG that is the model's pixels as it is.
Opened = Image.Image | PlainPng


def open_header(data: bytes, spec: InputSpec, *, max_pixels: int, index: int = 0) -> Opened:
    """Read one image's header; refused (ImageTooLarge, InvalidImage...) as Pillow refuses it."""
    plain = plain_png(data, spec)
    if plain is not None and plain.width * plain.height <= max_pixels:
        return plain
    return open_image(data, max_pixels=max_pixels, index=index)


def opened_pixels(preprocess: PixelPipeline, image: Opened, *, index: int = 0) -> NDArray[np.uint8]:
    """The model's [C,H,W] uint8 pixels of an opened image, which is closed after."""
    if isinstance(image, PlainPng):
        try:
            return image.pixels()
        except (RuntimeError, ValueError):  # libpng refused it: Pillow decodes it or says why not
            image = open_image(image.data, max_pixels=sys.maxsize, index=index)
    large = image.width * image.height >= RELEASE_PIXELS
    try:
        return preprocess.to_uint8(load_image(image, index=index))
    finally:
        image.close()  # the full-size decode goes before the next image's comes
        if large:
            release_freed_memory()


def decode_pixels(
    preprocess: PixelPipeline, data: bytes, *, max_pixels: int, index: int = 0
) -> NDArray[np.uint8]:
    """One image's model pixels, decoded as a request's images are."""
    image = open_header(data, preprocess.spec, max_pixels=max_pixels, index=index)
    return opened_pixels(preprocess, image, index=index)


@dataclass(frozen=True)
class PreparedImages:
    pixels: NDArray[np.uint8] | EncodedJpegs  # [N,C,H,W], or JPEGs left to the engine
    seconds: float  # decode + preprocess, summed over the images


def _check_deadline(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise RequestTimeout(f"the request's deadline passed {what}; nothing was queued")


class ImagePipeline:
    def __init__(
        self,
        executor: Executor,
        *,
        workers: int,
        max_pixels: int,
        max_request_pixels: int | None = None,
    ) -> None:
        self._executor = executor
        self._workers = workers
        self._max_pixels = max_pixels
        self._max_request_pixels = max_request_pixels

    @staticmethod
    def _prepare(
        preprocess: PixelPipeline,
        images: Sequence[Opened],
        first_index: int,
        deadline: float | None = None,
    ) -> tuple[list[np.ndarray], float]:
        started = time.perf_counter()
        arrays = []
        for i, image in enumerate(images):
            _check_deadline(deadline, "while its images were decoded")
            arrays.append(opened_pixels(preprocess, image, index=first_index + i))
        return arrays, time.perf_counter() - started

    def _open_all(self, spec: InputSpec, data: Sequence[bytes]) -> list[Opened]:
        images = [
            open_header(blob, spec, max_pixels=self._max_pixels, index=i)
            for i, blob in enumerate(data)
        ]
        total = sum(image.width * image.height for image in images)
        if self._max_request_pixels is not None and total > self._max_request_pixels:
            raise TooManyPixels(
                f"the request's {len(images)} images have {total} pixels together; "
                f"the limit is {self._max_request_pixels} (CNN_MAX_REQUEST_PIXELS)"
            )
        return images

    async def prepare(
        self,
        preprocess: PixelPipeline,
        data: Sequence[bytes],
        deadline: float | None = None,
        *,
        keep_jpegs: bool = False,
    ) -> PreparedImages:
        """The model's pixels; with `keep_jpegs` (an engine that decodes JPEGs on its
        device), a request of baseline JPEGs only stays encoded, its limits checked."""
        started = time.perf_counter()
        images = self._open_all(preprocess.spec, data)
        header_s = time.perf_counter() - started
        if keep_jpegs and all(
            isinstance(image, Image.Image) and image.format == "JPEG" and device_decodable(blob)
            for image, blob in zip(images, data, strict=True)
        ):
            for image in images:
                image.close()
            return PreparedImages(EncodedJpegs(tuple(data)), time.perf_counter() - started)
        if _decodes_in_place(images):
            arrays, seconds = self._prepare(preprocess, images, 0)
            return PreparedImages(np.stack(arrays), header_s + seconds)
        loop = asyncio.get_running_loop()
        step = max(1, -(-len(images) // self._workers))
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._executor,
                    self._prepare,
                    preprocess,
                    images[start : start + step],
                    start,
                    deadline,
                )
                for start in range(0, len(images), step)
            )
        )
        _check_deadline(deadline, "while its images were decoded")
        arrays = [array for part, _ in parts for array in part]
        return PreparedImages(pixels=np.stack(arrays), seconds=header_s + sum(s for _, s in parts))


def _decodes_in_place(images: Sequence[Opened]) -> bool:
    pillow = sum(i.width * i.height for i in images if not isinstance(i, PlainPng))
    plain = sum(i.width * i.height for i in images if isinstance(i, PlainPng))
    return pillow <= INLINE_PIXELS and plain <= INLINE_PLAIN_PIXELS
