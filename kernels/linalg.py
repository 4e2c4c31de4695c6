"""Linear algebra: MatMul, Gemm, Einsum, all lowered to one batched GEMM core (``_bmm``).

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
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import check_blas_return, ensure_blas, get_blas_kind

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import Graph, Node
from jitort.kernels.gemm_ops import lower_packed
from jitort.kernels import blas
from jitort.kernels.registry import BFLOAT16, Call, Ref, default_call, lookup, op

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
    except ImportError:  # only the numpy-BLAS branch of the kernel will run (see _CBLAS)
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




_CBLAS = dict(blas.CBLAS)  # tests empty it to run the scipy-BLAS branch



@njit(**_KW)
def _gemm_batched(fn, a, b, ia, ib, c, ta, tb, alpha, beta):  # type: ignore[no-untyped-def]
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


def _compute_dtype(dt: np.dtype, op_type: str) -> np.dtype:
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


def _bmm(a: np.ndarray, b: np.ndarray, ta: int, tb: int, op_type: str, alpha: float = 1.0,
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
        _gemm_batched(_CBLAS.get(dt, 0), a3, b3, ia, ib, c3, ta, tb, float(alpha),
                      float(beta) if use_c else 0.0)
    return out


def _to(x: np.ndarray, dt: np.dtype) -> np.ndarray:
    return x if x.dtype == dt else x.astype(dt)


def _same_dtype(op_type: str, *xs: np.ndarray | None) -> np.dtype:
    dt = xs[0].dtype  # type: ignore[union-attr]
    for x in xs[1:]:
        if x is not None and x.dtype != dt:
            raise InvalidArgument(f"{op_type}: inputs must share one element type, got {dt} and {x.dtype}")
    return dt


# --- MatMul ---------------------------------------------------------------------------------------

def _matmul(a: np.ndarray, b: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    if a.ndim == 0 or b.ndim == 0:
        raise InvalidArgument(f"MatMul: operands must have rank >= 1, got shapes {a.shape} and {b.shape}")
    cd = _compute_dtype(out_dtype, "MatMul")
    a2 = _to(a, cd).reshape(1, -1) if a.ndim == 1 else _to(a, cd)
    b2 = _to(b, cd).reshape(-1, 1) if b.ndim == 1 else _to(b, cd)
    out = _bmm(a2, b2, 0, 0, "MatMul")
    if a.ndim == 1 or b.ndim == 1:  # numpy: the prepended / appended 1 is dropped again
        m, n = out.shape[-2:]
        out = out.reshape(out.shape[:-2] + ((m,) if a.ndim > 1 else ()) + ((n,) if b.ndim > 1 else ()))
    return _to(out, out_dtype)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@op("MatMul", since=1, lower=lambda n, g: _lower_matmul(n, g))
def MatMul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if (b.ndim == 2 and a.ndim >= 2 and a.dtype == b.dtype and a.dtype in _FLOATS and a.size
            and a.shape[-1] == b.shape[0] > 0):
        # The transformer/MLP case, [..., k] @ [k, n]: one BLAS call through numpy's matmul
        # (gemm, or gemv for a single row), a few hundred ns of Python around it.
        return np.matmul(a.reshape(-1, b.shape[0]), b).reshape(a.shape[:-1] + (b.shape[1],))
    return _matmul(a, b, _same_dtype("MatMul", a, b))


def MatMul_prepared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MatMul with a constant float16/bfloat16 right operand already converted to float32."""
    return _matmul(a, b, a.dtype)


def _lower_matmul(node: Node, g: Graph) -> Call:
    packed = lower_packed(node, g)  # float32 with constant weights: jitort's packed GEMM
    if packed is not None:
        return packed
    w = g.const(node.inputs[1])
    a_t = g.type_of(node.inputs[0])
    if w is not None and (w.dtype == np.float16 or w.dtype == BFLOAT16) and a_t.dtype == w.dtype:
        return Call(MatMul_prepared, [Ref(node.inputs[0]), w.astype(np.float32)])
    return default_call(lookup("MatMul", "", node.version), node, g)


# --- Gemm -----------------------------------------------------------------------------------------

