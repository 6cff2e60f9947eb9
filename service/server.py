"""Running the app under uvicorn, with start-up failures reported in one line."""

from __future__ import annotations

import logging
import math
import socket
from pathlib import Path

import uvicorn

from service.app import create_app
from service.lifecycle import Lifecycle
from service.protocol import connection_options
from service.settings import Settings
from service.shutdown import GracefulServer
from service.startup import KNOWN_STARTUP_ERRORS, cannot_start, prepare_process

log = logging.getLogger("service.server")


class _QuietKnownStartupFailure(logging.Filter):
    """Drop uvicorn's lifespan traceback when the cause is a known one, reported in one line."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        super().__init__()
        self.lifecycle = lifecycle

    def filter(self, record: logging.LogRecord) -> bool:
        error = self.lifecycle.startup_error
        return not (
            isinstance(error, KNOWN_STARTUP_ERRORS) and record.getMessage().startswith("Traceback")
        )


def serve(
    settings: Settings, *, engine: Path | None = None, sock: socket.socket | None = None
) -> int:
    """Serve HTTP until SIGTERM: the whole service, or (with `engine` and the supervisor's
    listening `sock`) one HTTP worker of several."""
    prepare_process(settings)
    lifecycle = Lifecycle(freeze_heap_when_ready=True)
    app = create_app(settings, lifecycle, engine=engine)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # ceil: a grace of 0 must mean "do not wait" (uvicorn reads None as "wait forever").
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        lifespan="on",
        **connection_options(settings),
    )
    server = GracefulServer(
        config, drain_s=settings.shutdown_drain_s, begin_draining=lifecycle.begin_draining
    )
    quiet = _QuietKnownStartupFailure(lifecycle)
    logging.getLogger("uvicorn.error").addFilter(quiet)
    try:
        server.run(sockets=None if sock is None else [sock])
    except SystemExit:  # uvicorn exits this way when start-up fails
        pass
    finally:
        logging.getLogger("uvicorn.error").removeFilter(quiet)
    if not server.started:
        return cannot_start(lifecycle.startup_error)
    return 0
