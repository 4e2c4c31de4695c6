"""Vectorisable float32 math for generated ``@njit`` loops.

Numba lowers ``math.exp/log/tanh/erf`` on float32 to scalar libm calls, which stop LLVM from vectorising the
enclosing loop (4M float32: exp 15.7 ms vs numpy 4.1 ms, tanh 87 ms vs 3.3 ms).  The functions here are straight-line
float32 arithmetic plus integer bit manipulation, so a loop ``out[i] = exp_f32(a[i])`` becomes SIMD code.

Rules every function here follows (and the reasons):

* float32 in, float32 out, every constant a ``np.float32`` — a Python float literal would promote the expression to
  float64 (slower, and the result would differ from the tested one).  A float64 argument is a typing error.
* ``fastmath=False``: the special-value handling (``x != x`` for NaN, ``x == inf``, clamps that let NaN through)
  is only correct under IEEE semantics; ``nnan``/``ninf`` would delete it, and ``reassoc`` undoes the Cody-Waite
  reduction and the round-to-integer trick.  No flag is needed to vectorise: there are no reductions.
* ``error_model='numpy'``: the Python error model wraps every division in a zero check that blocks vectorisation.
* ``inline='always'``: the body is inlined as Numba IR, so vectorisation never depends on LLVM's inlining heuristics.
  The price: Numba types and lowers the body inside the caller, **with the caller's flags**.  So a kernel calling
  these functions must use ``error_model='numpy'`` (else: scalar divisions) and ``fastmath=False`` or
  ``fastmath={"contract"}`` (both tested; any other flag breaks them — measured with ``fastmath=True``:
  exp_f32(1.0) == 2.0).  ``KERNEL_FLAGS`` is the tested set.  tanh/erf saturate to exactly +-1 by a select, not by
  relying on the rational reaching 1, so FMA contraction cannot leave gelu(-large) != 0.
* Polynomial (Horner) steps are ``_fmuladd``: one fused multiply-add where the target has FMA (every x86-64-v3 host:
  half the instructions and latency of a multiply and an add), a multiply and an add elsewhere.  The accuracy bounds
  below hold either way (tests/test_fastmath.py checks them on the host's choice, and without FMA in a subprocess).
* A changed function here does not invalidate the on-disk cache of a kernel that inlined it: a cache key for generated
  kernels must hash this file (and fp16.py).

Accuracy, exhaustive over all 2^32 float32 inputs against float64 libm, measured with separate multiplies and adds
(tests/test_fastmath.py asserts these on grids, with and without FMA):
exp_f32 0.99 ulp (subnormal results included), log_f32 0.83 ulp, sigmoid_f32 2.4 ulp, tanh_f32 4.1e-7 relative
(6.9 ulp just below 1), erf_f32 4.8e-7 absolute (4.0 ulp for |x| < 0.5), gelu_erf_f32 1.4e-6 * max(1, |x|) absolute,
gelu_tanh_f32 1.1e-6 * max(1, |x|) absolute (both relative only for x > 0: 1 + erf cancels in the negative tail, as in
onnxruntime).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "FLOAT32_FUNCS", "FLOAT64_FUNCS", "KERNEL_FLAGS",
    "exp_f32", "log_f32", "tanh_f32", "sigmoid_f32", "erf_f32", "gelu_erf_f32", "gelu_tanh_f32",
    "exp_f64", "log_f64", "tanh_f64", "sigmoid_f64", "erf_f64", "gelu_erf_f64", "gelu_tanh_f64",
]

# Flags for kernels that call these functions (see the module docstring: with inline='always' they reach the body).
KERNEL_FLAGS: dict[str, object] = {"error_model": "numpy", "fastmath": False, "nogil": True}

INLINE = {"inline": "always", "error_model": "numpy", "fastmath": False, "nogil": True}


# ---------------------------------------------------------------------------------------------------------------------
# Bit casts.  ``np.int32(i).view(np.float32)`` also works in Numba (it routes through an overload to the same
# bitcast); a 3-line intrinsic makes the contract explicit: exactly 32-bit in, a single ``bitcast`` instruction out,
# and a typing error (rather than silent float64 math) if a caller passes the wrong type.

@intrinsic
def bitcast_i32_to_f32(typingctx, x):  # type: ignore[no-untyped-def]
    if not (isinstance(x, types.Integer) and x.bitwidth == 32):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(x), codegen


@intrinsic
def bitcast_f32_to_i32(typingctx, x):  # type: ignore[no-untyped-def]
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(x), codegen


@intrinsic
def _fmuladd(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """a * b + c as ``llvm.fmuladd``: one fused multiply-add (a single rounding) where the target has FMA, a multiply
    and an add elsewhere; the same choice in the vector loop and its scalar remainder, so a result does not depend on
    an element's position.  Halves the instruction count (and latency) of the polynomials below."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        fty = args[0].type
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fty, [fty, fty, fty]),
                                            f"llvm.fmuladd.f{a.bitwidth}")
        return builder.call(fn, args)

    return a(a, b, c), codegen


