"""Checks before start-up that need more than the settings themselves: the served model
names, and whether the addresses can be listened on.

Each failure names the variable at fault in one line. uvicorn would otherwise log a bind
error among its own lines and exit, and a default model that is not served would start
and answer every classification 404.
"""

from __future__ import annotations

import errno
import socket

from models.repository import scan
from service.settings import Settings, configured_models


class SettingError(Exception):
    """A setting that passed validation but cannot work on this machine."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")


def preflight(settings: Settings) -> None:
    if settings.model_repository is not None:
        names = sorted(scan(settings.model_repository))
    else:
        names = [spec.name for spec in configured_models(settings)]
    if settings.default_model is not None and settings.default_model not in names:
        raise SettingError(
            "CNN_DEFAULT_MODEL", f"{settings.default_model!r} is not a served model {names}"
        )
    check_listen(settings.host, settings.port, "CNN_PORT")
    if settings.metrics_port is not None:
        check_listen(settings.host, settings.metrics_port, "CNN_METRICS_PORT")


def check_listen(host: str, port: int, port_variable: str) -> None:
    """Bind every address `host` resolves to, as uvicorn will, and let go at once."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise SettingError("CNN_HOST", f"cannot resolve {host!r}: {exc}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            try:
                sock.bind(address)
            except OSError as exc:
                raise _bind_error(host, port, port_variable, exc) from None


def _bind_error(host: str, port: int, port_variable: str, exc: OSError) -> SettingError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
        return SettingError(port_variable, f"cannot listen on port {port}: {reason}")
    return SettingError("CNN_HOST", f"cannot listen on {host!r}: {reason}")
