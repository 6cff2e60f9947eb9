"""LitServe server: max_batch_size=32, batch_timeout=0.01, one inference worker.

The body is JSON {"image": "<base64>"}: LitServe parses a request as JSON (or a
form) before decode_request sees it, and a JSON dict crosses its process queues
as it is.
"""

from __future__ import annotations

import argparse
import base64
from typing import Any

import litserve as ls  # type: ignore[import-not-found]
import torch
from peer_model import PeerModel


class CnnAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, card: str, threads: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.card = card
        self.threads = threads

    def setup(self, device: str) -> None:
        self.model = PeerModel(self.card, threads=self.threads)

    # No annotation on `request`: LitServe turns it into the endpoint's parameter type.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        pixels: torch.Tensor = self.model.prepare(base64.b64decode(request["image"]))
        return pixels

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward(x)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output)

    def encode_response(self, output: torch.Tensor) -> dict[str, Any]:
        answer: dict[str, Any] = self.model.top5(output)
        return answer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--card", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.01)
    args = parser.parse_args()
    api = CnnAPI(
        args.card,
        args.threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
    )
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
