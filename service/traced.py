"""The forward pass traced and frozen into TorchScript graphs that run without the GIL.

A batcher thread shares the GIL with the event loop, which wants it nearly all the time
under load. Each time a batcher lets go of the GIL (any torch op called from Python
does, and so does a C++ reference to a Python-held tensor that torch takes or drops
inside an op) the event loop takes it and keeps it until its next wait or for up to
sys.getswitchinterval(): the batcher sleeps, and with it half the machine on 2 cores.
So the batch path lets go as few times as it can:

- `frozen_graph`: the model on normalized float32 input, for every device (CUDA graphs
  are captured around it) and for batches that arrive as floats;
- `pixel_graph`: on the CPU, uint8 pixels in, normalization, the model and softmax in
  one graph, probabilities and logits out: a batch of plain pixels lets go of the GIL
  once. 64 digits a request on 2 cores, batches of 32 (one process, 6 s points at c=8,
  medians of alternated rounds): 283 req/s before, 306 after over multipart and 266 and
  303 over V2 binary (five rounds); 278 and 288, 287 and 301 in four more.

Both graphs hand their input back beside their output, so the graph holds it to the
end and the last C++ reference to it goes when the outputs reach Python, under the
GIL; otherwise the interpreter drops it after the first layer and, because Python
still holds it, takes the GIL in the middle of the forward pass.

A graph is used only when tracing raised no TracerWarning (a forward that turns
tensors into Python values, branches on them or has side effects traces wrongly: it
keeps running eagerly) and its output equals the eager module's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from models.activation_stats import (
    REDUCTIONS,
    SUMMARY_IMAGES,
    MapSummary,
    map_reductions,
    summary_of,
)
from models.feature_layer import FeatureLayer
from models.layers import capturing

# The pixel graph packs a second copy of the weights beside the float graph's (resnet18 in
# fp32: about 120 MB more per instance), and pays only where batches are short enough for
# GIL waits to matter: the digits model (0.14 MB of weights; 64 digits a request +4..+14%),
# not resnet18 (45 MB; a batch of 8 took the same time through either graph).
PIXEL_GRAPH_MAX_WEIGHT_BYTES = 8 * 1024 * 1024

Logits = Callable[[torch.Tensor], torch.Tensor]
Scores = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Summaries = Callable[[torch.Tensor], dict[str, MapSummary]]


def frozen_graph(module: nn.Module, example: torch.Tensor) -> Logits | None:
    """The module traced and frozen: normalized input -> logits; None where that does not hold.

    Besides running without the GIL, a frozen graph folds BatchNorm into the
    convolutions; on the CPU it is also optimized for inference: convolutions run as
    oneDNN kernels on weights packed once, which took the default model's fp32 forward
    pass from about 8,000 to 19,500 images/s on one thread of the development machine
    (bench/RESULTS.md's ceilings run this same graph).
    """
    graph = _traced(_PassingInput(module), example)
    if graph is None:
        return None

    def logits(batch: torch.Tensor) -> torch.Tensor:
        scores: torch.Tensor = graph(batch)[0]
        return scores

    return logits


def pixel_graph(
    module: nn.Module, scale: torch.Tensor, offset: torch.Tensor, example: torch.Tensor
) -> Scores | None:
    """On the CPU, for a model of at most PIXEL_GRAPH_MAX_WEIGHT_BYTES: uint8 pixels ->
    (probabilities, logits), normalized as the model card says; None where it does not hold."""
    if not _pixel_graphs_pay(module, example):
        return None
    pixels = torch.randint(0, 256, example.shape, dtype=torch.uint8)
    graph = _traced(_FromPixels(module, scale, offset), pixels)
    if graph is None:
        return None

    def scores(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities, logits, _ = graph(batch)
        return probabilities, logits

    return scores


def summary_graph(
    module: nn.Module,
    scale: torch.Tensor,
    offset: torch.Tensor,
    layers: Sequence[FeatureLayer],
    example: torch.Tensor,
) -> Summaries | None:
    """Where the pixel graph is built: uint8 pixels -> the MapSummary of each of `layers`
    (models.activation_stats), maps made and reduced in one graph; None where it does not hold.

    A batch sampled for activation monitoring took its summaries from an eager pass with
    hooks and a dozen reductions a layer, each torch call letting go of the GIL: under load
    a sampled batch cost about five plain ones of CPU (the digits model, 64 digits a
    request), and one in fifty batches is sampled."""
    if not layers or not _pixel_graphs_pay(module, example):
        return None
    summarizing = _Summarizing(module, scale, offset, layers)
    # More images than are summarized: the graph takes the first SUMMARY_IMAGES itself.
    pixels = torch.randint(0, 256, (SUMMARY_IMAGES + 2, *example.shape[1:]), dtype=torch.uint8)
    # Reductions of maps from a graph that folds BatchNorm into the convolutions agree with
    # the eager module's to rounding, and a unit at about 0 may fall either side of a ReLU.
    graph = _checked(
        summarizing, pixels, lambda got, expected: _close(got, expected, rtol=1e-3, atol=1e-3)
    )
    if graph is None:
        return None
    per_image = summarizing.per_image(pixels[:1])

    def summaries(batch: torch.Tensor) -> dict[str, MapSummary]:
        """The summaries of the batch's first SUMMARY_IMAGES images."""
        outputs = graph(batch)
        images = min(batch.shape[0], SUMMARY_IMAGES)  # no torch call, unlike len()
        return {
            layer.name: summary_of(images * count, outputs[i * REDUCTIONS : (i + 1) * REDUCTIONS])
            for i, (layer, count) in enumerate(zip(layers, per_image, strict=True))
        }

    return summaries


def normalized(pixels: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as the model card normalizes them (models.preprocess: the same float32
    multiply, then add), out of place: in the graph and on the engine's float path alike."""
    return torch.add(torch.mul(pixels.to(torch.float32), scale), offset)


def _pixel_graphs_pay(module: nn.Module, example: torch.Tensor) -> bool:
    """On the CPU, for a model of at most PIXEL_GRAPH_MAX_WEIGHT_BYTES: each graph on
    pixels packs a copy of the weights of its own."""
    return example.device.type == "cpu" and weight_bytes(module) <= PIXEL_GRAPH_MAX_WEIGHT_BYTES


def weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _traced(
    module: nn.Module, example: torch.Tensor
) -> Callable[..., tuple[torch.Tensor, ...]] | None:
    """`module` traced on `example` and frozen, where the logits it gives (its
    next-to-last output) are the eager module's; else None."""
    return _checked(module, example, lambda got, expected: _close(got[-2:-1], expected[-2:-1]))


def _checked(
    module: nn.Module,
    example: torch.Tensor,
    agree: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], bool],
) -> Callable[..., tuple[torch.Tensor, ...]] | None:
    """`module` traced on `example` and frozen, where `agree(graph outputs, eager outputs)`."""
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            # TorchScript is deprecated upstream (FutureWarning), but it is still the
            # GIL-free path; a TracerWarning means the trace may not hold for other inputs.
            warnings.simplefilter("always")
            traced = torch.jit.trace(module, example, check_trace=False)  # type: ignore[no-untyped-call]
            graph = (
                torch.jit.optimize_for_inference(traced)
                if example.device.type == "cpu"
                else torch.jit.freeze(traced)
            )
            expected = module(example)
            got = graph(example)
            agreed = agree(got, expected)
    except Exception:  # not traceable: odd inputs or outputs
        return None
    if any(issubclass(w.category, torch.jit.TracerWarning) for w in caught):  # type: ignore[attr-defined]
        return None  # data-dependent Python in forward: only the eager module is right
    return graph if agreed else None


