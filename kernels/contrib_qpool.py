"""onnxruntime's quantised-model pooling ops (com.microsoft): QLinearAveragePool and NhwcMaxPool.

QLinearAveragePool dequantises ``(x - x_zero_point) * x_scale`` to float32, averages as AveragePool
does (same attributes; ``channels_last=1`` reads and writes NHWC) and requantises to y's scale and
zero point (kernels/contrib_qlinear.py's ``quant``), on the default-domain pooling kernels
(kernels/pool.py) on an NCHW view. NhwcMaxPool is MaxPool on an int8/uint8 NHWC tensor: 2-D
windows run in place on NHWC (``_nhwc_max2d``: per output pixel the max of its window's pixels,
channels in the vector lanes), other ranks on MaxPool's kernels through an NCHW copy.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import njit

from jitort import memory
from jitort.errors import InvalidArgument
from jitort.ir import Node, TensorType
from jitort.kernels.contrib_infer import infer_as
from jitort.kernels.contrib_qlinear import dequant, quant
from jitort.kernels.pool import AveragePool, MaxPool
from jitort.kernels.pool_geometry import pool_geometry
from jitort.kernels.registry import op

MS = "com.microsoft"
_POOL_ATTRS = ("auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides")


def _to_first(x: np.ndarray) -> np.ndarray:
    """NH...C -> NC H..."""
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def _to_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _infer_pool(op_type: str, last: bool, node: Node, ins: list[TensorType | None]) -> list[TensorType | None]:
    x = ins[0] if ins else None
    if x is None or x.shape is None or len(x.shape) < 3:
        return []
    shape = (x.shape[0], x.shape[-1]) + tuple(x.shape[1:-1]) if last else tuple(x.shape)
    attrs = {k: v for k, v in node.attrs.items() if k in _POOL_ATTRS}
    out = infer_as(op_type, 19, attrs, [TensorType(np.dtype(np.float32), shape)])
    if not out or out[0] is None or out[0].shape is None:
        return []
    s = out[0].shape
    return [TensorType(x.dtype, (s[0],) + tuple(s[2:]) + (s[1],) if last else s)]


def _check_rank(op_type: str, x: np.ndarray) -> None:
    if x.ndim < 3:
        raise InvalidArgument(f"{op_type}: X must have rank >= 3, got shape {list(x.shape)}")


@op("QLinearAveragePool", since=1, domain=MS,
    infer=lambda n, i: _infer_pool("AveragePool", bool(n.attrs.get("channels_last", 0)), n, i))
def QLinearAveragePool(X: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None, y_scale: np.ndarray,
                       y_zero_point: np.ndarray | None = None, *, auto_pad: str = "NOTSET", ceil_mode: int = 0,
                       channels_last: int = 0, count_include_pad: int = 0, kernel_shape: Sequence[int],
                       pads: Sequence[int] | None = None, strides: Sequence[int] | None = None) -> Any:
    name = "QLinearAveragePool"
    _check_rank(name, X)
    x = dequant(X, x_scale, x_zero_point, name)
    if channels_last:
        x = _to_first(x)
    y = AveragePool(x, auto_pad=auto_pad, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                    kernel_shape=kernel_shape, pads=pads, strides=strides)
    if channels_last:
        y = _to_last(y)
    return quant(y, y_scale, y_zero_point, X.dtype, name)


@op("NhwcMaxPool", since=1, domain=MS, infer=lambda n, i: _infer_pool("MaxPool", True, n, i))
def NhwcMaxPool(x: np.ndarray, *, auto_pad: str = "NOTSET", ceil_mode: int = 0,
                dilations: Sequence[int] | None = None, kernel_shape: Sequence[int],
                pads: Sequence[int] | None = None, strides: Sequence[int] | None = None) -> np.ndarray:
    _check_rank("NhwcMaxPool", x)
    if x.dtype not in (np.int8, np.uint8):
        raise InvalidArgument(f"NhwcMaxPool: x must be int8 or uint8, got {x.dtype}")
    if x.ndim == 4 and len(kernel_shape) == 2:
        k = tuple(int(v) for v in kernel_shape)
        st = tuple(int(v) for v in strides) if strides else (1, 1)
        dl = tuple(int(v) for v in dilations) if dilations else (1, 1)
        (oh, ow), begin, _ = pool_geometry("NhwcMaxPool", tuple(x.shape[1:3]), k, st, dl,
                                           tuple(int(v) for v in pads) if pads else (0,) * 4, auto_pad, ceil_mode)
        y = np.empty(memory.check("NhwcMaxPool", (x.shape[0], oh, ow, x.shape[3]), x.dtype), x.dtype)
        if y.size:
            _nhwc_max2d(np.ascontiguousarray(x), y, k[0], k[1], st[0], st[1], dl[0], dl[1], begin[0], begin[1])
        return y
    y = MaxPool(_to_first(x), auto_pad=auto_pad, ceil_mode=ceil_mode, dilations=dilations,
                kernel_shape=kernel_shape, pads=pads, strides=strides)
    return _to_last(y)


@njit(cache=True, nogil=True)
def _nhwc_max2d(x, y, kh, kw, sh, sw, dh, dw, ph, pw):  # type: ignore[no-untyped-def]
    """y [N, OH, OW, C] = the max over each window's pixels inside x [N, H, W, C] (padding never wins)."""
    N, H, W, C = x.shape
    OH, OW = y.shape[1], y.shape[2]
    lowest = x.dtype.type(np.iinfo(x.dtype).min)
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                d = y[n, i, j]
                for c in range(C):
                    d[c] = lowest
                for a in range(kh):
                    h = i * sh - ph + a * dh
                    if h < 0 or h >= H:
                        continue
                    for b in range(kw):
                        w = j * sw - pw + b * dw
                        if w < 0 or w >= W:
                            continue
                        src = x[n, h, w]
                        for c in range(C):
                            d[c] = max(d[c], src[c])
