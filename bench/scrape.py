"""Reading our server's Prometheus text: the mean batch size over a window."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")

BATCH_SIZE_METRIC = "cnn_batch_size"


@dataclass(frozen=True)
class HistogramTotals:
    sum: float
    count: float

    def minus(self, earlier: HistogramTotals) -> HistogramTotals:
        return HistogramTotals(self.sum - earlier.sum, self.count - earlier.count)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def histogram_totals(text: str, name: str = BATCH_SIZE_METRIC) -> HistogramTotals | None:
    """Sum and count of a histogram over all its label sets; None when it is absent."""
    totals = {"sum": 0.0, "count": 0.0}
    seen = False
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        metric = match.group("name")
        for part in ("sum", "count"):
            if metric == f"{name}_{part}":
                totals[part] += float(match.group("value"))
                seen = True
    return HistogramTotals(totals["sum"], totals["count"]) if seen else None
