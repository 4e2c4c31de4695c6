"""Cumulative ops along one axis, inclusive or exclusive, forward or reversed: CumSum (an ``[O, R, I]``
scan kernel; float16/bfloat16 summed in float32 and rounded once, as onnxruntime does) and CumProd
(in the input's own type, as the spec's accumulation is)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.reduce_math import is_half
from jitort.kernels.registry import op
from jitort.arrays import contiguous

_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def _cumsum(x, out, exclusive, reverse):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    zero = x.dtype.type(0)
    for o in range(O):
        for step in range(R):
            r = R - 1 - step if reverse else step
            p = r + 1 if reverse else r - 1  # the previous position along the scan
            if step == 0:
                for i in range(I):
                    out[o, r, i] = zero if exclusive else x[o, r, i]
            elif exclusive:
                for i in range(I):
                    out[o, r, i] = out[o, p, i] + x[o, p, i]
            else:
                for i in range(I):
                    out[o, r, i] = out[o, p, i] + x[o, r, i]


@op("CumSum", since=11)
def CumSum(x: np.ndarray, axis: np.ndarray, *, exclusive: int = 0, reverse: int = 0) -> np.ndarray:
    if x.ndim == 0:
        raise InvalidArgument("CumSum: the input must have rank >= 1, got a scalar")
    if axis is None or axis.ndim > 1 or axis.size != 1 or axis.dtype not in (np.int32, np.int64):
        raise InvalidArgument("CumSum: 'axis' must be a 0-D or 1-element int32/int64 tensor, got "
                              f"{None if axis is None else (axis.dtype, list(axis.shape))}")
    a = int(axis.reshape(-1)[0])
    if not -x.ndim <= a < x.ndim:
        raise InvalidArgument(f"CumSum: axis {a} is out of range for a tensor of rank {x.ndim}")
    a = a + x.ndim if a < 0 else a
    O, R, I = math.prod(x.shape[:a]), x.shape[a], math.prod(x.shape[a + 1:])
    out = np.empty(x.shape, x.dtype)
    if x.size == 0:
        return out
    dt = x.dtype
    if is_half(dt):  # onnxruntime sums float16 in float32 and rounds once
        return CumSum(x.astype(np.float32), axis, exclusive=exclusive, reverse=reverse).astype(dt)
    if dt.kind not in "fiu":
        raise OrtNotImplemented(f"CumSum: input dtype {dt} is not supported")
    _cumsum(x.reshape(O, R, I), out.reshape(O, R, I), bool(exclusive), bool(reverse))
    return out


@op("CumProd", since=26)
def CumProd(x: np.ndarray, axis: np.ndarray, *, exclusive: int = 0, reverse: int = 0) -> np.ndarray:
    a = np.asarray(axis)
    if a.size != 1:
        raise InvalidArgument(f"CumProd: axis must hold one element, got shape {list(a.shape)}")
    ax = int(a.reshape(-1)[0])
    if not -x.ndim <= ax < max(x.ndim, 1):
        raise InvalidArgument(f"CumProd: axis {ax} is out of range for rank {x.ndim}")
    ax %= max(x.ndim, 1)
    work = x.astype(np.float32) if x.dtype in (np.float16,) or x.dtype.name == "bfloat16" else x
    if reverse:
        work = np.flip(work, ax)
    y = np.cumprod(work, axis=ax, dtype=work.dtype)
    if exclusive:
        y = np.roll(y, 1, axis=ax)
        idx = [slice(None)] * x.ndim
        idx[ax] = 0
        y[tuple(idx)] = 1
    if reverse:
        y = np.flip(y, ax)
    return contiguous(y.astype(x.dtype))
