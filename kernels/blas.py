"""jitort's binding to BLAS's ``cblas_[sd]gemm``: numpy's own bundled OpenBLAS (ILP64), called from
``@njit`` code through an intrinsic at a run-time address (an argument, not a constant, so kernels
that call it cache). MatMul/Gemm/Einsum on dynamic operands (``batched_gemm``) and the fused attention's
per-block products (``attention_gemm``) use it.

Measured on a 2-vCPU AMD EPYC (AVX2, 1 thread): numpy's OpenBLAS 0.3.31 runs sgemm with a small M
2-2.5x faster than scipy's 0.3.30 (M=8..64, K=N=1024) and never slower.
"""
from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_VP = cgutils.voidptr_t


@intrinsic
def cblas_gemm(typingctx, fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # type: ignore[no-untyped-def]
    """Row-major ``c = alpha * op(a) @ op(b) + beta * c`` through an ILP64 ``cblas_[sd]gemm`` whose
    address is the run-time argument ``fn`` (an address, not a constant, so the kernel caches)."""
    dt = c.dtype
    sig = types.void(fn, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        st = sig.args
        fl = context.get_value_type(dt)
        fnty = ir.FunctionType(ir.VoidType(), [_I32, _I32, _I32, _I64, _I64, _I64, fl, _VP, _I64,
                                               _VP, _I64, fl, _VP, _I64])
        f = builder.inttoptr(context.cast(builder, args[0], st[0], types.int64), fnty.as_pointer())

        def i64(k: int):  # type: ignore[no-untyped-def]
            return context.cast(builder, args[k], st[k], types.int64)

        def trans(k: int):  # type: ignore[no-untyped-def]
            is_t = builder.icmp_signed("!=", i64(k), ir.Constant(_I64, 0))
            return builder.select(is_t, ir.Constant(_I32, 112), ir.Constant(_I32, 111))  # CblasTrans / NoTrans

        def data(k: int):  # type: ignore[no-untyped-def]
            return builder.bitcast(context.make_array(st[k])(context, builder, args[k]).data, _VP)

        builder.call(f, (ir.Constant(_I32, 101), trans(1), trans(2), i64(3), i64(4), i64(5),  # 101: RowMajor
                         context.cast(builder, args[6], st[6], dt), data(7), i64(8), data(9), i64(10),
                         context.cast(builder, args[11], st[11], dt), data(12), i64(13)))

    return sig, codegen


def _numpy_openblas() -> tuple[dict[np.dtype, int], Any]:
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


CBLAS, _SET_LOCAL = _numpy_openblas()  # dtype -> cblas_?gemm address ({} without numpy's OpenBLAS)


def set_threads_local(n: int) -> int:
    """Limit the BLAS calls this thread makes to n threads; returns the previous limit (0: unknown)."""
    return _SET_LOCAL(n) if _SET_LOCAL is not None else 0
