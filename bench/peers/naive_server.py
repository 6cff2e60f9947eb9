"""The naive FastAPI server: one request, one forward, no batching.

What a first version looks like: a sync endpoint (FastAPI runs it in its
thread pool) that decodes, preprocesses and runs the model for its one image.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from peer_model import PeerModel


async def _body(request: Request) -> bytes:
    return await request.body()


def create_app(model: PeerModel) -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(data: Annotated[bytes, Depends(_body)]) -> dict[str, Any]:
        return model.answer([data])[0]

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--card", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    app = create_app(PeerModel(args.card, threads=args.threads))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
