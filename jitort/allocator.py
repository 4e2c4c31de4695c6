"""Keep freed intermediate buffers in the process heap (glibc malloc tuning).

A plan allocates its intermediates with ``np.empty`` on every run and frees them as it goes. By
default glibc serves blocks above 128 KiB-32 MiB (a dynamic threshold) with fresh ``mmap`` calls and
returns freed heap tops to the OS, so every run page-faults its buffers in again: 654 minor faults
per run on light_shufflenet, 2,222 on densenet121, ~20 % of shufflenet's run time. onnxruntime keeps
its own arena. jitort raises the mmap and trim thresholds once per process, when the first session
is created, so freed buffers are reused; peak RSS is unchanged (the same buffers stay resident).
``JITORT_MALLOC_TUNING=0`` leaves the allocator alone; other C libraries are left alone as well.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False
_lock = threading.Lock()


def tune() -> bool:
    """Apply the tuning (idempotent); True when glibc accepted it."""
    global _done
    with _lock:
        if _done:
            return True
        _done = True
        if os.environ.get("JITORT_MALLOC_TUNING", "1") == "0":
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
            return False
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        ok = any(mallopt(_M_MMAP_THRESHOLD, mib << 20) == 1 for mib in (256, 32))
        return bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30)) and ok
