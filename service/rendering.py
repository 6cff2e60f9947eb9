"""Feature maps and kernels as PNG grids, with NumPy and Pillow only.

Feature maps: every channel is min-max normalized on its own (so a weak
channel still shows its pattern) and coloured with viridis, a perceptually
uniform map whose lightness rises steadily from dark violet to yellow; tiles
are laid out row by row in a near-square grid with a 1-pixel white gutter.
Kernels: one tile per (output, input) channel pair, coloured on a diverging
blue-white-red scale symmetric around zero (normalized per output filter), so
the sign of each weight reads at a glance. `scale` enlarges each tile by
nearest-neighbour repetition, the only upscaling that invents no values.
"""

from __future__ import annotations

import io
import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from service.errors import InvalidParameter, ResponseTooLarge

# Above this many pixels a grid is refused (413) rather than rendered.
MAX_GRID_PIXELS = 16_000_000
MAX_SCALE = 32

# Viridis (public domain) sampled at 33 evenly spaced points of its 256, as RGB hex;
# linear interpolation between them gives all 256 within 2/255 of the original.
_VIRIDIS_STOPS = (
    "440154470d6048186a482374472d7b4537814240863e49893b528b375b8d33638d2f6b8e"
    "2c728e297a8e26828e23898e21918c1f978b1f9f8821a68527ad8131b57b3dbc744cc26c"
    "5cc8636ece5881d34d95d840aadc32c0df25d5e21aeae51afde725"
)
_FEATURE_GUTTER = (255, 255, 255)
_KERNEL_GUTTER = (64, 64, 64)


def lut_from_stops(stops: NDArray[np.float64]) -> NDArray[np.uint8]:
    """256 RGB entries interpolated linearly between evenly spaced stops."""
    where = np.linspace(0, 255, len(stops))
    x = np.arange(256)
    channels = [np.interp(x, where, stops[:, c]) for c in range(3)]
    return np.stack(channels, axis=1).round().astype(np.uint8)


def _viridis() -> NDArray[np.uint8]:
    raw = bytes.fromhex(_VIRIDIS_STOPS)
    stops = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.float64)
    return lut_from_stops(stops)


def _diverging() -> NDArray[np.uint8]:
    """Blue (most negative) through white (zero) to red (most positive)."""
    stops = np.array([(59, 76, 192), (255, 255, 255), (180, 4, 38)], dtype=np.float64)
    return lut_from_stops(stops)


VIRIDIS = _viridis()
DIVERGING = _diverging()


def parse_channels(text: str | None, count: int) -> list[int]:
    """'0-15', '3', '0,4,8-11' -> channel indices, each checked against `count`; None: all."""
    if text is None or not text.strip():
        return list(range(count))
    chosen: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            start = int(first)
            stop = int(last) if sep else start
        except ValueError:
            raise InvalidParameter(
                f"channels: {part.strip()!r} is not a channel index or range like 0-15"
            ) from None
        if not 0 <= start <= stop < count:
            raise InvalidParameter(
                f"channels: {part.strip()!r} is outside 0-{count - 1} (the layer has {count})"
            )
        chosen.extend(range(start, stop + 1))
    return list(dict.fromkeys(chosen))  # keep the order given, drop repeats


def _grid_shape(tiles: int, tile_h: int, tile_w: int) -> tuple[int, int]:
    """Columns and rows of a near-square grid for square-ish tiles."""
    columns = max(1, math.ceil(math.sqrt(tiles * tile_h / max(tile_w, 1))))
    columns = min(columns, tiles)
    return columns, math.ceil(tiles / columns)


def _check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_GRID_PIXELS:
        raise ResponseTooLarge(
            f"the {what} grid would be {width}x{height} = {width * height} pixels; "
            f"the limit is {MAX_GRID_PIXELS}: ask for fewer channels or a smaller scale"
        )


def _assemble(
    tiles: NDArray[np.uint8], columns: int, rows: int, gutter: tuple[int, int, int]
) -> NDArray[np.uint8]:
    """[n, h, w, 3] tiles -> one RGB image, row by row, 1 pixel between tiles."""
    count, tile_h, tile_w, _ = tiles.shape
    # Each tile gets a gutter row and column on its far side; empty cells are all gutter.
    cells = np.empty((rows * columns, tile_h + 1, tile_w + 1, 3), dtype=np.uint8)
    cells[:] = gutter
    cells[:count, :tile_h, :tile_w] = tiles
    grid = cells.reshape(rows, columns, tile_h + 1, tile_w + 1, 3).transpose(0, 2, 1, 3, 4)
    image = grid.reshape(rows * (tile_h + 1), columns * (tile_w + 1), 3)
    return np.ascontiguousarray(image[:-1, :-1])  # no gutter past the last row and column


