"""The batched GEMM core under MatMul, Gemm, Einsum and com.microsoft FusedMatMul/FusedGemm on
dynamic operands: ``bmm``, plus the dtype helpers those families share.

Floats (float32/float64) go to OpenBLAS sgemm/dgemm from ``@njit`` through intrinsics that expose
alpha, beta and the transpose flags (``np.dot`` in ``@njit`` hard-codes alpha=1, beta=0 and rejects
3-D operands): numpy's own OpenBLAS through its ILP64 ``cblas_?gemm`` when it can be found (faster
here, see ``jitort.kernels.blas``), else scipy's through Numba's ``numba_xxgemm`` helper. So a transposed
operand costs no copy, Gemm's ``alpha * A @ B + beta * C`` is one BLAS call on an output pre-filled
with C, and a ``[B, S, K] @ [K, N]`` MatMul is a single ``[B*S, K] @ [K, N]`` call. Integers use a
blocked ``@njit`` loop kernel (wrapping like C); float16/bfloat16 compute in float32.

Kernels specialise on dtype only: every call passes 3-D C-contiguous operands plus two int64 index
arrays mapping each output batch to its A and B slice (which is how batch broadcasting is done).
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import check_blas_return, ensure_blas, get_blas_kind

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels import blas

_KW = dict(cache=True, nogil=True, error_model="numpy")
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_BLAS = (_F32, _F64)
_INT = tuple(np.dtype(t) for t in (np.int32, np.int64, np.uint32, np.uint64))
# Narrow integers compute in the 64-bit type of the same signedness: products and sums wrap
# modulo 2^n the same way, and it saves a kernel compile per narrow type.
_WIDEN = {np.dtype(np.int8): np.dtype(np.int64), np.dtype(np.int16): np.dtype(np.int64),
          np.dtype(np.uint8): np.dtype(np.uint64), np.dtype(np.uint16): np.dtype(np.uint64)}


# --- the BLAS core ------------------------------------------------------------------------------

_I8 = ir.IntType(8)
_VP = cgutils.voidptr_t


@intrinsic
def _xgemm(typingctx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):  # type: ignore[no-untyped-def]
    """Row-major ``c = alpha * op(a) @ op(b) + beta * c`` on the data pointers of a, b, c.

    Column-major BLAS sees a row-major buffer as its transpose, so this computes
    ``c^T = op(b)^T op(a)^T``: b goes first, a second, and m/n swap.
    """
    try:
        ensure_blas()
    except ImportError:  # only the numpy-BLAS branch of the kernel will run (see CBLAS_GEMM)
        pass
    dt = c.dtype
    get_blas_kind(dt, "jitort gemm")
    sig = types.void(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        st = sig.args
        intp = context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.IntType(32), [_I8, _I8, _I8, intp, intp, intp, _VP, _VP, intp,
                                                _VP, intp, _VP, _VP, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")

        def as_intp(k: int):  # type: ignore[no-untyped-def]
            return context.cast(builder, args[k], st[k], types.intp)

        def flag(k: int):  # type: ignore[no-untyped-def]
            is_t = builder.icmp_signed("!=", as_intp(k), ir.Constant(intp, 0))
            return builder.select(is_t, ir.Constant(_I8, ord("t")), ir.Constant(_I8, ord("n")))

        def data(k: int):  # type: ignore[no-untyped-def]
            return builder.bitcast(context.make_array(st[k])(context, builder, args[k]).data, _VP)

        def slot(k: int):  # type: ignore[no-untyped-def]
            v = context.cast(builder, args[k], st[k], dt)
            return builder.bitcast(cgutils.alloca_once_value(builder, v), _VP)

        kind = ir.Constant(_I8, ord(get_blas_kind(dt)))
        res = builder.call(fn, (kind, flag(1), flag(0), as_intp(3), as_intp(2), as_intp(4), slot(5),
                                data(8), as_intp(9), data(6), as_intp(7), slot(10), data(11), as_intp(12)))
        check_blas_return(context, builder, res)

    return sig, codegen




CBLAS_GEMM = dict(blas.CBLAS)  # tests empty it to run the scipy-BLAS branch



@njit(**_KW)
def gemm_batched(fn, a, b, ia, ib, c, ta, tb, alpha, beta):  # type: ignore[no-untyped-def]
    """c[i] = alpha * op(a[ia[i]]) @ op(b[ib[i]]) + beta * c[i], op = transpose when ta / tb.

    fn: address of an ILP64 cblas gemm for c's dtype, or 0 for scipy's BLAS via Numba's helper.
    """
    m = c.shape[1]
    n = c.shape[2]
    k = a.shape[1] if ta else a.shape[2]
    lda = max(a.shape[2], 1)
    ldb = max(b.shape[2], 1)
    ldc = max(n, 1)
    for i in range(c.shape[0]):
        if fn != 0:
            blas.cblas_gemm(fn, ta, tb, m, n, k, alpha, a[ia[i]], lda, b[ib[i]], ldb, beta, c[i], ldc)
        else:
            _xgemm(ta, tb, m, n, k, alpha, a[ia[i]], lda, b[ib[i]], ldb, beta, c[i], ldc)


@njit(**_KW)
def _imatmul_batched(a, b, ia, ib, c):  # type: ignore[no-untyped-def]
    """c[i] += a[ia[i]] @ b[ib[i]] for integers, wrapping like C. c must start zeroed (or hold C).

    i-k-j order so the inner loop streams a row block of b into a row block of c; the 1-D row
    slices are what lets LLVM vectorise it (2-D indexing in the inner loop measured 10x slower).
    Blocked over k and j so a 128 x 256 block of b stays in L2 while every row of a passes over it.
    """
    m = c.shape[1]
    n = c.shape[2]
    kk = a.shape[2]
    for bi in range(c.shape[0]):
        x = a[ia[bi]]
        y = b[ib[bi]]
        z = c[bi]
        for j0 in range(0, n, 256):
            j1 = min(j0 + 256, n)
            w = j1 - j0
            for k0 in range(0, kk, 128):
                k1 = min(k0 + 128, kk)
                for i in range(m):
                    zr = z[i, j0:j1]
                    for p in range(k0, k1):
                        s = x[i, p]
                        yr = y[p, j0:j1]
                        for j in range(w):
                            zr[j] = zr[j] + s * yr[j]


def _compute_table() -> dict[np.dtype, np.dtype]:
    table = {dt: dt for dt in _BLAS + _INT}
    table.update(_WIDEN)
    table[np.dtype(np.float16)] = _F32
    try:
        import ml_dtypes
        table[np.dtype(ml_dtypes.bfloat16)] = _F32
    except ImportError:  # pragma: no cover - onnx depends on ml_dtypes
        pass
    return table


_COMPUTE = _compute_table()  # storage dtype -> the dtype the kernels compute in


def gemm_compute_dtype(dt: np.dtype, op_type: str) -> np.dtype:
    cd = _COMPUTE.get(dt)
    if cd is None:
        raise OrtNotImplemented(f"{op_type}: jitort does not support element type {dt}")
    return cd


def _c3(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """x reshaped to 3-D, C-contiguous and writeable (Numba types read-only arrays apart)."""
    x = x.reshape(shape)
    if not (x.flags.c_contiguous and x.flags.writeable):
        x = np.array(x, order="C")
    return x


def _batch_index(batch: tuple[int, ...], out_batch: tuple[int, ...]) -> np.ndarray:
    n = math.prod(batch)
    if n == 1:
        return np.zeros(math.prod(out_batch), np.int64)
    idx = np.arange(n, dtype=np.int64).reshape(batch)
    return np.broadcast_to(idx, out_batch).flatten()  # a writeable copy: one kernel signature


_Z1 = np.zeros(1, np.int64)  # the batch index of a single GEMM (only ever read)


def bmm(a: np.ndarray, b: np.ndarray, ta: int, tb: int, op_type: str, alpha: float = 1.0,
         c: np.ndarray | None = None, beta: float = 0.0) -> np.ndarray:
    """Batched ``alpha * op(a) @ op(b) + beta * c`` with numpy batch broadcasting.

    a: ``[*batch_a, m, k]`` (``[*batch_a, k, m]`` when ta), b likewise; both already in the compute
    dtype. c (optional) is broadcast to the output ``[*batch, m, n]``. Returns the compute dtype.
    """
    dt = a.dtype
    sa, sb = a.shape, b.shape
    ba, bb = sa[:-2], sb[:-2]
    m, k = (sa[-1], sa[-2]) if ta else (sa[-2], sa[-1])
    k2, n = (sb[-1], sb[-2]) if tb else (sb[-2], sb[-1])
    if k != k2:
        raise InvalidArgument(f"{op_type}: inner dimensions differ: left operand {sa}"
                              f"{' (transposed)' if ta else ''}, right operand {sb}"
                              f"{' (transposed)' if tb else ''}")
    if ba == bb or not bb:
        batch = ba
    elif not ba:
        batch = bb
    else:
        try:
            batch = np.broadcast_shapes(ba, bb)
        except ValueError:
            raise InvalidArgument(f"{op_type}: batch dimensions {ba} and {bb} do not broadcast") from None
    out_shape = batch + (m, n)
    use_c = c is not None and beta != 0
    is_int = dt.kind != "f"
    if use_c:
        out = np.empty(out_shape, dt)
        try:
            np.copyto(out, c)  # type: ignore[arg-type]
        except ValueError:
            raise InvalidArgument(f"{op_type}: C of shape {c.shape} does not broadcast to the "  # type: ignore[union-attr]
                                  f"output shape {out_shape}") from None
    else:
        out = np.zeros(out_shape, dt) if is_int or k == 0 else np.empty(out_shape, dt)
    if out.size == 0 or k == 0:
        if k == 0 and use_c and beta != 1:
            out *= dt.type(beta)
        return out
    if is_int:
        if alpha != 1 or (use_c and beta != 1):
            raise AssertionError("integer GEMM takes alpha = beta = 1")  # Gemm handles the rest
        if ta:
            a, ta, sa = np.ascontiguousarray(np.swapaxes(a, -1, -2)), 0, (sa[:-2] + (m, k))
        if tb:
            b, tb, sb = np.ascontiguousarray(np.swapaxes(b, -1, -2)), 0, (sb[:-2] + (k, n))
    nba, nbb = math.prod(ba), math.prod(bb)
    if nbb == 1 and not ta:
        # one weight matrix for every batch: fold the batch into the rows of a single call
        a3, b3 = _c3(a, (1, nba * m, k)), _c3(b, (1,) + sb[-2:])
        c3 = out.reshape(1, nba * m, n)
        ia = ib = _Z1
    else:
        nb = math.prod(batch)
        a3, b3 = _c3(a, (nba,) + sa[-2:]), _c3(b, (nbb,) + sb[-2:])
        c3 = out.reshape(nb, m, n)
        if ba == bb:
            ia = ib = _Z1 if nb == 1 else np.arange(nb, dtype=np.int64)
        else:
            ia, ib = _batch_index(ba, batch), _batch_index(bb, batch)
    if is_int:
        _imatmul_batched(a3, b3, ia, ib, c3)
    elif c3.shape[0] == 1 and (c3.shape[1] == 1 or n == 1):
        # A vector operand (batch-1 MLPs and CNN classifiers, decoders): numpy's matmul calls gemv,
        # while sgemm packs all of B on every call (80 µs vs 13 µs for [1,256]@[256,512] here;
        # alexnet's [1,9216]@[9216,4096] with its bias: 14.9 ms vs 6 ms).
        x = a3[0].T if ta else a3[0]
        y = b3[0].T if tb else b3[0]
        if use_c:
            t = np.matmul(x, y)
            if alpha != 1:
                t *= dt.type(alpha)
            if beta != 1:
                c3[0] *= dt.type(beta)
            c3[0] += t
        else:
            np.matmul(x, y, out=c3[0])
            if alpha != 1:
                c3[0] *= dt.type(alpha)
    else:
        # alpha/beta travel as Python floats (float64 in the signature; the intrinsic casts them):
        # building numpy scalars per call measured slower than the BLAS call on small matrices
        gemm_batched(CBLAS_GEMM.get(dt, 0), a3, b3, ia, ib, c3, ta, tb, float(alpha),
                      float(beta) if use_c else 0.0)
    return out


def as_dtype(x: np.ndarray, dt: np.dtype) -> np.ndarray:
    return x if x.dtype == dt else x.astype(dt)


def same_dtype(op_type: str, *xs: np.ndarray | None) -> np.dtype:
    dt = xs[0].dtype  # type: ignore[union-attr]
    for x in xs[1:]:
        if x is not None and x.dtype != dt:
            raise InvalidArgument(f"{op_type}: inputs must share one element type, got {dt} and {x.dtype}")
    return dt
