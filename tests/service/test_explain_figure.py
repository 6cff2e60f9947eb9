"""docs/explain-digit.png, the README's explanation figure, is what the service draws now.

Left to right: the README's digit as the model saw it, its Grad-CAM overlay and its
integrated-gradients overlay, each PNG from the service's own endpoints, put side by side.
A missing figure is written; to redraw it after a change to the model or the heatmaps,
delete it and run this test.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image

from tests.helpers import ROOT, png_bytes

FIGURE = ROOT / "docs" / "explain-digit.png"
DIGIT = ROOT / "docs" / "digit.png"
MODEL = "/v1/models/mnist-cnn"
GAP = 8  # white pixels between the panels
# Another CPU may round a few map values the other way: a level or two of the colour scale.
MAX_LEVEL_ERROR = 6
MAX_CHANGED_FRACTION = 0.005


async def _png(client: httpx.AsyncClient, path: str) -> Image.Image:
    response = await client.post(
        path, content=DIGIT.read_bytes(), headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content)).convert("RGB")


async def _figure(client: httpx.AsyncClient) -> Image.Image:
    gradcam = await _png(client, f"{MODEL}/explain?method=gradcam&format=png")
    integrated = await _png(client, f"{MODEL}/explain?method=integrated_gradients&format=png")
    assert gradcam.size == integrated.size
    # The overlays enlarge the input by repeating pixels: the same for the plain input.
    seen = (await _png(client, f"{MODEL}/preprocessed")).resize(
        gradcam.size, Image.Resampling.NEAREST
    )
    width, height = gradcam.size
    figure = Image.new("RGB", (3 * width + 2 * GAP, height), "white")
    for i, panel in enumerate((seen, gradcam, integrated)):
        figure.paste(panel, (i * (width + GAP), 0))
    return figure


async def test_the_explanation_figure_is_what_the_service_draws(
    client: httpx.AsyncClient,
) -> None:
    figure = await _figure(client)
    assert figure.size == (3 * 224 + 2 * GAP, 224)
    if not FIGURE.exists():
        FIGURE.write_bytes(png_bytes(figure, optimize=True))
    with Image.open(FIGURE) as saved:
        kept = np.asarray(saved.convert("RGB"), dtype=np.int16)
    now = np.asarray(figure, dtype=np.int16)
    assert kept.shape == now.shape, f"{FIGURE.name} is out of date: delete it and rerun this test"
    changed = np.abs(kept - now).max(axis=2) > MAX_LEVEL_ERROR
    assert changed.mean() <= MAX_CHANGED_FRACTION, (
        f"{FIGURE.name} differs from what the service draws now in {int(changed.sum())} "
        "pixels: delete it and rerun this test"
    )
