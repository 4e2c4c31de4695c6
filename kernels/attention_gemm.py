"""The small strided GEMM the fused attention kernel runs per (batch, head, query block).

``gemm(fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)``: row-major ``c = alpha * op(a) @ op(b)
+ beta * c`` on 1-D float arrays whose element 0 is the matrix's first element (the caller slices the
offset), with leading dimensions, so a head's rows inside a [B, S, N, H] tensor need no copy.
``fn`` is the address of numpy's OpenBLAS ILP64 ``cblas_[sd]gemm`` (``cblas_address``), or 0 for a
plain loop kernel (no BLAS found, or forced with ``JITORT_ATTENTION_BLAS=0``: the narrower path the
tests run too).
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

import numpy as np
from numba import njit

from jitort.kernels import blas
from jitort.kernels.threads import run_parts

@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def gemm(fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # type: ignore[no-untyped-def]
    """Row-major ``c = alpha * op(a) @ op(b) + beta * c`` (see the module docstring)."""
    if m == 0 or n == 0:
        return
    if fn != 0:
        blas.cblas_gemm(fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    zero = c.dtype.type(0)
    acc = np.empty(n, c.dtype)
    for i in range(m):
        for j in range(n):
            acc[j] = zero
        for p in range(k):
            x = a[p * lda + i] if ta else a[i * lda + p]
            if tb:
                for j in range(n):
                    acc[j] += x * b[j * ldb + p]
            else:
                row = b[p * ldb:p * ldb + n]
                for j in range(n):
                    acc[j] += x * row[j]
        cr = c[i * ldc:i * ldc + n]
        if beta == zero:
            for j in range(n):
                cr[j] = alpha * acc[j]
        else:
            for j in range(n):
                cr[j] = alpha * acc[j] + beta * cr[j]


use_blas = os.environ.get("JITORT_ATTENTION_BLAS", "1") != "0"  # read once; tests flip it to run the loops


def cblas_address(dt: np.dtype) -> int:
    """The BLAS entry for dt, or 0 (the loop kernel) when none was found or ``use_blas`` is off."""
    return blas.CBLAS.get(dt, 0) if use_blas else 0


def set_blas_threads_here(n: int) -> int:
    """Limit the BLAS calls this thread makes to n threads; returns the previous limit (0: unknown).

    The attention kernel splits its tasks between threads itself; each of its GEMMs is small, and
    OpenBLAS threading them too (its threshold is M*N*K >= 262144) made 2-thread runs slower than
    1-thread ones here, and under load a few hundred times slower (threads spinning for each other)."""
    return blas.set_threads_local(n)


_local = threading.local()


def tile_pair(n: int, dt: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """This thread's two score tiles of n elements of dt (scores, probabilities), reused across calls
    (one kernel runs at a time per thread): a fresh 128 KB buffer per call would be mmapped and
    page-faulted every time."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    pair = bufs.get((n, dt))
    if pair is None:
        pair = bufs[(n, dt)] = (np.empty(n, dt), np.empty(n, dt))
    return pair


def run_tasks(kernel: Callable[..., None], args: tuple[Any, ...], n: int, dt: np.dtype, nparts: int) -> None:
    """kernel(*args, *tile_pair(n, dt), part, nparts) for each part on jitort's pool (threads.run_parts;
    the kernel releases the GIL). The kernel splits its tasks by part, never shares one, so results do
    not depend on the thread count; every thread runs its GEMMs on one BLAS thread."""
    prev = set_blas_threads_here(1)
    try:
        if nparts <= 1:
            kernel(*args, *tile_pair(n, dt), 0, 1)
            return
        run_parts(lambda p: _task(kernel, args, n, dt, p, nparts), nparts, nparts)
    finally:
        if prev > 0:
            set_blas_threads_here(prev)


def _task(kernel: Callable[..., None], args: tuple[Any, ...], n: int, dt: np.dtype, p: int, nparts: int) -> None:
    set_blas_threads_here(1)
    kernel(*args, *tile_pair(n, dt), p, nparts)
