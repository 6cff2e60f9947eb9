from __future__ import annotations

import subprocess
import sys


def test_malloc_thresholds_apply_in_a_fresh_process() -> None:
    # A child process, so this test's own interpreter keeps glibc's defaults.
    code = (
        "from service.allocator import keep_freed_memory\n"
        "import ctypes, ctypes.util\n"
        "print(ctypes.util.find_library('c') is not None, keep_freed_memory())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    has_libc, applied = out.stdout.split()
    assert has_libc == applied  # applied wherever a C library with mallopt is found
