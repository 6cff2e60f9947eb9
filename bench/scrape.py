"""Reading a server's Prometheus text, ours or Triton's: the mean batch size over a window."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")

BATCH_SIZE_METRIC = "cnn_batch_size"
TRITON_IMAGES = "nv_inference_count"  # batch rows inferred, one image each here
TRITON_EXECUTIONS = "nv_inference_exec_count"  # model executions, one per batch


@dataclass(frozen=True)
class HistogramTotals:
    sum: float
    count: float

    def minus(self, earlier: HistogramTotals) -> HistogramTotals:
        return HistogramTotals(self.sum - earlier.sum, self.count - earlier.count)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def _sums(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Each named metric summed over all its label sets; a metric absent from the text is too."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#") or match.group("name") not in names:
            continue
        sums[match.group("name")] = sums.get(match.group("name"), 0.0) + float(match.group("value"))
    return sums


def histogram_totals(text: str, name: str = BATCH_SIZE_METRIC) -> HistogramTotals | None:
    """Sum and count of a histogram over all its label sets; None when it is absent."""
    sums = _sums(text, (f"{name}_sum", f"{name}_count"))
    if not sums:
        return None
    return HistogramTotals(sums.get(f"{name}_sum", 0.0), sums.get(f"{name}_count", 0.0))


def triton_batch_totals(text: str) -> HistogramTotals | None:
    """Triton's counters as a batch-size histogram would have them: images inferred (the sum)
    over model executions (the count); None when Triton has not counted yet."""
    sums = _sums(text, (TRITON_IMAGES, TRITON_EXECUTIONS))
    if not sums:
        return None
    return HistogramTotals(sums.get(TRITON_IMAGES, 0.0), sums.get(TRITON_EXECUTIONS, 0.0))
