"""TorchServe handler: TorchServe batches the requests, peer_model does the work.

Archived with the model's card and weights and bench_settings.json, which
names the card and the torch thread count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peer_model import PeerModel

_model: PeerModel | None = None


def _initialize(context: Any) -> None:
    global _model
    model_dir = Path(context.system_properties["model_dir"])
    settings = json.loads((model_dir / "bench_settings.json").read_text())
    _model = PeerModel(str(model_dir / settings["card"]), threads=int(settings["threads"]))


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[dict[str, Any]] | None:
    if _model is None:
        _initialize(context)
    if data is None or _model is None:
        return None
    images = [bytes(row.get("data") or row.get("body") or b"") for row in data]
    return _model.answer(images)
