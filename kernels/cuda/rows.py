"""Row kernels: one block per row of a [N, D] view, a shared-memory + warp-shuffle block reduction.

Softmax / LogSoftmax (max, then sum of exp), LayerNormalization (mean, then the mean of squared
deviations: two passes over the row, as the CPU kernel does), and ReduceSum/Mean/Max/Min over the
trailing axes (also GlobalAveragePool / GlobalMaxPool: [N*C, H*W] rows). Each thread strides over
its row, the block combines the partials: within each warp with ``shfl_down_sync``, then across
warps through shared memory. The CUDA simulator has no warp shuffles, so there (``SHUFFLE`` is a
module constant, pruned at compile time) the block reduces through shared memory alone.

Semantics follow the CPU kernels: Max/Min propagate NaN; an empty Sum/Mean is 0; a Softmax row of
all -inf is NaN (exp(-inf - -inf)), as onnxruntime gives.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda, int64, void

from jitort.kernels.cuda.runtime import FLOATS, SIMULATOR, SMEM, A, compiled, flat, row_threads, signatures

SHUFFLE = not SIMULATOR
FULL_MASK = 0xFFFFFFFF
SUM, MAX, MIN = 0, 1, 2
REDUCE_OPS = {"ReduceSum": SUM, "ReduceMean": SUM, "ReduceMax": MAX, "ReduceMin": MIN,
              "GlobalAveragePool": SUM, "GlobalMaxPool": MAX}
REDUCE_KEYS = ("float32", "float64", "int32", "int64")


@cuda.jit(device=True, inline="always")
def combine(a, b, op):  # type: ignore[no-untyped-def]
    # Device helpers are inlined at Numba IR level: a separately compiled device function would need
    # a driver (it asks the current device for its compute capability), compile_ptx must not.
    if op == SUM:
        return a + b
    if op == MAX:
        return a if (a > b or a != a) else b
    return a if (a < b or a != a) else b


@cuda.jit(device=True, inline="always")
def block_reduce(v, sm, op, ident):  # type: ignore[no-untyped-def]
    """Combine every thread's ``v``; all threads get the result. blockDim.x: a power of two >= 32."""
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    if SHUFFLE:
        lane = t & 31
        w = t >> 5
        off = 16
        while off > 0:
            v = combine(v, cuda.shfl_down_sync(FULL_MASK, v, off), op)
            off >>= 1
        if lane == 0:
            sm[w] = v
        cuda.syncthreads()
        if w == 0:
            v = sm[lane] if lane < (nt >> 5) else ident
            off = 16
            while off > 0:
                v = combine(v, cuda.shfl_down_sync(FULL_MASK, v, off), op)
                off >>= 1
            if lane == 0:
                sm[0] = v
    else:
        sm[t] = v
        cuda.syncthreads()
        s = nt >> 1
        while s > 0:
            if t < s:
                sm[t] = combine(sm[t], sm[t + s], op)
            cuda.syncthreads()
            s >>= 1
    cuda.syncthreads()
    r = sm[0]
    cuda.syncthreads()  # sm is reused by the next reduction
    return r


# --- kernels -------------------------------------------------------------------------------------

@signatures(FLOATS, lambda T: void(A(T), A(T), int64, int64))
def softmax_rows(x, y, D, log):  # type: ignore[no-untyped-def]
    """y[r] = softmax(x[r]) (log: log_softmax) for the row r = blockIdx.x of length D."""
    sm = cuda.shared.array(SMEM, x.dtype)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    base = cuda.blockIdx.x * D
    neg_inf = x.dtype.type(-math.inf)
    zero = x.dtype.type(0)
    m = neg_inf
    i = t
    while i < D:
        v = x[base + i]
        if v > m or v != v:
            m = v
        i += nt
    m = block_reduce(m, sm, MAX, neg_inf)
    s = zero
    i = t
    while i < D:
        s += math.exp(x[base + i] - m)
        i += nt
    s = block_reduce(s, sm, SUM, zero)
    i = t
    if log:
        ls = math.log(s)
        while i < D:
            y[base + i] = (x[base + i] - m) - ls
            i += nt
    else:
        while i < D:
            y[base + i] = math.exp(x[base + i] - m) / s
            i += nt


@signatures(FLOATS, lambda T: void(A(T), A(T), A(T), A(T), A(T), A(T), int64, T, int64))
def layernorm_rows(x, scale, bias, y, mean_out, rstd_out, D, eps, has_bias):  # type: ignore[no-untyped-def]
    """LayerNormalization of row blockIdx.x over its D elements; per-row mean and 1/std to the side."""
    sm = cuda.shared.array(SMEM, x.dtype)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    r = cuda.blockIdx.x
    base = r * D
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    dd = x.dtype.type(D)
    s = zero
    i = t
    while i < D:
        s += x[base + i]
        i += nt
    mean = block_reduce(s, sm, SUM, zero) / dd
    s = zero
    i = t
    while i < D:
        d = x[base + i] - mean
        s += d * d
        i += nt
    var = block_reduce(s, sm, SUM, zero) / dd
    rstd = one / math.sqrt(var + eps)
    i = t
    while i < D:
        v = (x[base + i] - mean) * rstd * scale[i]
        if has_bias:
            v += bias[i]
        y[base + i] = v
        i += nt
    if t == 0:
        mean_out[r] = mean
        rstd_out[r] = rstd


