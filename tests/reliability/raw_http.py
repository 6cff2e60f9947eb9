"""Raw-socket HTTP/1.1 for tests of what the HTTP layer itself sees: stalls, partial bodies."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length (or up to close)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    if lengths:
        length = int(lengths[0].split(b":")[1])
        while len(body) < length:
            piece = sock.recv(65536)
            if not piece:
                break
            body += piece
    return status, body


def post_head(path: str, content_type: str, length: int) -> bytes:
    """The head of a POST that declares `length` body bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes the connection (or resets it) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def peak_rss_bytes(pid: int) -> int:
    """Highest resident set size the process has had (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def open_deleted_files(pid: int, directory: Path) -> int:
    """Files the process holds open under `directory` that have been deleted (spooled uploads)."""
    count = 0
    prefix = str(directory.resolve())
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(prefix) and target.endswith("(deleted)"):
            count += 1
    return count