def _gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None, alpha: float, beta: float, transA: int,
          transB: int, broadcast: int, out_dtype: np.dtype) -> np.ndarray:
    if a.ndim != 2 or b.ndim != 2:
        raise InvalidArgument(f"Gemm: A and B must be 2-D, got shapes {a.shape} and {b.shape}")
    cd = _compute_dtype(out_dtype, "Gemm")
    a, b = _to(a, cd), _to(b, cd)
    m = a.shape[1] if transA else a.shape[0]
    n = b.shape[0] if transB else b.shape[1]
    if c is not None:
        if c.ndim > 2 or (not broadcast and c.shape != (m, n)):
            raise InvalidArgument(f"Gemm: C of shape {c.shape} does not {'broadcast to' if broadcast else 'match'} "
                                  f"the output shape {(m, n)}")
        c = _to(c, cd) if beta != 0 else None
    if cd in _INT and (alpha != 1 or (c is not None and beta != 1)):
        # the spec's formula with float attributes: alpha * A @ B + beta * C, cast back
        y = _bmm(a, b, transA, transB, "Gemm").astype(np.float64) * alpha
        if c is not None:
            y = y + c.astype(np.float64) * beta
        return y.astype(out_dtype)
    y = _bmm(a, b, transA, transB, "Gemm", alpha, c, beta if c is not None else 0.0)
    return _to(y, out_dtype)


@op("Gemm", since=1, lower=lambda n, g: _lower_gemm(n, g))
def Gemm_1(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float, beta: float,
           transA: int, transB: int, broadcast: int) -> np.ndarray:
    """Gemm-1/6: C is broadcast only when ``broadcast`` is set, otherwise it must be (M, N)."""
    return _gemm(a, b, c, alpha, beta, transA, transB, broadcast, _same_dtype("Gemm", a, b, c))


@op("Gemm", since=7, lower=lambda n, g: _lower_gemm(n, g))
def Gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float, beta: float,
         transA: int, transB: int) -> np.ndarray:
    return _gemm(a, b, c, alpha, beta, transA, transB, 1, _same_dtype("Gemm", a, b, c))


def Gemm_prepared(a: np.ndarray, b: np.ndarray, c: np.ndarray | None, *, alpha: float, beta: float,
                  transA: int, transB: int, broadcast: int) -> np.ndarray:
    """Gemm whose constant B (and C) were prepared at compile time: float16 weights already in float32."""
    return _gemm(a, b, c, alpha, beta, transA, transB, broadcast, a.dtype)


def _lower_gemm(node: Node, g: Graph) -> Call:
    packed = lower_packed(node, g)
    if packed is not None:
        return packed
    d = lookup("Gemm", "", node.version)
    call = default_call(d, node, g)
    b = g.const(node.inputs[1])
    a_t = g.type_of(node.inputs[0])
    if b is None or a_t.dtype is None or b.dtype != a_t.dtype or b.ndim != 2:
        return call
    kw = dict(call.kwargs)
    kw.setdefault("broadcast", 1)
    changed = False
    if b.dtype == np.float16 or b.dtype == BFLOAT16:
        b, changed = b.astype(np.float32), True
        cn = node.inputs[2] if len(node.inputs) > 2 else ""
        cc = g.const(cn)
        if cc is not None and cc.dtype == a_t.dtype:
            call.args[2] = cc.astype(np.float32)
    if PRETRANSPOSE_B and kw["transB"]:
        b, kw["transB"], changed = np.ascontiguousarray(b.T), 0, True
    if not changed:
        return call
    args = [call.args[0], b, call.args[2] if len(call.args) > 2 else None]
    return Call(Gemm_prepared, args, kw)


# BLAS could read a transposed B in place, but the plain layout measured faster (1 thread, numpy's
# OpenBLAS): [64,1024]x[1024,1024] 2.2 vs 5.8 ms, [8,768]x[768,3072] 1.2 vs 1.7 ms, [256,512]x[512,512]
# 1.7 vs 2.1 ms. So a constant B with transB=1 is transposed once at compile time.
PRETRANSPOSE_B = True


# --- Einsum ---------------------------------------------------------------------------------------
# Labels are strings: a letter, or ".k" for the k-th ellipsis dimension counted from the right
# (so ellipses of different ranks line up right-aligned, as numpy broadcasts them).

