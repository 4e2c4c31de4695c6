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

import numpy as np
from numba import njit

from jitort.kernels import blas

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
