"""One HTTP worker: `python -m service.http_worker FD ENGINE_SOCKET`, started by the supervisor.

It serves the supervisor's listening socket (inherited as FD) with the full app,
whose models are the engine's behind ENGINE_SOCKET. It never imports torch.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from service.children import follow_parent
from service.server import serve
from service.settings import Settings


def main(argv: list[str]) -> int:
    follow_parent()
    listener = socket.socket(fileno=int(argv[0]))
    return serve(Settings(), engine=Path(argv[1]), sock=listener)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
