"""float16 / bfloat16 storage with float32 compute, for generated ``@njit`` loops.

Numba's CPU target has no float16 type, so jitort passes float16 tensors to kernels as ``arr.view(np.uint16)`` and
bfloat16 tensors (``ml_dtypes.bfloat16``) the same way.  A kernel converts each element on load and store:
``out[i] = f32_to_f16(exp_f32(f16_to_f32(a[i])))``.  The conversions are branch-free integer code (selects), so such
loops still vectorise.

Exactness (tested exhaustively / on every boundary, tests/test_fastmath.py):

* ``f16_to_f32``: bit-identical to ``numpy .astype(np.float32)`` for all 65536 inputs (subnormals, +-inf, NaN payloads).
* ``f32_to_f16``: bit-identical to numpy's ``astype(np.float16)``: round to nearest even, overflow (>= 65520) to inf,
  f16 subnormals, and NaN payloads kept like numpy's (top 10 mantissa bits, forced non-zero: a quiet NaN stays quiet).
* ``bf16_to_f32``: exact.  ``f32_to_bf16``: bit-identical to ``ml_dtypes.bfloat16``: round to nearest even, overflow to
  inf, f32 subnormals kept, NaN -> the canonical quiet NaN 0x7FC0 with the input's sign.

Numba widens int32 arithmetic to int64; each step is narrowed back with ``np.int32(...)`` so LLVM keeps 32-bit lanes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .fastmath import INLINE, bitcast_f32_to_i32, bitcast_i32_to_f32

__all__ = ["f16_to_f32", "f32_to_f16", "bf16_to_f32", "f32_to_bf16"]

_I = np.int32

# 2^-14 (the smallest normal float16) as a float32, used to normalise float16 subnormals with one exact subtraction.
_F16_MIN_NORMAL = np.float32(6.103515625e-05)
# 0.5 as a float32: adding it to a value < 2^-14 aligns the float16 subnormal grid (2^-24) with float32's last
# mantissa bit (0.5 * 2^-23), so the hardware's round-to-nearest-even does the rounding.
_DENORM_MAGIC = np.float32(0.5)
_DENORM_MAGIC_BITS = _I(0x3F000000)


@njit(**INLINE)
def f16_to_f32(h):  # type: ignore[no-untyped-def]
    """float16 bits (uint16) -> float32, exact."""
    hi = _I(h)
    em = _I(hi & _I(0x7FFF))
    exp = _I(em & _I(0x7C00))
    o = _I((em << _I(13)) + _I(112 << 23))  # rebias the exponent 15 -> 127
    if exp == _I(0x7C00):  # inf / NaN: exponent all ones, payload kept
        o = _I(o + _I(112 << 23))
    if exp == _I(0):  # zero / subnormal: build 2^-14 * (1 + m/1024), subtract 2^-14
        o = bitcast_f32_to_i32(bitcast_i32_to_f32(_I(o + _I(1 << 23))) - _F16_MIN_NORMAL)
    return bitcast_i32_to_f32(_I(o | _I((hi & _I(0x8000)) << _I(16))))


@njit(**INLINE)
def f32_to_f16(x):  # type: ignore[no-untyped-def]
    """float32 -> float16 bits (uint16), round to nearest even, exactly as numpy's ``astype(np.float16)``."""
    f = bitcast_f32_to_i32(x)
    sign = _I((f >> _I(16)) & _I(0x8000))
    a = _I(f & _I(0x7FFFFFFF))
    # normal float16 range: drop 13 mantissa bits with round-to-nearest-even (0xFFF + the lowest kept bit); a carry
    # out of the mantissa increments the exponent, up to 0x7C00 (inf) for values >= 65520
    lsb = _I(_I(a >> _I(13)) & _I(1))
    o = _I(_I(_I(a + _I(((15 - 127) << 23) + 0xFFF)) + lsb) >> _I(13))
    if a < _I(0x38800000):  # below 2^-14: float16 subnormal or zero, rounded by a float add
        o = _I(bitcast_f32_to_i32(bitcast_i32_to_f32(a) + _DENORM_MAGIC) - _DENORM_MAGIC_BITS)
    if a >= _I(0x47800000):  # >= 65536, inf
        o = _I(0x7C00)
    if a > _I(0x7F800000):  # NaN: keep the top payload bits, never let them become zero (that would be inf)
        o = _I(_I(0x7C00) | _I(_I(a & _I(0x007FFFFF)) >> _I(13)))
        if o == _I(0x7C00):
            o = _I(0x7C01)
    return np.uint16(o | sign)


@njit(**INLINE)
def bf16_to_f32(h):  # type: ignore[no-untyped-def]
    """bfloat16 bits (uint16) -> float32, exact: bfloat16 is the upper half of a float32."""
    return bitcast_i32_to_f32(_I(_I(h) << _I(16)))


@njit(**INLINE)
def f32_to_bf16(x):  # type: ignore[no-untyped-def]
    """float32 -> bfloat16 bits (uint16), round to nearest even, as ``ml_dtypes.bfloat16``."""
    f = bitcast_f32_to_i32(x)
    hi = _I(f >> _I(16))
    o = _I(_I(_I(f + _I(0x7FFF)) + _I(hi & _I(1))) >> _I(16))
    if x != x:
        o = _I(_I(hi & _I(0x8000)) | _I(0x7FC0))
    return np.uint16(o & _I(0xFFFF))
