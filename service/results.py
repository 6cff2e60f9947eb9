"""What a request gets back from a model: NumPy arrays, the same in every process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ItemResult:
    """What one request gets back, its images in order."""

    probabilities: NDArray[np.float32]
    logits: NDArray[np.float32]
    features: dict[str, NDArray[np.float32]]
    queue_wait_s: float
    inference_s: float
    batch_size: int
    device: str

    @classmethod
    def concat(cls, results: Sequence[ItemResult]) -> ItemResult:
        """One request's results from the several batches its images were split over."""
        if len(results) == 1:
            return results[0]
        return cls(
            probabilities=np.concatenate([r.probabilities for r in results]),
            logits=np.concatenate([r.logits for r in results]),
            features={
                n: np.concatenate([r.features[n] for r in results]) for n in results[0].features
            },
            queue_wait_s=max(r.queue_wait_s for r in results),
            inference_s=sum(r.inference_s for r in results),
            batch_size=max(r.batch_size for r in results),
            device=results[0].device,
        )
