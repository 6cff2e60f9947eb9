"""Running the app under uvicorn, with start-up failures reported in one line."""

from __future__ import annotations

import logging
import sys

import uvicorn

from models import ModelLoadError
from service.app import create_app
from service.devices import DeviceUnavailable
from service.logs import configure_logging
from service.settings import Settings

log = logging.getLogger("service.server")


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except (ModelLoadError, DeviceUnavailable) as exc:
        print(f"cnn-serve: cannot start: {exc}", file=sys.stderr)
        return 1
    if not server.started:
        # uvicorn logs the lifespan failure itself and returns; never report success then.
        print("cnn-serve: cannot start: the application failed during start-up", file=sys.stderr)
        return 1
    return 0
