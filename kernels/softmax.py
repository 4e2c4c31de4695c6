"""Softmax, LogSoftmax, Hardmax and LayerNormalization: normalisations along rows.

Opset 1/11 Softmax-family ops flatten the input to 2-D at ``axis`` (``[prod(shape[:axis]),
prod(shape[axis:])]``); opset 13 normalises along the single ``axis``: ``[O, R, I]`` with the
kernel vectorised across ``I`` when the axis is not the last one.

Speed: rows are processed in L1-resident blocks of a few simple vectorisable passes: max
(``llvm.maximum``), shift, ``exp_f32`` (one flat loop per block, in its own function: inlined into a
loop nest, LLVM rematerialises the exp's ~15 constants on every iteration, ~40 % slower), a
reassociable sum, and a scale. float32 stays float32 throughout; ``contract`` lets LLVM fuse
multiply-adds (results differ from unfused code in the last bit only). float16 computes in
float32.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.reduce_math import fexp, fmaximum, is_half, radd
from jitort.kernels.registry import op

_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


# --- row helpers (1-D, contiguous) -------------------------------------------------------------------

@njit(**_JIT)
def row_max(x):  # type: ignore[no-untyped-def]
    m = x[0]
    for i in range(1, x.shape[0]):
        m = fmaximum(m, x[i])
    return m


@njit(**_JIT)
def row_sum(x):  # type: ignore[no-untyped-def]
    s = x.dtype.type(0)
    for i in range(x.shape[0]):
        s = radd(s, x[i])
    return s


@njit(**_JIT)
def row_sqdev(x, mean):  # type: ignore[no-untyped-def]
    s = x.dtype.type(0)
    for i in range(x.shape[0]):
        d = x[i] - mean
        s = radd(s, d * d)
    return s


_EXP_NORMAL = -87.3  # exp(x) >= float32's smallest normal (2**-126 = e**-87.34) from here up
_EXP_NORMAL_F64 = -708.3  # float64's (2**-1022 = e**-708.40)


@njit(**_JIT)
def exp_block(x, y):  # type: ignore[no-untyped-def]
    """y = exp(x) for x <= 0 (a softmax's shifted scores), results below float32's smallest normal
    flushed to 0: computing a subnormal (or an underflow to 0) takes a microcode assist per vector
    on Intel cores. Masked scores are -inf, and a causal attention block is half masked: on the
    Ice Lake VM a causal [2, 4, 128, 64] attention took 1.69 ms with the assists, 0.50 without;
    the flushed values (< 1.2e-38 before normalisation) change no result beyond that size."""
    lo = x.dtype.type(_EXP_NORMAL if x.itemsize == 4 else _EXP_NORMAL_F64)
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        v = x[i]
        e = fexp(max(v, lo))
        y[i] = zero if v < lo else e


# --- Softmax / LogSoftmax --------------------------------------------------------------------------

_BLOCK = 2048  # elements per block of rows: the block's scratch and output stay in L1


@njit(**_JIT)
def _softmax_rows(x, y, log):  # type: ignore[no-untyped-def]
    # Per block of rows: t = x - rowmax; one flat exp call over the whole block (a per-row call
    # costs ~25 ns of constant set-up and reduction epilogue: 20 % at D=128); per-row sum and scale.
    O, D = x.shape
    B = max(1, _BLOCK // D)
    one = x.dtype.type(1)
    t = np.empty(B * D, x.dtype)
    yf = y.reshape(O * D)
    for o0 in range(0, O, B):
        nb = min(B, O - o0)
        for b in range(nb):
            xr = x[o0 + b]
            tr = t[b * D:(b + 1) * D]
            m = row_max(xr)
            for i in range(D):
                tr[i] = xr[i] - m
        exp_block(t[:nb * D], yf[o0 * D:(o0 + nb) * D])
        for b in range(nb):
            yr = y[o0 + b]
            s = row_sum(yr)
            if log:
                tr = t[b * D:(b + 1) * D]
                c = math.log(s)
                for i in range(D):
                    yr[i] = tr[i] - c
            else:
                inv = one / s
                for i in range(D):
                    yr[i] *= inv


@njit(**_JIT)
def _softmax_cols(x, y, log):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    one = x.dtype.type(1)
    m = np.empty(I, x.dtype)
    s = np.empty(I, x.dtype)
    for o in range(O):
        for i in range(I):
            m[i] = x[o, 0, i]
            s[i] = 0
        for r in range(1, R):
            for i in range(I):
                m[i] = fmaximum(m[i], x[o, r, i])
        for r in range(R):
            for i in range(I):
                e = fexp(x[o, r, i] - m[i])
                y[o, r, i] = e
                s[i] += e  # elementwise across i: vectorises without reordering
        if log:
            for i in range(I):
                m[i] += math.log(s[i])
            for r in range(R):
                for i in range(I):
                    y[o, r, i] = x[o, r, i] - m[i]
        else:
            for i in range(I):
                s[i] = one / s[i]
            for r in range(R):
                for i in range(I):
                    y[o, r, i] *= s[i]


def float_compute(op_type: str, x: np.ndarray) -> np.ndarray:
    """The array to compute on: float32/float64 as is, float16/bfloat16 widened to float32."""
    if x.dtype in (np.float32, np.float64):
        return x
    if is_half(x.dtype):
        return x.astype(np.float32)
    raise OrtNotImplemented(f"{op_type}: input dtype {x.dtype} is not supported (float types only)")


def axis_split(op_type: str, shape: tuple[int, ...], axis: int, coerce_2d: bool) -> tuple[int, int, int]:
    """``(O, R, I)``: the sizes before, at and after ``axis`` (``coerce_2d``: everything from ``axis`` on is R)."""
    rank = len(shape)
    if rank == 0:
        raise InvalidArgument(f"{op_type}: the input must have rank >= 1, got a scalar")
    if not -rank <= axis < rank:
        raise InvalidArgument(f"{op_type}: axis {axis} is out of range for a tensor of rank {rank} "
                              f"(expected [-{rank}, {rank - 1}])")
    axis = axis + rank if axis < 0 else axis
    if coerce_2d:
        return math.prod(shape[:axis]), math.prod(shape[axis:]), 1
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def softmax(op_type: str, x: np.ndarray, axis: int, coerce_2d: bool) -> np.ndarray:
    O, R, I = axis_split(op_type, x.shape, axis, coerce_2d)
    xc = float_compute(op_type, x)
    y = np.empty(x.shape, xc.dtype)
    if y.size:
        log = op_type == "LogSoftmax"
        if I == 1:
            _softmax_rows(xc.reshape(O, R), y.reshape(O, R), log)
        else:
            _softmax_cols(xc.reshape(O, R, I), y.reshape(O, R, I), log)
    return y if xc is x else y.astype(x.dtype)


def _compile_parts(input: np.ndarray, *, axis: int = -1) -> dict[str, float]:
    """For ``jitort.compile_pool``: rows or columns kernel, ~2 s cold (measured on Zen 3)."""
    return {f"softmax[{input.dtype}][{input.ndim > 1 and axis not in (-1, input.ndim - 1)}]": 2.0}


@op("Softmax", since=1)
def Softmax_1(input: np.ndarray, *, axis: int = 1) -> np.ndarray:
    return softmax("Softmax", input, axis, True)


@op("Softmax", since=13)
def Softmax(input: np.ndarray, *, axis: int = -1) -> np.ndarray:
    return softmax("Softmax", input, axis, False)


@op("LogSoftmax", since=1)
def LogSoftmax_1(input: np.ndarray, *, axis: int = 1) -> np.ndarray:
    return softmax("LogSoftmax", input, axis, True)


@op("LogSoftmax", since=13)
def LogSoftmax(input: np.ndarray, *, axis: int = -1) -> np.ndarray:
    return softmax("LogSoftmax", input, axis, False)


# --- Hardmax ---------------------------------------------------------------------------------------
# onnxruntime's algorithm: the row max seeded by the first element (a later element replaces it only
# if strictly greater, so NaN counts only as the first element), then a one at the first element
# equal to it; a row whose max is NaN stays all zeros.

@njit(**_JIT)
def _hardmax_cols(x, y):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    m = np.empty(I, x.dtype)
    for o in range(O):
        for i in range(I):
            m[i] = x[o, 0, i]
        for r in range(1, R):
            for i in range(I):
                if x[o, r, i] > m[i]:
                    m[i] = x[o, r, i]
        for i in range(I):
            for r in range(R):
                if x[o, r, i] == m[i]:
                    y[o, r, i] = 1
                    break


def _hardmax(x: np.ndarray, axis: int, coerce_2d: bool) -> np.ndarray:
    O, R, I = axis_split("Hardmax", x.shape, axis, coerce_2d)
    xc = float_compute("Hardmax", x)
    y = np.zeros(x.shape, xc.dtype)
    if y.size:
        _hardmax_cols(xc.reshape(O, R, I), y.reshape(O, R, I))
    return y if xc is x else y.astype(x.dtype)


@op("Hardmax", since=1)
def Hardmax_1(input: np.ndarray, *, axis: int = 1) -> np.ndarray:
    return _hardmax(input, axis, True)


@op("Hardmax", since=13)
def Hardmax(input: np.ndarray, *, axis: int = -1) -> np.ndarray:
    return _hardmax(input, axis, False)


# --- LayerNormalization ----------------------------------------------------------------------------
# Two passes for the statistics (mean, then the sum of squared deviations: no cancellation, unlike
# E[x^2] - E[x]^2), then one fused normalise-scale-shift pass; all on an L1-resident row.
# onnxruntime computes in the input's precision (float32 for float16) whatever stash_type says; so
# does this.

@njit(**_JIT)
def _layernorm(x, scale, bias, has_bias, eps, y, mean_out, inv_out):  # type: ignore[no-untyped-def]
    N, D = x.shape
    one = x.dtype.type(1)
    inv_d = one / x.dtype.type(D)
    for o in range(N):
        xr = x[o]
        yr = y[o]
        mean = row_sum(xr) * inv_d
        var = row_sqdev(xr, mean) * inv_d
        inv = one / math.sqrt(var + eps)
        if has_bias:
            for i in range(D):
                yr[i] = (xr[i] - mean) * inv * scale[i] + bias[i]
        else:
            for i in range(D):
                yr[i] = (xr[i] - mean) * inv * scale[i]
        mean_out[o] = mean
        inv_out[o] = inv


def _param(name: str, p: np.ndarray, norm_shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
    D = math.prod(norm_shape)
    if p.size != D:
        try:
            p = np.broadcast_to(p, norm_shape)
        except ValueError:
            raise InvalidArgument(f"LayerNormalization: {name} of shape {list(p.shape)} does not broadcast to "
                                  f"the normalized shape {list(norm_shape)}") from None
    return np.ascontiguousarray(p.reshape(D), dtype=dt)


@op("LayerNormalization", since=17)
def LayerNormalization(X: np.ndarray, Scale: np.ndarray, B: np.ndarray | None = None, *, axis: int = -1,
                       epsilon: float = 1e-5, stash_type: int = 1, _nout: int = 1,
                       _dtypes: tuple = ()) -> Any:
    N, D, _ = axis_split("LayerNormalization", X.shape, axis, True)
    a = axis + X.ndim if axis < 0 else axis
    xc = float_compute("LayerNormalization", X)
    dt = xc.dtype
    scale = _param("Scale", Scale, X.shape[a:], dt)
    bias = _param("B", B, X.shape[a:], dt) if B is not None else scale
    y = np.empty(X.shape, dt)
    mean, inv = np.empty(N, dt), np.empty(N, dt)
    if y.size:
        _layernorm(xc.reshape(N, D), scale, bias, B is not None, dt.type(epsilon), y.reshape(N, D), mean, inv)
    else:
        mean.fill(np.nan)  # statistics of nothing
        inv.fill(np.nan)
    if xc is not X:
        y = y.astype(X.dtype)
    if _nout == 1:
        return y
    stat_shape = X.shape[:a] + (1,) * (X.ndim - a)
    outs = [y]
    for k, s in ((1, mean), (2, inv)):
        if k < _nout:
            sdt = _dtypes[k] if k < len(_dtypes) and _dtypes[k] is not None else np.dtype(np.float32)
            outs.append(s.reshape(stat_shape).astype(sdt, copy=False))
    return tuple(outs)


for _f in (Softmax_1, Softmax, LogSoftmax_1, LogSoftmax):
    _f.compile_parts = _compile_parts  # type: ignore[attr-defined]
