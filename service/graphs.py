"""Forward passes replayed from CUDA graphs, one per bucketed batch size.

Launching a ResNet's hundred-odd kernels one by one from Python costs the GPU more
idle time than small batches take to compute. A CUDA graph captures them once and
replays them with one launch. A graph is captured for static buffers of one shape,
so batch sizes are bucketed (service.batch_sizes' warm-up sizes, 1, 2, 4, ... up to
the max batch size): a batch is copied into its bucket's input buffer, the rows past
it zeroed, the graph replayed, and the first rows of the output buffer read back.
Each image's rows depend on that image alone (convolutions, eval-mode BatchNorm), so
the padding never changes an answer.

The buffer bookkeeping (`BucketedForward`) is plain torch and runs on a CPU as well,
where `EagerReplay` stands in for the graph: tests check there that padding and
unpadding give each batch exactly what the module gives it. `CudaGraphReplay` is the
CUDA capture itself; a capture that fails leaves the engine on its eager path.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]


def bucket_for(size: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket that holds `size` images; None past the largest."""
    index = bisect.bisect_left(buckets, size)
    return buckets[index] if index < len(buckets) else None


class Replay(Protocol):
    """One bucket: a static input, a static output, and how to recompute the output."""

    static_input: torch.Tensor
    static_output: torch.Tensor

    def replay(self) -> None: ...


class EagerReplay:
    """The stand-in for a graph: the forward pass run again on the static input."""

    def __init__(self, forward: Forward, static_input: torch.Tensor) -> None:
        self._forward = forward
        self.static_input = static_input
        self.static_output = forward(static_input)

    def replay(self) -> None:
        with torch.inference_mode():  # the output may be an inference tensor, as in the engine
            self.static_output.copy_(self._forward(self.static_input))


class CudaGraphReplay:
    """A CUDA graph of the forward pass on `static_input`, captured on a side stream."""

    def __init__(self, forward: Forward, static_input: torch.Tensor, warm_up_passes: int = 3):
        self.static_input = static_input
        side = torch.cuda.Stream(static_input.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(static_input.device))
        with torch.cuda.stream(side):  # cuDNN picks its algorithms before the capture
            for _ in range(warm_up_passes):
                forward(static_input)
        torch.cuda.current_stream(static_input.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self.static_output = forward(static_input)

    def replay(self) -> None:
        self._graph.replay()


ReplayFactory = Callable[[Forward, torch.Tensor], Replay]


class BucketedForward:
    """Runs a batch through the replay of its bucket; larger batches run `forward` itself."""

    def __init__(
        self,
        forward: Forward,
        example: torch.Tensor,  # one image's input: shape, dtype, device, memory format
        buckets: Sequence[int],
        make_replay: ReplayFactory,
    ) -> None:
        self._forward = forward
        self.buckets = sorted(set(buckets))
        self._replays: dict[int, Replay] = {}
        for size in self.buckets:
            shape = (size, *example.shape[1:])
            static = torch.zeros(shape, dtype=example.dtype, device=example.device)
            if example.is_contiguous(memory_format=torch.channels_last) and example.dim() == 4:
                static = static.contiguous(memory_format=torch.channels_last)
            self._replays[size] = make_replay(forward, static)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        size = len(batch)
        bucket = bucket_for(size, self.buckets)
        if bucket is None:
            return self._forward(batch)
        replay = self._replays[bucket]
        replay.static_input[:size].copy_(batch)
        if size < bucket:
            replay.static_input[size:].zero_()  # stale images would cost nothing, but hide bugs
        replay.replay()
        # A copy: the next replay of this bucket overwrites its output buffer.
        return replay.static_output[:size].clone()


def cuda_graphs(
    module: nn.Module | Forward, example: torch.Tensor, buckets: Sequence[int]
) -> BucketedForward | None:
    """The module's forward pass as CUDA graphs per bucket, or None where capture fails."""
    try:
        return BucketedForward(module, example, buckets, CudaGraphReplay)
    except RuntimeError:  # an op that cannot be captured (host syncs, dynamic shapes)
        return None
