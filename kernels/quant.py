"""Quantisation: QuantizeLinear, DequantizeLinear (per-tensor, per-axis, blocked; 8/16/4/2-bit
integers and the float8/float6/float4 formats through ml_dtypes), DynamicQuantizeLinear (the
integer matrix products: kernels/qmatmul.py).

Rounding is round-half-to-even (``np.rint``), as the spec says. The common case, float32 <-> int8 or
uint8 with a per-tensor or per-axis scale (what onnxruntime's quantisers write between the layers
of a QDQ model), runs as one compiled pass (``_q8``, ``_dq8``: one read, one write); the other
cases are numpy's elementwise work, which made five passes with temporaries (1.1 ms for a
QuantizeLinear of 800K floats on the Ice Lake VM). Both compute the same float32 operations in the
same order. Integer matrix products run as float64 BLAS products, exact for 8-bit operands (every
partial sum stays far below 2**53).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.registry import op
from jitort.arrays import contiguous

_INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
               "uint4": (0, 15), "int4": (-8, 7), "uint2": (0, 3), "int2": (-2, 1)}
_FLOAT8 = {"float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"}
_SMALL_FLOATS = {"float4_e2m1fn", "float6_e2m3fn", "float6_e3m2fn"}


def _np(elem: int) -> np.dtype:
    from onnx import helper  # not at the top: onnx imports ml_dtypes (~0.7 s), for models that need it only
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem))


def _broadcastable(v: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int, what: str,
                   op_name: str) -> np.ndarray:
    """Scale / zero point reshaped (or, blocked, repeated) to broadcast against ``shape``."""
    if v.ndim == 0 or v.size == 1 and not block_size:
        return v.reshape(())
    rank = len(shape)
    ax = axis + rank if axis < 0 else axis
    if not 0 <= ax < rank:
        raise InvalidArgument(f"{op_name}: axis {axis} is out of range for rank {rank}")
    if not block_size:
        if v.ndim != 1 or v.shape[0] != shape[ax]:
            raise InvalidArgument(f"{op_name}: per-axis {what} must be 1-D of length {shape[ax]} (axis {axis}), "
                                  f"got shape {list(v.shape)}")
        dims = [1] * rank
        dims[ax] = v.shape[0]
        return v.reshape(dims)
    if block_size < 0:
        raise InvalidArgument(f"{op_name}: block_size must be positive, got {block_size}")
    blocks = -(-shape[ax] // block_size)
    want = tuple(blocks if k == ax else d for k, d in enumerate(shape))
    if v.shape != want:
        raise InvalidArgument(f"{op_name}: blocked {what} must have shape {list(want)} "
                              f"(block_size {block_size} on axis {axis}), got {list(v.shape)}")
    return np.repeat(v, block_size, axis=ax)[tuple(slice(0, d) for d in shape)]


_JIT = dict(cache=True, nogil=True, error_model="numpy")
_F32 = np.dtype(np.float32)
_INT8 = (np.dtype(np.uint8), np.dtype(np.int8))


@njit(**_JIT)
def _q8(x, s, z, y, lo, hi):  # type: ignore[no-untyped-def]
    """y[o, c, i] = clip(rint(x[o, c, i] / s[c]) + z[c], lo, hi): x float32 [O, C, I], s and z float32
    [C], y int8 or uint8 — the numpy path's float32 operations in its order, in one pass."""
    O, C, I = x.shape
    for o in range(O):
        for c in range(C):
            sc, zc = s[c], z[c]
            xr, yr = x[o, c], y[o, c]
            for i in range(I):
                yr[i] = min(max(np.rint(xr[i] / sc) + zc, lo), hi)


@njit(**_JIT)
def _dq8(x, s, z, y):  # type: ignore[no-untyped-def]
    """y[o, c, i] = (float32(x[o, c, i]) - z[c]) * s[c]: x int8 or uint8 [O, C, I], s and z float32 [C]."""
    O, C, I = x.shape
    for o in range(O):
        for c in range(C):
            sc, zc = s[c], z[c]
            xr, yr = x[o, c], y[o, c]
            for i in range(I):
                yr[i] = (np.float32(xr[i]) - zc) * sc


