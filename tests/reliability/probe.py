"""A tiny real model whose behaviour is chosen by the grey level of its input image.

It is registered as an architecture, packed into a checkpoint and served by the
real app, so every fault test runs the real batcher, engine and routers. Each
forward pass records the grey levels it computed, which is how a test proves a
request was, or was never, computed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from models import ARCHITECTURES, InputSpec, save_checkpoint
from tests.helpers import png_bytes

ARCHITECTURE = "reliability_probe"
FAIL_LEVEL = 66  # the forward pass raises when a batch holds an image of this grey level
GATE_LEVEL = 200  # the forward pass waits for the gate to open
WIDE_LEVEL = 33  # the forward pass answers one score too many: a bug the service must contain
ABORT_LEVEL = 44  # the forward pass raises a BaseException, which `except Exception` misses
SECRET = "probe-internal-detail-7f3a"  # in the exception text; must never reach a client
SIDE = 4


class ProbeAbort(BaseException):
    """Not an Exception: what a worker must survive without leaving its requests waiting."""


class ProbeNet(nn.Module):
    calls: ClassVar[list[list[int]]] = []  # grey levels of each forward pass, in order
    gate: ClassVar[threading.Event] = threading.Event()

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.head = nn.Linear(in_channels * SIDE * SIDE, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The card's mean 0 / std 1 make the input level / 255 exactly. Only a plain grey
        # image has a level: the engine's own passes at start-up (tracing, its check) run on
        # random inputs, which must neither be recorded nor trip a fault by chance.
        flat = x.flatten(1)
        plain = flat.amax(dim=1) == flat.amin(dim=1)
        levels = [round(float(v) * 255) for v, grey in zip(flat[:, 0], plain, strict=True) if grey]
        if not levels:
            return self.head(flat)  # type: ignore[no-any-return]
        ProbeNet.calls.append(levels)
        if GATE_LEVEL in levels and not ProbeNet.gate.wait(timeout=60):
            raise RuntimeError("the gate was never opened")
        if ABORT_LEVEL in levels:
            raise ProbeAbort(SECRET)
        if FAIL_LEVEL in levels:
            raise RuntimeError(f"poisoned input ({SECRET})")
        out: torch.Tensor = self.head(x.flatten(1))
        if WIDE_LEVEL in levels:
            out = torch.cat([out, out.max(dim=1, keepdim=True).values + 10], dim=1)  # ranks first
        return out

    @classmethod
    def computed(cls) -> list[int]:
        """Levels of every image that went through a successful or failed forward pass."""
        return [level for call in cls.calls for level in call]


def grey_png(level: int) -> bytes:
    from PIL import Image

    return png_bytes(Image.new("L", (SIDE, SIDE), level))


@contextmanager
def probe_checkpoint(tmp_path: Path) -> Iterator[Path]:
    """Register the probe architecture, pack a checkpoint, reset the records; undo after."""
    ARCHITECTURES[ARCHITECTURE] = ProbeNet
    ProbeNet.calls.clear()
    ProbeNet.gate.clear()
    spec = InputSpec(channels=1, height=SIDE, width=SIDE, mean=(0.0,), std=(1.0,))
    card = save_checkpoint(
        ProbeNet(),
        out_dir=tmp_path / "probe",
        name="probe",
        labels=tuple("abcdefghij"),
        input_spec=spec,
        architecture=ARCHITECTURE,
    )
    try:
        yield card
    finally:
        ProbeNet.gate.set()  # never leave a worker thread waiting
        ARCHITECTURES.pop(ARCHITECTURE, None)


def probe_settings(card: Path, **overrides: Any) -> dict[str, Any]:
    # One instance: a request held at the gate holds the only worker thread.
    return {"models": [f"probe={card}"], "max_batch_delay_ms": 0, "instances": 1, **overrides}
