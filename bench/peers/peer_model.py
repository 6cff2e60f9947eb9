"""The work every peer server does, written once: our decode + preprocess, a forward, top-5.

TorchServe's handler, the Triton model, the LitServe server and the naive FastAPI
server all call this, so that what differs between them and cnn-serve is the serving
machinery alone: the model, the preprocessing code and the torch threads match.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

import models


class PeerModel:
    def __init__(self, card: str, *, threads: int) -> None:
        torch.set_num_threads(threads)
        self.loaded = models.load(card)
        self.module = self.loaded.module.eval()
        self.labels = self.loaded.card.labels

    def prepare(self, data: bytes) -> torch.Tensor:
        """Encoded image -> normalized [C,H,W] float tensor, by the model's own Preprocessor."""
        image = Image.open(io.BytesIO(data))
        image.load()
        return self.loaded.preprocess(image)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(self.module(batch), dim=1)

    def top5(self, probabilities: torch.Tensor) -> dict[str, Any]:
        values, indices = torch.topk(probabilities, k=min(5, len(self.labels)))
        return {
            "predictions": [
                {"label": self.labels[int(i)], "probability": float(v)}
                for v, i in zip(values, indices, strict=True)
            ]
        }

    def probabilities(self, images: Sequence[bytes]) -> torch.Tensor:
        """One forward for these encoded images: [N,classes] probabilities."""
        return self.forward(torch.stack([self.prepare(data) for data in images]))

    def answer(self, images: Sequence[bytes]) -> list[dict[str, Any]]:
        """One forward for these images, one top-5 per image."""
        return [self.top5(row) for row in self.probabilities(images)]
