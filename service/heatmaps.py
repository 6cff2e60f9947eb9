"""Attribution maps as PNG: the heatmap alone, or laid over the image the model saw.

The map is min-max scaled to 0..255 (its lowest value darkest: for signed
maps, IG and occlusion, the most negative evidence) and coloured with
inferno, a perceptually uniform map running from black through red to pale
yellow whose lightness rises steadily, so the strongest evidence is the
brightest. Viridis, used for feature maps, would do too; a second map tells
an explanation from a feature map at a glance. The overlay blends it over the
pixels the model saw (after resizing, before normalization; grey-scale shown
as grey) as (1 - alpha) * image + alpha * heatmap. `scale` enlarges by
nearest-neighbour repetition, like the feature-map grids.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from service.errors import InvalidParameter, ResponseTooLarge
from service.rendering import (
    MAX_GRID_PIXELS,
    MAX_SCALE,
    encode_png,
    lut_from_stops,
    minmax_levels,
    upscale,
)

# Inferno (public domain) sampled at 33 evenly spaced points of its 256, as RGB hex;
# linear interpolation between them gives all 256 within 2/255 of the original.
_INFERNO_STOPS = (
    "0000040403120b0724150b37210c4a2f0a5b3d09654a0c6b57106e64156e71196e7d1e6d"
    "8a226a972766a32c61b0315bbc3754c63d4dd04545da4e3ce35933eb6429f1711ff67e14"
    "f98c0afb9b06fcaa0ffbba1ff9c932f5d949f2e865f3f586fcffa4"
)
INFERNO = lut_from_stops(
    np.frombuffer(bytes.fromhex(_INFERNO_STOPS), dtype=np.uint8).reshape(-1, 3).astype(np.float64)
)
DEFAULT_ALPHA = 0.5
_DEFAULT_SIDE = 224  # small inputs are enlarged to about this many pixels a side


def default_scale(height: int, width: int) -> int:
    """Enlarge small inputs (a 28 x 28 digit: 8 times) to about 224 pixels a side."""
    return max(1, min(MAX_SCALE, _DEFAULT_SIDE // max(height, width)))


def _checked_scale(height: int, width: int, scale: int | None) -> int:
    scale = default_scale(height, width) if scale is None else scale
    if not 1 <= scale <= MAX_SCALE:
        raise InvalidParameter(f"scale={scale}: must be 1 to {MAX_SCALE}")
    pixels = height * scale * width * scale
    if pixels > MAX_GRID_PIXELS:
        raise ResponseTooLarge(
            f"the heatmap would be {width * scale}x{height * scale} = {pixels} pixels; "
            f"the limit is {MAX_GRID_PIXELS}: ask for a smaller scale"
        )
    return scale


def heatmap_rgb(attribution: NDArray[np.float32], scale: int = 1) -> NDArray[np.uint8]:
    """[H, W] map -> [H * scale, W * scale, 3] inferno colours, lowest value darkest."""
    levels = minmax_levels(attribution[np.newaxis])[0]
    return INFERNO[upscale(levels, scale)]


def overlay_rgb(
    attribution: NDArray[np.float32], pixels: NDArray[np.uint8], alpha: float, scale: int = 1
) -> NDArray[np.uint8]:
    """The heatmap blended over uint8 [C, H, W] pixels (C = 1 or 3)."""
    if not 0.0 <= alpha <= 1.0:
        raise InvalidParameter(f"alpha={alpha}: must be between 0 and 1")
    if pixels.shape[-2:] != attribution.shape:
        raise ValueError(f"pixels {pixels.shape} and map {attribution.shape} differ in size")
    image = upscale(pixels, scale).transpose(1, 2, 0).astype(np.float64)
    if image.shape[2] == 1:
        image = image.repeat(3, axis=2)
    blended = (1.0 - alpha) * image + alpha * heatmap_rgb(attribution, scale)
    rgb: NDArray[np.uint8] = np.rint(blended).clip(0, 255).astype(np.uint8)
    return rgb


def heatmap_png(attribution: NDArray[np.float32], *, scale: int | None = None) -> bytes:
    """The map alone, as PNG."""
    scale = _checked_scale(attribution.shape[0], attribution.shape[1], scale)
    return encode_png(heatmap_rgb(attribution, scale))


def overlay_png(
    attribution: NDArray[np.float32],
    pixels: NDArray[np.uint8],
    *,
    alpha: float = DEFAULT_ALPHA,
    scale: int | None = None,
) -> bytes:
    """The map over the pixels the model saw (see models.preprocess.seen_pixels), as PNG."""
    scale = _checked_scale(attribution.shape[0], attribution.shape[1], scale)
    return encode_png(overlay_rgb(attribution, pixels, alpha, scale))
