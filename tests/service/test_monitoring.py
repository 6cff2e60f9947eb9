"""Activation monitoring on live traffic: real digits stay close to the card's profile,
inverted digits drift past the alert threshold, in /activations and in the metrics alike."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageOps

import models
from models.activation_stats import PSI_SIGNIFICANT, SUMMARY_IMAGES, MapSummary
from models.layers import feature_layers
from service.monitoring import ActivationMonitor
from tests.conftest import AppClientFactory
from tests.helpers import ROOT, Digits, png_bytes
from tests.service.test_metrics import parse, series

# PSI needs a full window to read true: on these digits a 200-image window reads up to 0.23
# for held-out digits, a 1,000-image one (the default) 0.001.
WINDOW = 1000
EARLY = ("relu1", "relu2", "relu3", "relu4")


async def _window(client: httpx.AsyncClient, completed: int) -> dict[str, Any]:
    """/activations once `completed` windows are done: the worker adds a sampled batch to
    the statistics after its answers are sent, so the last one may still be on its way."""
    for _ in range(200):
        body: dict[str, Any] = (await client.get("/v1/models/mnist-cnn/activations")).json()
        if body["completed_windows"] >= completed:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"the monitor did not complete window {completed} within 10 s: {body}")


async def _send(client: httpx.AsyncClient, images: list[Image.Image]) -> None:
    # One request at a time, as many images as a sampled batch summarizes: every image counts.
    for start in range(0, len(images), SUMMARY_IMAGES):
        files = [
            ("images", (f"{i}.png", png_bytes(image), "image/png"))
            for i, image in enumerate(images[start : start + SUMMARY_IMAGES])
        ]
        response = await client.post("/v1/classify", files=files)
        assert response.status_code == 200, response.text


def _drift(samples: dict, model: str = "mnist-cnn") -> dict[str, float]:  # type: ignore[type-arg]
    return {
        dict(labels)["layer"]: value
        for labels, value in series(samples, "cnn_activation_drift_psi").items()
        if dict(labels)["model"] == model
    }


async def test_real_digits_stay_close_and_inverted_digits_drift(
    app_client: AppClientFactory, digits: Digits
) -> None:
    real = digits.images[:WINDOW]  # the held-out split: a stratified, shuffled sample
    inverted = [ImageOps.invert(image) for image in real]
    settings = {"activation_sample_rate": 1.0, "activation_window_images": WINDOW}
    async with app_client(**settings) as client:
        await _send(client, real)
        calm = await _window(client, 1)
        calm_metrics = parse((await client.get("/metrics")).text)
        await _send(client, inverted)
        shifted = await _window(client, 2)
        shifted_metrics = parse((await client.get("/metrics")).text)

    assert calm["last"]["images"] == WINDOW and calm["layers"] == [f"relu{i}" for i in range(1, 6)]
    calm_psi = {n: f["drift_psi"] for n, f in calm["last"]["layers"].items()}
    assert max(calm_psi.values()) < 0.1, calm_psi  # stable, by the usual reading of PSI
    assert _drift(calm_metrics) == calm_psi
    assert calm["reference"]["images"] == 4000  # the training split the card was profiled on

    shifted_psi = {n: f["drift_psi"] for n, f in shifted["last"]["layers"].items()}
    assert min(shifted_psi[n] for n in EARLY) > PSI_SIGNIFICANT, shifted_psi
    assert _drift(shifted_metrics) == shifted_psi
    # The window's other figures: computed from the sampled maps, not left at zero.
    relu1 = shifted["last"]["layers"]["relu1"]
    assert 0 < relu1["zero_fraction"] < 1 and relu1["std"] > 0
    assert sum(shifted["last"]["class_counts"]) == WINDOW


async def test_monitoring_off_captures_nothing(
    app_client: AppClientFactory, digits: Digits
) -> None:
    async with app_client(activation_sample_rate=0.0) as client:
        await _send(client, digits.images[:16])
        body = (await client.get("/v1/models/mnist-cnn/activations")).json()
        samples = parse((await client.get("/metrics")).text)
    assert body["current"]["images"] == 0 and body["last"] is None
    assert not series(samples, "cnn_activation_mean")


def test_one_batch_in_every_k_is_sampled_and_windows_roll() -> None:
    loaded = models.load(ROOT / "models" / "weights" / "mnist-cnn.json")
    layers = feature_layers(loaded.module, (1, 28, 28))
    monitor = ActivationMonitor(layers, 10, None, sample_rate=0.25, window_images=3)
    picks = [bool(monitor.layers_for_next_batch()) for _ in range(12)]
    assert picks == [False, False, False, True] * 3
    maps = {name: MapSummary.of(np.ones((2, 4, 3, 3), np.float32)) for name in monitor.layers}
    probabilities = np.full((2, 10), 0.1, dtype=np.float32)
    monitor.observe(maps, probabilities)
    assert monitor.reading()["images"] == 2 and monitor.describe()["last"] is None
    monitor.observe(maps, probabilities)  # 4 images: the window of 3 is complete
    assert (
        monitor.describe()["last"]["images"] == 4 and monitor.describe()["current"]["images"] == 0
    )
    assert monitor.reading()["layers"]["relu1"]["drift_psi"] is None  # no profile