def upscale(levels: NDArray[np.uint8], scale: int) -> NDArray[np.uint8]:
    if scale == 1:
        return levels
    return levels.repeat(scale, axis=-2).repeat(scale, axis=-1)


def encode_png(rgb: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def minmax_levels(maps: NDArray[np.float32]) -> NDArray[np.uint8]:
    """[C,H,W] -> 0..255 per channel; a constant channel maps to 0."""
    values = np.nan_to_num(maps.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low = values.min(axis=(1, 2), keepdims=True)
    span = values.max(axis=(1, 2), keepdims=True) - low
    scaled = np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)
    levels: NDArray[np.uint8] = np.rint(scaled * 255.0).astype(np.uint8)
    return levels


def feature_grid_png(maps: NDArray[np.float32], *, channels: list[int], scale: int) -> bytes:
    """The chosen channels of one layer's [C,H,W] maps as a viridis PNG grid."""
    _, height, width = maps.shape
    tile_h, tile_w = height * scale, width * scale
    columns, rows = _grid_shape(len(channels), tile_h, tile_w)
    _check_size(columns * (tile_w + 1) - 1, rows * (tile_h + 1) - 1, "feature-map")
    levels = upscale(minmax_levels(maps[channels]), scale)
    return encode_png(_assemble(VIRIDIS[levels], columns, rows, _FEATURE_GUTTER))


def kernel_levels(weights: NDArray[np.float32]) -> NDArray[np.uint8]:
    """[O,I,kH,kW] -> 0..255 with 128 at zero, symmetric per output filter."""
    values = np.nan_to_num(weights.astype(np.float64))
    reach = np.abs(values).max(axis=(1, 2, 3), keepdims=True)
    scaled = np.divide(values, reach, out=np.zeros_like(values), where=reach > 0)
    levels: NDArray[np.uint8] = np.rint((scaled + 1.0) * 127.5).astype(np.uint8)
    return levels


def _kernel_layout(weights: NDArray[np.float32], scale: int) -> tuple[int, int, int, int]:
    """Columns, rows and tile size of a kernel grid (see kernel_grid_png)."""
    out_channels, in_channels, k_h, k_w = weights.shape
    tile_h, tile_w = k_h * scale, k_w * scale
    if in_channels == 1:
        columns, rows = _grid_shape(out_channels, tile_h, tile_w)
    else:
        columns, rows = in_channels, out_channels
    return columns, rows, tile_h, tile_w


def _grid_pixels(columns: int, rows: int, tile_h: int, tile_w: int) -> tuple[int, int]:
    return columns * (tile_w + 1) - 1, rows * (tile_h + 1) - 1


def default_kernel_scale(weights: NDArray[np.float32]) -> int:
    """Enlarge 3x3 kernels to 24 pixels where the grid stays within the pixel limit."""
    scale = max(1, min(MAX_SCALE, 24 // int(max(weights.shape[2], weights.shape[3]))))
    while scale > 1:
        width, height = _grid_pixels(*_kernel_layout(weights, scale))
        if width * height <= MAX_GRID_PIXELS:
            break
        scale -= 1
    return scale


def kernel_grid_png(weights: NDArray[np.float32], *, scale: int | None = None) -> bytes:
    """A convolution's filters: one row per output channel, one column per input channel.

    Filters with a single input channel (a grey-scale stem, depthwise convolutions)
    are laid out in a near-square grid instead of one tall column. Without a scale,
    small kernels are enlarged as far as default_kernel_scale allows.
    """
    scale = scale or default_kernel_scale(weights)
    columns, rows, tile_h, tile_w = _kernel_layout(weights, scale)
    _check_size(*_grid_pixels(columns, rows, tile_h, tile_w), "kernel")
    levels = upscale(kernel_levels(weights), scale).reshape(-1, tile_h, tile_w)
    return encode_png(_assemble(DIVERGING[levels], columns, rows, _KERNEL_GUTTER))