# ---------------------------------------------------------------------------------------------------------------------
# Constants.  Module globals are frozen into the compiled code as float32 constants.

_F = np.float32
_NAN = _F(np.nan)
_INF = _F(np.inf)
_ONE = _F(1.0)
_HALF = _F(0.5)

_LOG2E = _F(1.44269504088896341)
# ln2 split for Cody-Waite: _LN2_HI has 9 significant bits, so n * _LN2_HI is exact for |n| < 2^15.
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
# 1.5 * 2^23: adding and subtracting it rounds a float32 of magnitude < 2^22 to the nearest integer.
_ROUND_MAGIC = _F(12582912.0)
# exp overflows to inf above 88.7228 and underflows to 0 below -103.97; clamping to a slightly wider range keeps
# the exponent arithmetic in range and lets the final scaling produce inf / subnormals / 0 naturally.
_EXP_HI = _F(89.0)
_EXP_LO = _F(-104.0)

_SQRT2 = _F(1.41421356237309505)
_FLT_MIN = _F(1.17549435e-38)
_TWO_23 = _F(8388608.0)

_TANH_CLAMP = _F(7.90531110763549805)  # without FMA, the smallest input at which the rational below gives exactly 1
_TANH_TINY = _F(0.0004)  # below this tanh(x) == x in float32 (x^3/3 < half an ulp)

_ERF_CLAMP = _F(4.0)  # erf(4) = 1 - 1.5e-8 rounds to 1 in float32
_FRAC_1_SQRT2 = _F(0.707106781186547524)
_SQRT_2_OVER_PI = _F(0.797884560802865356)
_GELU_TANH_C = _F(0.044715)


@njit(**INLINE)
def _ldexp_f32(y, n):  # type: ignore[no-untyped-def]
    """y * 2^n for n in [-150, 128]: two normal powers of two, so results may be subnormal or overflow to inf with a
    single rounding (the first product is exact)."""
    n1 = np.int32(n >> np.int32(1))
    n2 = np.int32(n - n1)
    s1 = bitcast_i32_to_f32(np.int32((n1 + np.int32(127)) << np.int32(23)))
    s2 = bitcast_i32_to_f32(np.int32((n2 + np.int32(127)) << np.int32(23)))
    return (y * s1) * s2


# ---------------------------------------------------------------------------------------------------------------------
# float32 functions

@njit(**INLINE)
def exp_f32(x):  # type: ignore[no-untyped-def]
    """e^x.  Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2; degree-5 minimax (Cephes) for (e^r - 1 - r)/r^2."""
    xc = x
    if xc > _EXP_HI:
        xc = _EXP_HI
    if xc < _EXP_LO:
        xc = _EXP_LO
    t = xc * _LOG2E + _ROUND_MAGIC
    nf = t - _ROUND_MAGIC
    r = xc - nf * _LN2_HI
    r = r - nf * _LN2_LO
    p = _F(1.9875691500e-4)
    p = _fmuladd(p, r, _F(1.3981999507e-3))
    p = _fmuladd(p, r, _F(8.3334519073e-3))
    p = _fmuladd(p, r, _F(4.1665795894e-2))
    p = _fmuladd(p, r, _F(1.6666665459e-1))
    p = _fmuladd(p, r, _F(5.0000001201e-1))
    y = p * (r * r) + r + _ONE
    # n from t's bits (t = 1.5*2^23 + n exactly), not fptosi: fptosi of NaN would be poison.
    n = np.int32(bitcast_f32_to_i32(t) - np.int32(0x4B400000))
    res = _ldexp_f32(y, n)
    if x != x:
        res = x
    return res


