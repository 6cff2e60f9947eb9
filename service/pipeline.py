"""From request bytes to model input: decode and preprocess off the event loop.

Headers are read on the event loop (cheap: format and size only, which also
enforces the pixel limit before any decoding). Decoding runs in a thread pool,
a request with many images spread across its threads, except for tiny images:
a 28x28 digit decodes in tens of microseconds, less than the hop to a pool
thread and back costs, so those are finished in place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from models import Preprocessor
from service.imaging import load_image, open_image

# Up to this many pixels in a whole request, decoding in place beats a thread hop.
INLINE_PIXELS = 64 * 64


@dataclass(frozen=True)
class PreparedImages:
    pixels: torch.Tensor  # uint8 [N,C,H,W]
    seconds: float  # decode + preprocess, summed over the images


class ImagePipeline:
    def __init__(self, executor: Executor, *, workers: int, max_pixels: int) -> None:
        self._executor = executor
        self._workers = workers
        self._max_pixels = max_pixels

    @staticmethod
    def _prepare(
        preprocess: Preprocessor, images: Sequence[Image.Image], first_index: int
    ) -> tuple[list[np.ndarray], float]:
        started = time.perf_counter()
        arrays = [
            preprocess.to_uint8(load_image(image, index=first_index + i))
            for i, image in enumerate(images)
        ]
        return arrays, time.perf_counter() - started

    async def prepare(self, preprocess: Preprocessor, data: Sequence[bytes]) -> PreparedImages:
        started = time.perf_counter()
        images = [
            open_image(blob, max_pixels=self._max_pixels, index=i) for i, blob in enumerate(data)
        ]
        header_s = time.perf_counter() - started
        if sum(image.width * image.height for image in images) <= INLINE_PIXELS:
            arrays, seconds = self._prepare(preprocess, images, 0)
            return PreparedImages(torch.from_numpy(np.stack(arrays)), header_s + seconds)
        loop = asyncio.get_running_loop()
        step = max(1, -(-len(images) // self._workers))
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._executor, self._prepare, preprocess, images[start : start + step], start
                )
                for start in range(0, len(images), step)
            )
        )
        arrays = [array for part, _ in parts for array in part]
        return PreparedImages(
            pixels=torch.from_numpy(np.stack(arrays)), seconds=header_s + sum(s for _, s in parts)
        )
