"""Scalar building blocks for ``@njit`` reduction loops (Reduce*, Softmax, attention, the norms):
``vmax``/``vmin`` (NaN-propagating for floats: LLVM's ``llvm.maximum``/``llvm.minimum``, which
vectorise where a compare-and-select chain does not), ``radd``/``rmul`` (float adds/multiplies a
loop may reassociate, so it vectorises), ``fexp`` (exp in the argument's precision: jitort's
vectorisable ``exp_f32`` for float32), and ``is_half``, the float16/bfloat16 test of the families
that compute halves in float32.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from jitort.kernels.fastmath import exp_f32

# Intrinsics rather than function-wide fastmath flags: the flags would also reach exp_f32 inlined
# in the same function, whose rounding tricks need strict IEEE arithmetic.

def _float_intrinsic(name: str) -> Any:
    @intrinsic
    def f(typingctx, a, b):  # type: ignore[no-untyped-def]
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            if name == "fadd":  # reassociable: lets LLVM vectorise a sum
                return builder.fadd(args[0], args[1], flags=("reassoc",))
            if name == "fmul":
                return builder.fmul(args[0], args[1], flags=("reassoc",))
            ty = args[0].type
            fn = builder.module.declare_intrinsic(name, [ty], ir.FunctionType(ty, [ty, ty]))
            return builder.call(fn, args)

        return a(a, b), codegen
    return f


fmaximum = _float_intrinsic("llvm.maximum")  # NaN-propagating max, vectorisable
fminimum = _float_intrinsic("llvm.minimum")
_fadd_reassoc = _float_intrinsic("fadd")
_fmul_reassoc = _float_intrinsic("fmul")


def vmax(a: Any, b: Any) -> Any:
    """max(a, b) for reduction loops: NaN-propagating for floats."""
    raise NotImplementedError  # only callable from @njit code


def vmin(a: Any, b: Any) -> Any:
    raise NotImplementedError


def radd(a: Any, b: Any) -> Any:
    """a + b that a reduction loop may reorder (vectorise); exact order for integers anyway."""
    raise NotImplementedError


def rmul(a: Any, b: Any) -> Any:
    raise NotImplementedError


def fexp(x: Any) -> Any:
    """exp in the argument's own precision: jitort's vectorisable exp_f32 for float32."""
    raise NotImplementedError


@overload(vmax, inline="always")
def _vmax_ov(a, b):  # type: ignore[no-untyped-def]
    if isinstance(a, types.Float):
        return lambda a, b: fmaximum(a, b)
    return lambda a, b: a if a > b else b


@overload(vmin, inline="always")
def _vmin_ov(a, b):  # type: ignore[no-untyped-def]
    if isinstance(a, types.Float):
        return lambda a, b: fminimum(a, b)
    return lambda a, b: a if a < b else b


@overload(radd, inline="always")
def _radd_ov(a, b):  # type: ignore[no-untyped-def]
    if isinstance(a, types.Float) and a == b:
        return lambda a, b: _fadd_reassoc(a, b)
    return lambda a, b: a + b


@overload(rmul, inline="always")
def _rmul_ov(a, b):  # type: ignore[no-untyped-def]
    if isinstance(a, types.Float) and a == b:
        return lambda a, b: _fmul_reassoc(a, b)
    return lambda a, b: a * b


@overload(fexp, inline="always")
def _fexp_ov(x):  # type: ignore[no-untyped-def]
    if x == types.float32:
        return lambda x: exp_f32(x)
    return lambda x: math.exp(x)


def is_half(dt: np.dtype) -> bool:
    """float16 or bfloat16 (ml_dtypes): stored in 2 bytes, computed in float32.
    (``dtype.name`` would say it directly but costs ~10 us per call in numpy 2.)"""
    return dt.itemsize == 2 and dt.kind in "fV"
