"""From request bytes to model input: decode and preprocess off the event loop.

The work runs in a thread pool so the event loop never decodes an image; a
request with many images is spread across the pool's threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch

from models import Preprocessor
from service.imaging import decode_image


@dataclass(frozen=True)
class PreparedImages:
    pixels: torch.Tensor  # uint8 [N,C,H,W]
    seconds: float  # decode + preprocess, summed over the images


class ImagePipeline:
    def __init__(self, executor: Executor, *, workers: int, max_pixels: int) -> None:
        self._executor = executor
        self._workers = workers
        self._max_pixels = max_pixels

    def _prepare(
        self, preprocess: Preprocessor, images: Sequence[bytes], first_index: int
    ) -> tuple[list[np.ndarray], float]:
        started = time.perf_counter()
        arrays = [
            preprocess.to_uint8(
                decode_image(data, max_pixels=self._max_pixels, index=first_index + i)
            )
            for i, data in enumerate(images)
        ]
        return arrays, time.perf_counter() - started

    async def prepare(self, preprocess: Preprocessor, images: Sequence[bytes]) -> PreparedImages:
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
            pixels=torch.from_numpy(np.stack(arrays)), seconds=sum(s for _, s in parts)
        )
