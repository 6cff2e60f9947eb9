"""The one preprocessing implementation: PIL image -> normalized [C,H,W] tensor.

Training, evaluation, the Python API and the service all call this, built from
the card's input spec, so the service sees every image exactly as training did.
It is split in two steps so callers that already hold uint8 pixels (a tensor
sent over the V2 protocol, say) share the normalization arithmetic; the first
step, decoded image to uint8 pixels, is models.pixels, which needs no torch.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from models.card import InputSpec
from models.pixels import PixelPipeline


class Preprocessor:
    """Turns any PIL image into the tensor the model's card describes."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self._pixels = PixelPipeline(spec)
        std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
        # (x / 255 - mean) / std, folded into one multiply-add.
        self._scale = torch.from_numpy(1.0 / (255.0 * std))
        self._offset = torch.from_numpy(-mean / std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(torch.from_numpy(self.to_uint8(image)))

    def to_uint8(self, image: Image.Image) -> NDArray[np.uint8]:
        """Orient, convert and resize: the [C,H,W] uint8 pixels the model will see."""
        return self._pixels.to_uint8(image)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [..., C, H, W] -> float32 normalized, for one image or a batch."""
        return pixels.to(torch.float32).mul_(self._scale).add_(self._offset)

    @property
    def normalize_scale(self) -> torch.Tensor:
        """[C,1,1] multiplier of uint8 pixels; with normalize_offset, the whole normalization."""
        return self._scale

    @property
    def normalize_offset(self) -> torch.Tensor:
        return self._offset


def seen_pixels(x: torch.Tensor, preprocess: Preprocessor) -> NDArray[np.uint8]:
    """A preprocessed [1, C, H, W] input back to the uint8 [C, H, W] pixels it came from."""
    scale = preprocess.normalize_scale.to(x.device)
    offset = preprocess.normalize_offset.to(x.device)
    pixels = ((x[0].detach().float() - offset) / scale).round().clamp(0, 255)
    return pixels.to(torch.uint8).cpu().numpy()
