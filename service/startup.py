"""What every process of the service does first, and how a start-up failure is told in one line.

Shared by the single-process server, the engine process and the HTTP workers; it
imports neither torch nor the web framework.
"""

from __future__ import annotations

import sys
import tempfile

from models import ModelLoadError
from service.allocator import keep_freed_memory
from service.errors import DeviceUnavailable
from service.logs import configure_logging
from service.settings import Settings

# Causes whose message already names the file or setting at fault: a traceback adds nothing.
KNOWN_STARTUP_ERRORS = (ModelLoadError, DeviceUnavailable)


def _startup_failure(error: Exception | None) -> str:
    if error is None:
        return "the application failed during start-up (see the log above)"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if isinstance(error, KNOWN_STARTUP_ERRORS) else f"{type(error).__name__}: {text}"


def prepare_process(settings: Settings) -> None:
    """Logging, memory and temp-file set-up shared by every process of the service."""
    configure_logging(settings.log_level, settings.log_format)
    keep_freed_memory()
    if settings.temp_dir is not None:
        # Multipart uploads spool here past 1 MB: the one writable place in a read-only container.
        tempfile.tempdir = str(settings.temp_dir)


def cannot_start(error: Exception | None) -> int:
    print(f"cnn-serve: cannot start: {_startup_failure(error)}", file=sys.stderr)
    return 1