@njit(**INLINE)
def log_f32(x):  # type: ignore[no-untyped-def]
    """Natural log.  x = 2^e m, m in [sqrt(2)/2, sqrt(2)); log(1+f) = f - f^2/2 + f^3 P(f), P degree 8 (Cephes)."""
    # subnormals: scale into the normal range first.  Both as selects of constants (one branch on ``sub`` that
    # assigned two values kept the loop scalar when log followed other functions in a kernel).
    sub = x < _FLT_MIN
    xs = x * (_TWO_23 if sub else _ONE)
    bits = bitcast_f32_to_i32(xs)
    e = np.int32((bits >> np.int32(23)) - (np.int32(150) if sub else np.int32(127)))
    m = bitcast_i32_to_f32(np.int32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F800000)))  # [1, 2)
    if m > _SQRT2:
        m = m * _HALF
        e = np.int32(e + np.int32(1))
    f = m - _ONE  # exact (Sterbenz)
    ef = _F(e)
    z = f * f
    p = _F(7.0376836292e-2)
    p = _fmuladd(p, f, _F(-1.1514610310e-1))
    p = _fmuladd(p, f, _F(1.1676998740e-1))
    p = _fmuladd(p, f, _F(-1.2420140846e-1))
    p = _fmuladd(p, f, _F(1.4249322787e-1))
    p = _fmuladd(p, f, _F(-1.6668057665e-1))
    p = _fmuladd(p, f, _F(2.0000714765e-1))
    p = _fmuladd(p, f, _F(-2.4999993993e-1))
    p = _fmuladd(p, f, _F(3.3333331174e-1))
    y = p * f * z
    y = y + ef * _LN2_LO
    y = y - _HALF * z
    res = f + y
    res = res + ef * _LN2_HI
    if x < _F(0.0):
        res = _NAN
    if x == _F(0.0):
        res = -_INF
    if x == _INF:
        res = _INF
    if x != x:
        res = x
    return res


@njit(**INLINE)
def tanh_f32(x):  # type: ignore[no-untyped-def]
    """tanh: odd/even [13/6] rational minimax on the clamped input (the approximation Eigen and onnxruntime use)."""
    xc = x
    if xc > _TANH_CLAMP:
        xc = _TANH_CLAMP
    if xc < -_TANH_CLAMP:
        xc = -_TANH_CLAMP
    x2 = xc * xc
    p = _F(-2.76076847742355e-16)
    p = _fmuladd(p, x2, _F(2.00018790482477e-13))
    p = _fmuladd(p, x2, _F(-8.60467152213735e-11))
    p = _fmuladd(p, x2, _F(5.12229709037114e-08))
    p = _fmuladd(p, x2, _F(1.48572235717979e-05))
    p = _fmuladd(p, x2, _F(6.37261928875436e-04))
    p = _fmuladd(p, x2, _F(4.89352455891786e-03))
    p = p * xc
    q = _F(1.19825839466702e-06)
    q = _fmuladd(q, x2, _F(1.18534705686654e-04))
    q = _fmuladd(q, x2, _F(2.26843463243900e-03))
    q = _fmuladd(q, x2, _F(4.89352518554385e-03))
    res = p / q
    if abs(x) < _TANH_TINY:
        res = x
    if abs(x) >= _TANH_CLAMP:  # exact +-1 even if the caller's flags let LLVM fuse the Horner steps into FMAs
        res = math.copysign(_ONE, x)
    return res


@njit(**INLINE)
def sigmoid_f32(x):  # type: ignore[no-untyped-def]
    """1/(1+e^-x), computed from e = e^-|x| <= 1 so nothing overflows: 1/(1+e) for x >= 0 and e/(1+e) for x < 0
    (relative accuracy also in the far negative tail, where the result is tiny or subnormal)."""
    e = exp_f32(-abs(x))
    num = _ONE
    if x < _F(0.0):
        num = e
    return num / (_ONE + e)


