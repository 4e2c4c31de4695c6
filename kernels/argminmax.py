"""ArgMax and ArgMin (ai.onnx), onnxruntime's semantics: the reduced axis is brought to ``[O, R]``
(one row per output) or ``[O, R, I]`` (vectorised across the ``I`` kept elements) by a free
reshape; float16/bfloat16 compare in float32, bool as uint8.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.reduce import bool_attr
from jitort.kernels.reduce_math import is_half
from jitort.kernels.registry import op

_JIT = dict(cache=True, nogil=True, error_model="numpy")


# onnxruntime's semantics, NaN included: the first element seeds the best value and a later one
# replaces it only if strictly better (>= / <= with select_last_index), so a NaN wins only as the
# first element.

@njit(**_JIT)
def _arg_rows(x, out, largest, last):  # type: ignore[no-untyped-def]
    for o in range(x.shape[0]):
        best = x[o, 0]
        k = 0
        for r in range(1, x.shape[1]):
            v = x[o, r]
            if largest:
                better = v >= best if last else v > best
            else:
                better = v <= best if last else v < best
            if better:
                best = v
                k = r
        out[o] = k


@njit(**_JIT)
def _arg_cols(x, out, largest, last):  # type: ignore[no-untyped-def]
    O, R, I = x.shape
    best = np.empty(I, x.dtype)
    for o in range(O):
        for i in range(I):
            best[i] = x[o, 0, i]
            out[o, i] = 0
        for r in range(1, R):
            for i in range(I):
                v = x[o, r, i]
                if largest:
                    better = v >= best[i] if last else v > best[i]
                else:
                    better = v <= best[i] if last else v < best[i]
                if better:
                    best[i] = v
                    out[o, i] = r


def _arg(op_type: str, x: np.ndarray, axis: int, keepdims: int, select_last_index: int) -> np.ndarray:
    if is_half(x.dtype):
        x = x.astype(np.float32)
    elif x.dtype == np.bool_:
        x = x.view(np.uint8)
    elif x.dtype.kind not in "fiu":
        raise OrtNotImplemented(f"{op_type}: input dtype {x.dtype} is not supported")
    rank = max(x.ndim, 1)
    if not -rank <= axis < rank:
        raise InvalidArgument(f"{op_type}: axis {axis} is out of range for a tensor of rank {x.ndim}")
    shape = x.shape if x.ndim else (1,)
    axis = axis + rank if axis < 0 else axis
    O, R, I = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    out_shape = shape[:axis] + ((1,) if bool_attr(op_type, "keepdims", keepdims) else ()) + shape[axis + 1:]
    out = np.empty(out_shape, np.int64)
    if O * I == 0:
        return out
    if R == 0:
        raise InvalidArgument(f"{op_type}: cannot take the arg-extreme over axis {axis} of size 0")
    largest, last = op_type == "ArgMax", bool(select_last_index)
    if I == 1:
        _arg_rows(x.reshape(O, R), out.reshape(O), largest, last)
    else:
        _arg_cols(x.reshape(O, R, I), out.reshape(O, I), largest, last)
    return out


@op("ArgMax", since=1)
def ArgMax(data: np.ndarray, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> np.ndarray:
    return _arg("ArgMax", data, axis, keepdims, select_last_index)


@op("ArgMin", since=1)
def ArgMin(data: np.ndarray, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0) -> np.ndarray:
    return _arg("ArgMin", data, axis, keepdims, select_last_index)