def _parse_einsum(equation: str, ranks: tuple[int, ...]) -> tuple[list[list[str]], list[str]]:
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise InvalidArgument(f"Einsum: equation '{equation}' has {len(terms)} operand terms, "
                              f"got {len(ranks)} inputs")
    labels: list[list[str]] = []
    n_ell = 0
    for t, r in zip(terms, ranks):
        head, dots, tail = t.partition("...")
        if "." in head + tail or not (head + tail).isalpha() and head + tail:
            raise InvalidArgument(f"Einsum: invalid term '{t}' in equation '{equation}'")
        e = r - len(head) - len(tail)
        if (e != 0 and not dots) or e < 0:
            raise InvalidArgument(f"Einsum: term '{t}' of equation '{equation}' does not match an "
                                  f"input of rank {r}")
        n_ell = max(n_ell, e)
        labels.append(list(head) + [f".{e - j}" for j in range(e)] + list(tail))
    ell = [f".{n_ell - j}" for j in range(n_ell)]
    if arrow:
        head, dots, tail = rhs.partition("...")
        if "." in head + tail or (head + tail and not (head + tail).isalpha()):
            raise InvalidArgument(f"Einsum: invalid output term '{rhs}' in equation '{equation}'")
        out = list(head) + (ell if dots else []) + list(tail)
        seen = {x for ls in labels for x in ls}
        for x in head + tail:
            if x not in seen or out.count(x) > 1:
                raise InvalidArgument(f"Einsum: output label '{x}' of equation '{equation}' "
                                      f"{'repeats' if x in seen else 'is in no input'}")
    else:
        counts: dict[str, int] = {}
        for ls in labels:
            for x in ls:
                counts[x] = counts.get(x, 0) + 1
        out = ell + sorted(x for x, c in counts.items() if c == 1 and not x.startswith("."))
    return labels, out