@njit(**INLINE)
def erf_f32(x):  # type: ignore[no-untyped-def]
    """erf: odd/even [13/8] rational on the input clamped to [-4, 4] (the approximation Eigen uses)."""
    xc = x
    if xc > _ERF_CLAMP:
        xc = _ERF_CLAMP
    if xc < -_ERF_CLAMP:
        xc = -_ERF_CLAMP
    x2 = xc * xc
    p = _F(-2.72614225801306e-10)
    p = _fmuladd(p, x2, _F(2.77068142495902e-08))
    p = _fmuladd(p, x2, _F(-2.10102402082508e-06))
    p = _fmuladd(p, x2, _F(-5.69250639462346e-05))
    p = _fmuladd(p, x2, _F(-7.34990630326855e-04))
    p = _fmuladd(p, x2, _F(-2.95459980854025e-03))
    p = _fmuladd(p, x2, _F(-1.60960333262415e-02))
    q = _F(-1.45660718464996e-05)
    q = _fmuladd(q, x2, _F(-2.13374055278905e-04))
    q = _fmuladd(q, x2, _F(-1.68282697438203e-03))
    q = _fmuladd(q, x2, _F(-7.37332916720468e-03))
    q = _fmuladd(q, x2, _F(-1.42647390514189e-02))
    # multiply by x last: p*x would underflow for tiny x and lose relative accuracy
    res = (p / q) * xc
    if res > _ONE:  # with FMA contraction the rational can overshoot 1 by an ulp near |x| = 4
        res = _ONE
    if res < -_ONE:
        res = -_ONE
    if abs(x) >= _ERF_CLAMP:  # exact +-1 (1 + erf(x) must be 0 for gelu) whatever the caller's FMA contraction
        res = math.copysign(_ONE, x)
    return res


@njit(**INLINE)
def gelu_erf_f32(x):  # type: ignore[no-untyped-def]
    """0.5 x (1 + erf(x/sqrt(2))).  gelu(-inf) is NaN, as the formula (and onnxruntime) give."""
    return (_HALF * x) * (_ONE + erf_f32(x * _FRAC_1_SQRT2))


@njit(**INLINE)
def gelu_tanh_f32(x):  # type: ignore[no-untyped-def]
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).  gelu(-inf) is NaN, as in onnxruntime."""
    inner = _SQRT_2_OVER_PI * (x + _GELU_TANH_C * (x * x * x))
    return (_HALF * x) * (_ONE + tanh_f32(inner))


# ---------------------------------------------------------------------------------------------------------------------
# float64: libm is accurate and no vectorised float64 approximation is worth its error budget here.  These wrappers
# exist so the code generator can treat both dtypes through one table.

@njit(**INLINE)
def exp_f64(x):  # type: ignore[no-untyped-def]
    return math.exp(x)


@njit(**INLINE)
def log_f64(x):  # type: ignore[no-untyped-def]
    return math.log(x)  # inside @njit: nan for x < 0 and -inf for 0, no ValueError


@njit(**INLINE)
def tanh_f64(x):  # type: ignore[no-untyped-def]
    return math.tanh(x)


@njit(**INLINE)
def sigmoid_f64(x):  # type: ignore[no-untyped-def]
    e = math.exp(-abs(x))
    s = 1.0 / (1.0 + e)
    return e * s if x < 0.0 else s


@njit(**INLINE)
def erf_f64(x):  # type: ignore[no-untyped-def]
    return math.erf(x)


@njit(**INLINE)
def gelu_erf_f64(x):  # type: ignore[no-untyped-def]
    return (0.5 * x) * (1.0 + math.erf(x * 0.7071067811865476))


@njit(**INLINE)
def gelu_tanh_f64(x):  # type: ignore[no-untyped-def]
    return (0.5 * x) * (1.0 + math.tanh(0.7978845608028654 * (x + 0.044715 * (x * x * x))))


# Math name -> function name in this module, per dtype.  Generated source does
# ``from jitort.kernels.fastmath import exp_f32`` and calls ``exp_f32(v)``.
FLOAT32_FUNCS: dict[str, str] = {
    "exp": "exp_f32",
    "log": "log_f32",
    "tanh": "tanh_f32",
    "sigmoid": "sigmoid_f32",
    "erf": "erf_f32",
    "gelu_erf": "gelu_erf_f32",
    "gelu_tanh": "gelu_tanh_f32",
}
FLOAT64_FUNCS: dict[str, str] = {
    "exp": "exp_f64",
    "log": "log_f64",
    "tanh": "tanh_f64",
    "sigmoid": "sigmoid_f64",
    "erf": "erf_f64",
    "gelu_erf": "gelu_erf_f64",
    "gelu_tanh": "gelu_tanh_f64",
}
