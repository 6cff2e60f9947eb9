"""Top-k labels from a batch of probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def top_k(
    probabilities: NDArray[np.float32], labels: Sequence[str], k: int
) -> list[dict[str, Any]]:
    """One prediction per row: the best class, and the k best in descending order."""
    k = min(k, probabilities.shape[1])
    if k < probabilities.shape[1]:
        best = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    else:
        best = np.broadcast_to(np.arange(probabilities.shape[1]), probabilities.shape)
    predictions = []
    for row, candidates in zip(probabilities, best, strict=True):
        ranked = candidates[np.argsort(-row[candidates], kind="stable")]
        entries = [
            {"label": labels[i], "index": int(i), "probability": float(row[i])} for i in ranked
        ]
        predictions.append({**entries[0], "top_k": entries})
    return predictions