@signatures(REDUCE_KEYS, lambda T: void(A(T), A(T), int64, int64, T, T))
def reduce_rows(x, y, D, op, scale, ident):  # type: ignore[no-untyped-def]
    """y[r] = combine over x[r, :D] (SUM results are multiplied by ``scale``: 1, or 1/D for a mean)."""
    sm = cuda.shared.array(SMEM, x.dtype)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    r = cuda.blockIdx.x
    base = r * D
    acc = ident
    i = t
    while i < D:
        acc = combine(acc, x[base + i], op)
        i += nt
    acc = block_reduce(acc, sm, op, ident)
    if t == 0:
        y[r] = acc * scale if op == SUM else acc


# --- launchers -----------------------------------------------------------------------------------
# Called by the generated CUDA plan: launcher(ctx, slots, *device arrays, **static attributes).

# One block per row: grid.x allows 2**31 - 1 rows, so no launch needs chunking.

def softmax(ctx: Any, slots: tuple, x: Any, *, axis: int, log: int, coerce_2d: int) -> Any:
    """Softmax / LogSoftmax over ``axis`` (opset >= 13: the last axis; < 13: everything from axis on)."""
    r = x.ndim
    a = axis + r if axis < 0 else axis
    if coerce_2d:
        D = math.prod(x.shape[a:])
    else:
        D = x.shape[r - 1] if r else 1
    y = ctx.alloc(slots[0], x.shape, x.dtype)
    if x.size == 0:
        return y
    k = compiled(softmax_rows, x.dtype.name)
    k[x.size // D, row_threads(D), ctx.stream](flat(x), flat(y), D, log)
    return y


def layernorm(ctx: Any, slots: tuple, x: Any, scale: Any, bias: Any, *, axis: int, epsilon: float,
              nout: int) -> Any:
    """LayerNormalization; with nout > 1 also Mean and InvStdDev (shape [..., 1, ...1], x's dtype)."""
    r = x.ndim
    a = axis + r if axis < 0 else axis
    D = math.prod(x.shape[a:])
    N = x.size // D if D else 0
    dt = np.dtype(x.dtype)
    y = ctx.alloc(slots[0], x.shape, dt)
    stat_shape = x.shape[:a] + (1,) * (r - a)
    mean = ctx.alloc(slots[1], stat_shape, dt) if nout > 1 else ctx.scratch("mean", stat_shape, dt)
    rstd = ctx.alloc(slots[2], stat_shape, dt) if nout > 2 else ctx.scratch("rstd", stat_shape, dt)
    if N and D:
        k = compiled(layernorm_rows, dt.name)
        has_bias = 0 if bias is None else 1
        k[N, row_threads(D), ctx.stream](flat(x), flat(scale), flat(bias if has_bias else scale), flat(y),
                                         flat(mean), flat(rstd), D, dt.type(epsilon), has_bias)
    return y if nout == 1 else (y, mean, rstd)[:nout]


def reduce_last(ctx: Any, slots: tuple, x: Any, *, n_axes: int, keepdims: int, op_type: str) -> Any:
    """Reduce the trailing ``n_axes`` axes (the Global pools reduce everything after N, C)."""
    r = x.ndim
    kept = x.shape[: r - n_axes]
    D = math.prod(x.shape[r - n_axes:])
    out_shape = kept + (1,) * n_axes if keepdims else kept
    dt = np.dtype(x.dtype)
    y = ctx.alloc(slots[0], out_shape, dt)
    N = math.prod(kept)
    if N == 0:
        return y
    op = REDUCE_OPS[op_type]
    if op == SUM:
        ident = dt.type(0)
    elif dt.kind == "f":
        ident = dt.type(-np.inf if op == MAX else np.inf)
    else:
        ident = np.iinfo(dt).min if op == MAX else np.iinfo(dt).max
    mean = op_type in ("ReduceMean", "GlobalAveragePool")
    scale = dt.type(1.0 / D) if (mean and D) else dt.type(0 if mean else 1)
    k = compiled(reduce_rows, dt.name)
    k[N, row_threads(D), ctx.stream](flat(x), flat(y), D, op, scale, dt.type(ident))
    return y


KERNELS = (softmax_rows, layernorm_rows, reduce_rows)
