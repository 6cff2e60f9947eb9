"""Top-k ranking of a batch's probabilities, every row at once."""

from __future__ import annotations

import numpy as np
import pytest

from service.predictions import top_k
from service.v2.codec import RequestedOutput
from service.v2.model import _classification

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


def test_v2_classification_strings_are_the_ranking_with_each_score_s_shortest_text() -> None:
    rng = np.random.default_rng(7)
    probabilities = rng.dirichlet(np.ones(10), 64).astype(np.float32)
    # Exponent forms and the smallest subnormal among a row's five best.
    probabilities[0] = [1e-5, 1e-45, 0.1, 0.0, 3e-8, 0.0, 0.0, 0.0, 0.0, 0.0]
    output = RequestedOutput("probabilities", binary=False, classification=5)
    tensor = _classification(output, probabilities, LABELS)
    assert tensor.shape == (64, 5)
    expected = [
        f"{np.float32(entry['probability'])!s}:{entry['index']}:{entry['label']}".encode()
        for prediction in top_k(probabilities, LABELS, 5)
        for entry in prediction["top_k"]
    ]
    assert tensor.data == expected
    # The text reads back as the very float32 ranked.
    best_five = np.sort(probabilities, 1)[:, ::-1][:, :5].ravel()
    for text, value in zip(tensor.data, best_five, strict=True):
        assert np.float32(float(text.split(b":")[0])) == value
