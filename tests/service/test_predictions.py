"""Top-k ranking of a batch's probabilities, every row at once."""

from __future__ import annotations

import numpy as np
import pytest

from service.predictions import top_k

LABELS = [f"class {i}" for i in range(10)]


@pytest.mark.parametrize("k", [1, 3, 10, 25])
def test_each_row_is_ranked_like_a_sort_of_that_row_alone(k: int) -> None:
    rng = np.random.default_rng(k)
    probabilities = rng.random((64, 10)).astype(np.float32)
    probabilities[::2] = np.round(probabilities[::2] * 3) / 3  # rows full of ties
    ranked = top_k(probabilities, LABELS, k)
    assert len(ranked) == 64
    for row, prediction in zip(probabilities, ranked, strict=True):
        entries = prediction["top_k"]
        shown = [entry["probability"] for entry in entries]
        assert shown == sorted(row.tolist(), reverse=True)[: min(k, 10)]
        assert [row[entry["index"]] for entry in entries] == shown
        assert [entry["label"] for entry in entries] == [LABELS[e["index"]] for e in entries]
        assert len({entry["index"] for entry in entries}) == len(entries)
        if k >= 10:  # every class shown: ties keep the order of the classes
            ties = [(-p, e["index"]) for p, e in zip(shown, entries, strict=True)]
            assert ties == sorted(ties)
        assert {key: prediction[key] for key in ("label", "index", "probability")} == entries[0]
        assert all(type(e["index"]) is int and type(e["probability"]) is float for e in entries)
