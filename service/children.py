"""What every child of the supervisor does first: die with its parent.

A parent killed with SIGKILL cannot stop its children; Linux's
PR_SET_PDEATHSIG makes the kernel send the child SIGTERM when the parent dies,
and the child then drains and exits as on any SIGTERM. The check after it closes
the race of a parent that died before the call.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT_ENV = "CNN_SUPERVISOR_PID"


def orphaned() -> bool:
    """The supervisor that started this process is gone."""
    expected = os.environ.get(PARENT_ENV)
    return expected is not None and os.getppid() != int(expected)


def follow_parent() -> None:
    expected = os.environ.get(PARENT_ENV)
    if expected is None:
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if orphaned():
        sys.exit(1)  # the supervisor is already gone
