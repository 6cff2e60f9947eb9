"""NVIDIA Triton (through PyTriton): Triton's C++ HTTP front end and dynamic batcher, peer_model
doing the work in this process.

One input, "image": BYTES, one encoded image per batch row, so a request for one
image has shape [1,1] (a batching model's inputs carry the batch dimension
first). One output, "probabilities": FP32 [classes] per row; Triton's own
classification extension turns it into top-k strings when a request asks.
The model is served under the card's name, the tensors under the names
cnn-serve's /v2 gives them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import sysconfig
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from peer_model import PeerModel
from pytriton.decorators import batch  # type: ignore[import-not-found]
from pytriton.model_config import (  # type: ignore[import-not-found]
    DynamicBatcher,
    ModelConfig,
    Tensor,
)
from pytriton.triton import Triton, TritonConfig  # type: ignore[import-not-found]

IMAGE = "image"
PROBABILITIES = "probabilities"


def _our_libpython_first() -> None:
    """Triton's Python backend stub loads libpython3.X.so through the system's loader: without
    this it may find the system Python's copy, whose standard library is not this one's."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        found = os.environ.get("LD_LIBRARY_PATH")
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{found}" if found else str(libdir)


def _stop_on_sigterm(signum: int, frame: Any) -> NoReturn:
    sys.exit(0)  # unwinds serve() and the `with`: Triton and its stubs stop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--card", required=True)
    parser.add_argument("--port", type=int, required=True, help="HTTP")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--workspace", type=Path, required=True, help="must not exist yet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--queue-delay-us", type=int, default=1000)
    args = parser.parse_args()
    _our_libpython_first()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    model = PeerModel(args.card, threads=args.threads)

    @batch  # type: ignore[misc]
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        return {PROBABILITIES: model.probabilities(image.reshape(-1).tolist()).numpy()}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        log_verbose=0,
        # Stopping waits this long at most for open connections (30 s by default): well
        # within the bench's grace before SIGKILL, which would leave shared memory behind.
        exit_timeout_secs=3,
    )
    batcher = DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)
    with Triton(config=config, workspace=args.workspace) as triton:
        triton.bind(
            model_name=Path(args.card).stem,
            infer_func=infer,
            inputs=[Tensor(name=IMAGE, dtype=np.bytes_, shape=(1,))],
            outputs=[Tensor(name=PROBABILITIES, dtype=np.float32, shape=(len(model.labels),))],
            config=ModelConfig(max_batch_size=args.max_batch_size, batcher=batcher),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
