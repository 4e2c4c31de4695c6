"""The small strided GEMM the fused attention kernel runs per (batch, head, query block).

``gemm(fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)``: row-major ``c = alpha * op(a) @ op(b)
+ beta * c`` on 1-D float arrays whose element 0 is the matrix's first element (the caller slices the
offset), with leading dimensions, so a head's rows inside a [B, S, N, H] tensor need no copy.
``fn`` is the address of numpy's OpenBLAS ILP64 ``cblas_[sd]gemm`` (``cblas_address``), or 0 for a
plain loop kernel (no BLAS found, or forced with ``JITORT_ATTENTION_BLAS=0``: the narrower path the
tests run too).
"""
from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_VP = cgutils.voidptr_t


@intrinsic
def _cblas(typingctx, fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # type: ignore[no-untyped-def]
    """cblas_?gemm(RowMajor, ...) at the run-time address ``fn`` (not a constant, so kernels cache)."""
    dt = c.dtype
    sig = types.void(fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        st = sig.args
        fl = context.get_value_type(dt)
        fnty = ir.FunctionType(ir.VoidType(), [_I32, _I32, _I32, _I64, _I64, _I64, fl, _VP, _I64,
                                               _VP, _I64, fl, _VP, _I64])
        f = builder.inttoptr(context.cast(builder, args[0], st[0], types.int64), fnty.as_pointer())

        def i64(j: int):  # type: ignore[no-untyped-def]
            return context.cast(builder, args[j], st[j], types.int64)

        def trans(j: int):  # type: ignore[no-untyped-def]
            is_t = builder.icmp_signed("!=", i64(j), ir.Constant(_I64, 0))
            return builder.select(is_t, ir.Constant(_I32, 112), ir.Constant(_I32, 111))  # Trans / NoTrans

        def data(j: int):  # type: ignore[no-untyped-def]
            return builder.bitcast(context.make_array(st[j])(context, builder, args[j]).data, _VP)

        builder.call(f, (ir.Constant(_I32, 101), trans(1), trans(2), i64(3), i64(4), i64(5),  # 101: RowMajor
                         context.cast(builder, args[6], st[6], dt), data(7), i64(8), data(9), i64(10),
                         context.cast(builder, args[11], st[11], dt), data(12), i64(13)))

    return sig, codegen


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def gemm(fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # type: ignore[no-untyped-def]
    """Row-major ``c = alpha * op(a) @ op(b) + beta * c`` (see the module docstring)."""
    if m == 0 or n == 0:
        return
    if fn != 0:
        _cblas(fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
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


def _numpy_cblas() -> tuple[dict[np.dtype, int], Any]:
    """Addresses of numpy's bundled OpenBLAS ``cblas_sgemm64_`` / ``cblas_dgemm64_`` ({} if not found),
    and its ``openblas_set_num_threads_local`` (None if it has none)."""
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas64*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pre in ("scipy_", ""):
            try:
                fs, fd = getattr(lib, f"{pre}cblas_sgemm64_"), getattr(lib, f"{pre}cblas_dgemm64_")
            except AttributeError:
                continue
            local = getattr(lib, "openblas_set_num_threads_local", None)
            if local is not None:
                local.restype, local.argtypes = ctypes.c_int, [ctypes.c_int]
            return {np.dtype(np.float32): ctypes.cast(fs, ctypes.c_void_p).value or 0,
                    np.dtype(np.float64): ctypes.cast(fd, ctypes.c_void_p).value or 0}, local
    return {}, None


_ADDRESSES, _SET_LOCAL = _numpy_cblas()
use_blas = os.environ.get("JITORT_ATTENTION_BLAS", "1") != "0"  # read once; tests flip it to run the loops


def cblas_address(dt: np.dtype) -> int:
    """The BLAS entry for dt, or 0 (the loop kernel) when none was found or ``use_blas`` is off."""
    return _ADDRESSES.get(dt, 0) if use_blas else 0


def set_blas_threads_here(n: int) -> int:
    """Limit the BLAS calls this thread makes to n threads; returns the previous limit (0: unknown).

    The attention kernel splits its tasks between threads itself; each of its GEMMs is small, and
    OpenBLAS threading them too (its threshold is M*N*K >= 262144) made 2-thread runs slower than
    1-thread ones here, and under load a few hundred times slower (threads spinning for each other)."""
    return _SET_LOCAL(n) if _SET_LOCAL is not None else 0
