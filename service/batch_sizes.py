"""The batch sizes warmed up at start-up, which are also the batch-size histogram's buckets."""

from __future__ import annotations

import math


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to, and including, the max batch size: the buckets warmed at start-up."""
    sizes = [2**i for i in range(int(math.log2(max_batch_size)) + 1)]
    return sorted({*sizes, max_batch_size})