def _axis_view(x: np.ndarray, v: np.ndarray, zp: np.ndarray | None, axis: int, block_size: int
               ) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray] | None:
    """(x as [outer, C, inner], the scale and zero point as float32 [C]) for ``_q8``/``_dq8``: a
    per-tensor (C = 1) or per-axis scale of float32, a zero point of the same layout; None otherwise
    (blocked, or shapes the numpy path reports)."""
    if block_size or v.dtype != _F32 or (zp is not None and zp.shape != v.shape):
        return None
    if v.size == 1 and v.ndim <= 1:
        dims = (1, 1, x.size)
    else:
        rank = x.ndim
        ax = axis + rank if axis < 0 else axis
        if v.ndim != 1 or not 0 <= ax < rank or v.shape[0] != x.shape[ax]:
            return None
        dims = (int(np.prod(x.shape[:ax])), x.shape[ax], int(np.prod(x.shape[ax + 1:])))
    z = np.zeros(dims[1], _F32) if zp is None else zp.reshape(-1).astype(_F32)
    return dims, np.ascontiguousarray(v.reshape(-1)), z


def _quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, saturate: int, block_size: int,
              out: np.dtype, precision: int = 0) -> np.ndarray:
    if x.dtype == _F32 and out in _INT8 and not precision and x.size:
        fast = _axis_view(x, scale, zp, axis, block_size)
        if fast is not None:
            dims, sv, zv = fast
            lo, hi = _INT_RANGES[out.name]
            y = np.empty(x.shape, out)
            _q8(np.ascontiguousarray(x).reshape(dims), sv, zv, y.reshape(dims), np.float32(lo), np.float32(hi))
            return y
    s = _broadcastable(scale, x.shape, axis, block_size, "scale", "QuantizeLinear")
    if precision:
        p = _np(precision)
        y = x.astype(p) / s.astype(p)
    elif x.dtype.kind in "iu":
        y = x.astype(np.float32) / s.astype(np.float32)
    else:
        y = x / s
    name = out.name
    z = None if zp is None else _broadcastable(zp, x.shape, axis, block_size, "zero point", "QuantizeLinear")
    if name in _INT_RANGES:
        lo, hi = _INT_RANGES[name]
        q = np.rint(y)
        if z is not None:
            q = q + z.astype(np.float64 if q.dtype == np.float64 else np.float32)
        return contiguous(np.clip(q, lo, hi).astype(out))
    if name in _FLOAT8:
        if z is not None and np.any(z.astype(np.float32) != 0):
            raise InvalidArgument("QuantizeLinear: a float8 zero point must be zero")
        y = y.astype(np.float32)
        if saturate:
            import ml_dtypes
            fmax = float(ml_dtypes.finfo(out).max)
            y = np.clip(y, -fmax, fmax)
        return contiguous(y.astype(out))
    if name in _SMALL_FLOATS:
        y = y.astype(np.float32)
        if z is not None:
            y = y + z.astype(np.float32)
        return contiguous(y.astype(out))
    raise OrtNotImplemented(f"QuantizeLinear: output type {name} is not supported")


def _out_type(zp: np.ndarray | None, output_dtype: int, dtypes: tuple) -> np.dtype:
    if zp is not None:
        if output_dtype and _np(output_dtype) != zp.dtype:
            raise InvalidArgument(f"QuantizeLinear: output_dtype {_np(output_dtype)} differs from the zero point's "
                                  f"type {zp.dtype}")
        return zp.dtype
    if output_dtype:
        return _np(output_dtype)
    return np.dtype(np.uint8)


def _check_scale(x: np.ndarray, scale: np.ndarray, op_name: str) -> None:
    if scale.ndim > 1:
        raise InvalidArgument(f"{op_name}: the scale must be a scalar or 1-D before opset 21, got shape "
                              f"{list(scale.shape)}")


@op("QuantizeLinear", since=10)
def QuantizeLinear10(x: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray | None = None) -> np.ndarray:
    _check_scale(x, y_scale, "QuantizeLinear")
    if y_scale.size != 1:
        raise InvalidArgument("QuantizeLinear-10: the scale must be a scalar")
    return _quantize(x, y_scale, y_zero_point, 1, 1, 0, _out_type(y_zero_point, 0, ()))


@op("QuantizeLinear", since=13)
def QuantizeLinear13(x: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray | None = None, *,
                     axis: int = 1) -> np.ndarray:
    _check_scale(x, y_scale, "QuantizeLinear")
    return _quantize(x, y_scale, y_zero_point, axis, 1, 0, _out_type(y_zero_point, 0, ()))


@op("QuantizeLinear", since=19)
def QuantizeLinear19(x: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray | None = None, *,
                     axis: int = 1, saturate: int = 1) -> np.ndarray:
    _check_scale(x, y_scale, "QuantizeLinear")
    return _quantize(x, y_scale, y_zero_point, axis, saturate, 0, _out_type(y_zero_point, 0, ()))


