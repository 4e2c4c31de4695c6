"""Keep freed intermediate buffers in the process heap (glibc malloc tuning).

A plan allocates its intermediates with ``np.empty`` on every run and frees them as it goes. By
default glibc serves blocks above 128 KiB-32 MiB (a dynamic threshold) with fresh ``mmap`` calls and
returns freed heap tops to the OS, so every run page-faults its buffers in again: 654 minor faults
per run on light_shufflenet, 2,222 on densenet121, ~20 % of shufflenet's run time. onnxruntime keeps
its own arena. jitort raises the mmap and trim thresholds once per process, when the first session
is created, so freed buffers are reused; peak RSS is unchanged (the same buffers stay resident).
``JITORT_MALLOC_TUNING=0`` leaves the allocator alone; other C libraries are left alone as well.

Aligned arrays (``aligned_empty``, ``aligned_zeros``, ``aligned``): what the GEMM kernels load as whole
vectors (packed weight panels, packing scratch) starts on a 64-byte boundary, so no 64-byte (zmm)
load straddles two cache lines. NumPy's heap arrays are only 16-byte aligned. Measured on the 2-vCPU
Intel Xeon (Ice Lake, AVX-512) dev VM, one thread, interleaved: MatMul's GEMM (``gemm.py``) on
64-byte aligned panels 104-124 GFLOP/s vs 88-89 at +16 or +32 bytes (128x768x768, 256x768x3072,
128x768x2048), the conv GEMM (``convgemm.py``) 105-116 vs 88-97. (On Zen 4, which splits a zmm load
in two halves, it mattered little.) A ``.npy`` file keeps its data 64-byte aligned (NumPy pads the
header to 64 bytes), so packed weights mapped from a cache entry or an AOT artifact stay aligned.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import threading
from typing import Sequence

import numpy as np

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


ALIGN = 64  # bytes: a cache line, and one AVX-512 register


def aligned_empty(shape: int | Sequence[int], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``ALIGN``-byte boundary."""
    dt = np.dtype(dtype)
    shp = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    n = math.prod(shp) * dt.itemsize
    raw = np.empty(n + ALIGN, np.uint8)
    off = -raw.ctypes.data % ALIGN
    return raw[off:off + n].view(dt).reshape(shp)


def aligned_zeros(shape: int | Sequence[int], dtype: np.dtype | type) -> np.ndarray:
    out = aligned_empty(shape, dtype)
    out.fill(0)
    return out


def is_aligned(a: np.ndarray) -> bool:
    return a.ctypes.data % ALIGN == 0


def aligned(a: np.ndarray) -> np.ndarray:
    """a itself when it is C-contiguous and aligned, else an aligned copy."""
    if a.flags.c_contiguous and is_aligned(a):
        return a
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out
