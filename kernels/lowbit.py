"""Element types Numba cannot type: float8 (e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0), float6, float4,
int4/uint4, int2/uint2 (ml_dtypes) and strings.

The elementwise emitters cover the Numba types plus float16/bfloat16; a Cast (or Equal) touching
any other type is routed at import (``jitort.frontend.rewrites``) to these ``jitort``-domain library ops,
which convert with ml_dtypes' numpy casts (round to nearest even) plus ONNX's saturation rules.
"""
from __future__ import annotations

import numpy as np

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.kernels.registry import compute_dtype, op
from jitort.arrays import contiguous

_FLOAT8 = {"float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"}


def numba_typed(dt: np.dtype | None) -> bool:
    """Can jitort's elementwise kernels compute with ``dt`` (float16/bfloat16 included)?"""
    if dt is None:
        return True
    try:
        compute_dtype(np.dtype(dt))
        return True
    except Exception:
        return False


def _to_e8m0(x: np.ndarray, saturate: int, round_mode: str) -> np.ndarray:
    """float -> float8_e8m0fnu (a power of two): the float32 exponent, rounded as ``round_mode`` says."""
    import ml_dtypes
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.uint16)
    special = exp == 0xFF
    normal = ~special
    if round_mode == "nearest":
        g = (bits & 0x400000) > 0
        r = (bits & 0x200000) > 0
        s = (bits & 0x1FFFFF) > 0
        up = g & (r | s | (exp > 0)) & normal
    elif round_mode == "up":
        up = ((bits & 0x7FFFFF) > 0) & normal
    elif round_mode == "down":
        up = np.zeros(exp.shape, bool)
    else:
        raise InvalidArgument(f"Cast: round_mode must be 'up', 'down' or 'nearest', got {round_mode!r}")
    if saturate:
        up &= ~(exp == 0xFE)
    exp = exp + up.astype(np.uint16)
    out = np.where(special, np.uint8(0xFF), exp.astype(np.uint8)).astype(np.uint8)
    return out.view(ml_dtypes.float8_e8m0fnu)


@op("Cast", since=1, domain="jitort")
def Cast(x: np.ndarray, *, to: int, saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    """ONNX Cast where the source or target type is one Numba cannot type."""
    from onnx import helper  # not at the top: onnx imports ml_dtypes (~0.7 s), for models that need it only
    out = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    src = x.dtype
    if out == src:
        return contiguous(x.copy())
    if out.name == "float8_e8m0fnu":
        return contiguous(_to_e8m0(x.astype(np.float32), saturate, round_mode))
    if out.name in _FLOAT8 and saturate:
        import ml_dtypes
        fmax = float(ml_dtypes.finfo(out).max)
        y = x if src in (np.float16, np.float32, np.float64) else x.astype(np.float32)
        return contiguous(np.clip(y, -fmax, fmax).astype(out))
    if src == object or out == object:
        if out == object:
            raise OrtNotImplemented("Cast to string is not implemented in jitort")
        try:
            return contiguous(x.astype(np.float64).astype(out) if out.kind == "f" else x.astype(out))
        except (ValueError, TypeError) as e:
            raise InvalidArgument(f"Cast: cannot parse a string as {out}: {e}") from None
    return contiguous(x.astype(out))


@op("Equal", since=1, domain="jitort")
def Equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Equal on strings (object arrays): element-wise string equality, broadcast."""
    return contiguous(np.asarray(np.equal(a, b), dtype=np.bool_))