def _close(
    got: Sequence[torch.Tensor],
    expected: Sequence[torch.Tensor],
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> bool:
    return len(got) == len(expected) and all(
        isinstance(g, torch.Tensor) and torch.allclose(g.double(), e.double(), rtol=rtol, atol=atol)
        for g, e in zip(got, expected, strict=True)
    )


class _PassingInput(nn.Module):
    """The module, its input handed back beside its logits (see the module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module(x), x


class _FromPixels(nn.Module):
    """uint8 pixels -> (probabilities, logits, the pixels): the whole batch path."""

    scale: torch.Tensor
    offset: torch.Tensor

    def __init__(self, module: nn.Module, scale: torch.Tensor, offset: torch.Tensor) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("scale", scale.clone())
        self.register_buffer("offset", offset.clone())

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.module(normalized(pixels, self.scale, self.offset))
        return torch.softmax(logits, dim=1), logits, pixels


class _Summarizing(nn.Module):
    """uint8 pixels -> the map_reductions of each layer over the first SUMMARY_IMAGES images,
    layer by layer, then the pixels."""

    scale: torch.Tensor
    offset: torch.Tensor

    def __init__(
        self,
        module: nn.Module,
        scale: torch.Tensor,
        offset: torch.Tensor,
        layers: Sequence[FeatureLayer],
    ) -> None:
        super().__init__()
        self.module = module
        self.layers = list(layers)
        self.register_buffer("scale", scale.clone())
        self.register_buffer("offset", offset.clone())

    def _maps(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        with capturing(self.module, self.layers, captured):
            self.module(normalized(pixels, self.scale, self.offset))
        return captured

    def per_image(self, pixels: torch.Tensor) -> list[int]:
        """Each layer's activations per image (fixed: the card fixes the input's shape)."""
        with torch.no_grad():
            maps = self._maps(pixels)
        return [maps[layer.name][0].numel() for layer in self.layers]

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        maps = self._maps(pixels[:SUMMARY_IMAGES])
        reductions = (t for layer in self.layers for t in map_reductions(maps[layer.name]))
        return (*reductions, pixels)