@dataclass(frozen=True)
class _Arrange:
    """How one operand becomes a GEMM operand ``[*batch, p, q]``: optional transpose, then reshape.
    Index tuples are axes of the operand before the transpose."""

    perm: tuple[int, ...] | None
    trans: int
    batch: tuple[int, ...]
    p: tuple[int, ...]
    q: tuple[int, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:
        s = x.shape
        shape = tuple(s[i] for i in self.batch) + (math.prod(s[i] for i in self.p),
                                                    math.prod(s[i] for i in self.q))
        return (x if self.perm is None else x.transpose(self.perm)).reshape(shape)


@dataclass(frozen=True)
class _Pair:
    """Contract the first two operands: sum labels only one side has, then one batched GEMM."""

    sum_x: tuple[int, ...]
    sum_y: tuple[int, ...]
    k_pairs: tuple[tuple[int, int], ...]  # contraction axes (x, y) after the sums
    x: _Arrange
    y: _Arrange
    m: tuple[int, ...]  # axes of x / y whose sizes name the result's row / column dims
    n: tuple[int, ...]


@dataclass(frozen=True)
class _EinsumPlan:
    diagonals: tuple[tuple[tuple[int, int], ...], ...]  # per operand: axis pairs to take diagonals of
    pairs: tuple[_Pair, ...]
    final_sum: tuple[int, ...]
    final_perm: tuple[int, ...] | None


def _arrange(lx: list[str], batch: list[str], first: list[str], second: list[str]) -> _Arrange:
    """Operand with labels lx as [*batch, first, second]; read transposed in place when it already
    is [*batch, second, first] (BLAS takes the flag), transposed by a copy otherwise."""
    ix = {t: k for k, t in enumerate(lx)}
    b, f, sc = tuple(ix[t] for t in batch), tuple(ix[t] for t in first), tuple(ix[t] for t in second)
    if lx == batch + first + second:
        return _Arrange(None, 0, b, f, sc)
    if lx == batch + second + first:
        return _Arrange(None, 1, b, sc, f)
    return _Arrange(b + f + sc, 0, b, f, sc)


def _pair_plan(lx: list[str], ly: list[str], keep: set[str]) -> tuple[_Pair, list[str]]:
    """The grouping follows x's own label order (batch, rows, contraction) so the common
    transformer layouts need no copy: 'bhqd,bhkd->bhqk' is x as [bh, q, d] and y read transposed
    in place as [bh, k, d]."""
    sum_x = tuple(k for k, t in enumerate(lx) if t not in keep and t not in ly)
    sum_y = tuple(k for k, t in enumerate(ly) if t not in keep and t not in lx)
    lx, ly = [t for t in lx if t in keep or t in ly], [t for t in ly if t in keep or t in lx]
    batch = [t for t in lx if t in ly and t in keep]
    kk = [t for t in lx if t in ly and t not in keep]
    mm = [t for t in lx if t not in ly]
    nn = [t for t in ly if t not in lx]
    pair = _Pair(sum_x, sum_y, tuple((lx.index(t), ly.index(t)) for t in kk),
                 _arrange(lx, batch, mm, kk), _arrange(ly, batch, kk, nn),
                 tuple(lx.index(t) for t in mm), tuple(ly.index(t) for t in nn))
    return pair, batch + mm + nn


def _einsum_plan(equation: str, ranks: tuple[int, ...]) -> _EinsumPlan:
    key = (equation, ranks)
    plan = _EINSUM_PLANS.get(key)
    if plan is not None:
        return plan
    labels, out = _parse_einsum(equation, ranks)
    diagonals = []
    ops = []
    for lx in labels:
        steps = []
        while len(set(lx)) < len(lx):  # a repeated label ('ii', 'bii') takes the diagonal
            t = next(t for t in lx if lx.count(t) > 1)
            i = lx.index(t)
            j = lx.index(t, i + 1)
            steps.append((i, j))
            lx = [u for k, u in enumerate(lx) if k not in (i, j)] + [t]  # np.diagonal appends it
        diagonals.append(tuple(steps))
        ops.append(lx)
    want = set(out)
    pairs = []
    while len(ops) > 1:
        keep = want.union(*ops[2:])
        pair, lz = _pair_plan(ops[0], ops[1], keep)
        pairs.append(pair)
        ops = [lz] + ops[2:]
    lx = ops[0]
    final_sum = tuple(k for k, t in enumerate(lx) if t not in want)
    lx = [t for t in lx if t in want]
    perm = None if lx == out else tuple(lx.index(t) for t in out)
    plan = _EinsumPlan(tuple(diagonals), tuple(pairs), final_sum, perm)
    _EINSUM_PLANS[key] = plan
    return plan


_EINSUM_PLANS: dict[tuple[str, tuple[int, ...]], _EinsumPlan] = {}


def _contract(p: _Pair, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if p.sum_x:
        x = x.sum(axis=p.sum_x, dtype=x.dtype)
    if p.sum_y:
        y = y.sum(axis=p.sum_y, dtype=y.dtype)
    for i, j in p.k_pairs:  # a size-1 (broadcast) contraction dim: sum the other side over it
        if x.shape[i] != y.shape[j]:
            if x.shape[i] == 1:
                y = y.sum(axis=j, keepdims=True, dtype=y.dtype)
            elif y.shape[j] == 1:
                x = x.sum(axis=i, keepdims=True, dtype=x.dtype)
            else:
                raise InvalidArgument(f"Einsum: a contracted label has sizes {x.shape[i]} and {y.shape[j]}")
    z = _bmm(p.x.apply(x), p.y.apply(y), p.x.trans, p.y.trans, "Einsum")
    return z.reshape(z.shape[:-2] + tuple(x.shape[i] for i in p.m) + tuple(y.shape[i] for i in p.n))


def _einsum(xs: Sequence[np.ndarray], equation: str) -> np.ndarray:
    plan = _einsum_plan(equation, tuple(x.ndim for x in xs))
    dt = _same_dtype("Einsum", *xs)
    cd = _compute_dtype(dt, "Einsum")
    ops = []
    for x, steps in zip(xs, plan.diagonals):
        x = _to(x, cd)
        for i, j in steps:
            if x.shape[i] != x.shape[j]:
                raise InvalidArgument(f"Einsum: a repeated label has sizes {x.shape[i]} and {x.shape[j]}")
            x = np.diagonal(x, axis1=i, axis2=j)
        ops.append(x)
    for p in plan.pairs:
        ops = [_contract(p, ops[0], ops[1])] + ops[2:]
    x = ops[0]
    if plan.final_sum:
        x = x.sum(axis=plan.final_sum, dtype=x.dtype)
    if plan.final_perm is not None:
        x = x.transpose(plan.final_perm)
    y = np.asarray(x, order="C")
    if len(xs) == 1 and y.dtype == dt and np.may_share_memory(y, xs[0]):
        y = y.copy()  # 'ij->ij' (or a diagonal that happens to be contiguous): never alias an input
    return _to(y, dt)


@op("Einsum", since=12)
def Einsum(*inputs: np.ndarray, equation: str) -> np.ndarray:
    if not inputs:
        raise InvalidArgument("Einsum: needs at least one input")
    return _einsum(inputs, equation)
