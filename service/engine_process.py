"""The engine process: holds every model on its device and batches for all HTTP workers.

Started by the supervisor (service.supervisor) as
`python -m service.engine_process SOCKET READY_FD`: it loads and warms the
models, listens on SOCKET, writes one line to READY_FD and serves until SIGTERM,
then finishes what is queued and exits. A model that cannot be loaded ends it
with one line on stderr and exit code 1, as the single-process server does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from service.children import follow_parent, orphaned
from service.heap import freeze_startup_heap
from service.ipc.server import EngineServer, WorkerArrivals
from service.loading import LocalModels
from service.metrics import Metrics, start_exporter
from service.registry import ModelRegistry
from service.settings import Settings
from service.startup import KNOWN_STARTUP_ERRORS, cannot_start, prepare_process

log = logging.getLogger("service.engine")


async def run_engine(settings: Settings, socket_path: Path, ready_fd: int) -> int:
    metrics = Metrics(max_batch_size=settings.largest_pass)
    arrivals = WorkerArrivals()
    source = LocalModels(settings, arrivals)
    try:
        await source.open(ModelRegistry(), metrics)
    except Exception as exc:
        if not isinstance(exc, KNOWN_STARTUP_ERRORS):
            log.exception("engine start-up failed")
        return cannot_start(exc)
    loop = asyncio.get_running_loop()
    server = EngineServer(source, arrivals, metrics.live, loop)
    server.start(socket_path)
    stop = asyncio.Event()
    # With several HTTP workers the metrics port is the engine's: one scrape, every process;
    # its cnn_ready says whether this engine serves (workers cannot answer without it).
    exporter = start_exporter(
        metrics.scrape_registry(ready=lambda: not stop.is_set()),
        host=settings.host,
        port=settings.metrics_port,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    freeze_startup_heap()
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    log.info("engine ready", extra={"models": sorted({name for name, _ in source.loaded})})
    await stop.wait()
    server.close()
    await source.close(settings.shutdown_grace_s)
    exporter.close()
    if orphaned():
        # The supervisor was killed and cannot remove the run folder (sockets, arenas,
        # metric files; in memory under /dev/shm): the engine, last to go, does.
        shutil.rmtree(socket_path.parent, ignore_errors=True)
    return 0


def main(argv: list[str]) -> int:
    follow_parent()
    settings = Settings()
    prepare_process(settings)
    return asyncio.run(run_engine(settings, Path(argv[0]), int(argv[1])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