@op("QuantizeLinear", since=21)
def QuantizeLinear21(x: np.ndarray, y_scale: np.ndarray, y_zero_point: np.ndarray | None = None, *,
                     axis: int = 1, saturate: int = 1, block_size: int = 0, output_dtype: int = 0,
                     precision: int = 0) -> np.ndarray:
    return _quantize(x, y_scale, y_zero_point, axis, saturate, block_size,
                     _out_type(y_zero_point, output_dtype, ()), precision)


def _dequantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, block_size: int,
                out: np.dtype) -> np.ndarray:
    if x.dtype in _INT8 and out == _F32 and x.size and (zp is None or zp.dtype == x.dtype):
        fast = _axis_view(x, scale, zp, axis, block_size)
        if fast is not None:
            dims, sv, zv = fast
            y = np.empty(x.shape, _F32)
            _dq8(np.ascontiguousarray(x).reshape(dims), sv, zv, y.reshape(dims))
            return y
    name = x.dtype.name
    if name in _FLOAT8 or name in _SMALL_FLOATS or name == "float8_e8m0fnu":
        if zp is not None and name in _FLOAT8 and np.any(zp.astype(np.float32) != 0):
            raise InvalidArgument("DequantizeLinear: a float8 zero point must be zero")
        dx = x.astype(np.float32)
    else:
        if zp is not None and zp.dtype != x.dtype:
            raise InvalidArgument(f"DequantizeLinear: zero point type {zp.dtype} differs from x's {x.dtype}")
        dx = x.astype(np.float32)
        if zp is not None:
            dx = dx - _broadcastable(zp, x.shape, axis, block_size, "zero point", "DequantizeLinear").astype(np.float32)
    s = _broadcastable(scale, x.shape, axis, block_size, "scale", "DequantizeLinear").astype(np.float32)
    return contiguous((dx * s).astype(out))


@op("DequantizeLinear", since=10)
def DequantizeLinear10(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None = None) -> np.ndarray:
    if x_scale.size != 1:
        raise InvalidArgument("DequantizeLinear-10: the scale must be a scalar")
    return _dequantize(x, x_scale, x_zero_point, 1, 0, x_scale.dtype)


@op("DequantizeLinear", since=13)
def DequantizeLinear13(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None = None, *,
                       axis: int = 1) -> np.ndarray:
    _check_scale(x, x_scale, "DequantizeLinear")
    return _dequantize(x, x_scale, x_zero_point, axis, 0, x_scale.dtype)


@op("DequantizeLinear", since=21)
def DequantizeLinear21(x: np.ndarray, x_scale: np.ndarray, x_zero_point: np.ndarray | None = None, *,
                       axis: int = 1, block_size: int = 0, output_dtype: int = 0) -> np.ndarray:
    out = _np(output_dtype) if output_dtype else x_scale.dtype
    if x_scale.dtype.name == "float8_e8m0fnu" and not output_dtype:
        out = np.dtype(np.float32)
    return _dequantize(x, x_scale, x_zero_point, axis, block_size, out)


@op("DynamicQuantizeLinear", since=11)
def DynamicQuantizeLinear(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if x.dtype != np.float32:
        raise InvalidArgument(f"DynamicQuantizeLinear: x must be float32, got {x.dtype}")
    qmin, qmax = np.float32(0), np.float32(255)
    hi = np.float32(max(np.float32(0), x.max())) if x.size else np.float32(0)
    lo = np.float32(min(np.float32(0), x.min())) if x.size else np.float32(0)
    scale = np.float32(1.0 if hi == lo else (hi - lo)) / np.float32(qmax - qmin)
    zp = np.rint(np.float32(max(qmin, min(qmax, np.float32(qmin - lo / scale)))))
    y = np.empty(x.shape, np.uint8)
    if y.size:  # clip(rint(x / scale) + zp, 0, 255) in one compiled pass (numpy's five took 1.4 ms for 393K floats)
        _q8(np.ascontiguousarray(x).reshape(1, 1, -1), np.full(1, scale, np.float32), np.full(1, zp, np.float32),
            y.reshape(1, 1, -1), qmin, qmax)
    return y, np.array(scale, np.float32), np.array(zp.astype(np.uint8))


def centered(v: np.ndarray, zp: np.ndarray | None, per_row: bool, op_name: str, what: str) -> np.ndarray:
    """``v - zp`` as float64; a 1-D zero point is per row of A (axis -2) or per column of B (axis -1)."""
    f = v.astype(np.float64)
    if zp is None:
        return f
    z = zp.astype(np.float64)
    if z.ndim == 1 and z.size > 1 and per_row:
        if v.ndim < 2 or z.shape[0] != v.shape[-2]:
            raise InvalidArgument(f"{op_name}: {what} has {z.shape[0]} elements for {v.shape[-2] if v.ndim > 1 else 1} rows")
        z = z.reshape(-1, 1)
    return f - z
