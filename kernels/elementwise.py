"""Elementwise ops as scalar expressions (see kernels.registry for the contract).

Every function returns a Python/Numba expression over the scalar locals it is given. Its value is
cast to the node's dtype by the emitter (which is also how integer results wrap like C). Float
semantics follow onnxruntime: NaN propagates through Relu, Max, Min, Clip and Sign.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from jitort.ir import Graph, Node
from jitort.kernels.registry import Call, Ref, Scalar, compute_dtype, elementwise


def _bool_out(node: Node, in_dtypes: list[np.dtype]) -> np.dtype:
    return np.dtype(np.bool_)


def _is_float(c: Scalar, k: int = 0) -> bool:
    return c.in_dtypes[k].kind == "f"


# --- arithmetic ---------------------------------------------------------------------------------

@elementwise("Add", since=7)
def Add(c: Scalar, a: str, b: str) -> str:
    return f"{a} + {b}"


@elementwise("Sub", since=7)
def Sub(c: Scalar, a: str, b: str) -> str:
    return f"{a} - {b}"


@elementwise("Mul", since=7)
def Mul(c: Scalar, a: str, b: str) -> str:
    return f"{a} * {b}"


@elementwise("Div", since=7)
def Div(c: Scalar, a: str, b: str) -> str:
    if _is_float(c):
        return f"{a} / {b}"
    if c.in_dtypes[0].kind == "u":
        return f"{a} // {b}"
    # C++ integer division truncates toward zero; Python's // floors.
    return f"{a} // {b} + (1 if ({a} % {b} != 0 and (({a} < 0) != ({b} < 0))) else 0)"


@elementwise("Mod", since=10)
def Mod(c: Scalar, a: str, b: str) -> str:
    if _is_float(c) and not c.attrs.get("fmod", 0):
        # fmod=0 on floats: numpy's mod, the result takes the divisor's sign
        return f"{a} % {b}"
    if c.attrs.get("fmod", 0):
        # fmod: the result has the dividend's sign (C's fmod)
        if _is_float(c):
            return c.fn("fmod", a, b)
        return f"{a} - {b} * ({a} // {b} + (1 if ({a} % {b} != 0 and (({a} < 0) != ({b} < 0))) else 0))"
    return f"{a} % {b}"


@elementwise("Pow", since=7)
def Pow(c: Scalar, a: str, b: str) -> str:
    e = c.scalar_const(1)
    if e is not None and c.dtype.kind == "f":
        if e == 2:
            return f"{a} * {a}"
        if e == 1:
            return a
        if e == 3:
            return f"{a} * {a} * {a}"
        if e == 0.5:
            return f"math.sqrt({a})"
    if c.dtype.kind == "f":
        return f"{a} ** {c.cast(b)}"
    return f"{a} ** {b}"


def _fold_left(c: Scalar, fold: Callable[[Scalar, str, str], str], xs: tuple[str, ...]) -> str:
    """fold(...fold(fold(x0, x1), x2)..., xn) in that order, every partial result a local
    (``Scalar.let``): the expression stays one fold deep whatever the number of operands."""
    acc = xs[0]
    for k, x in enumerate(xs[1:], 1):
        step = f"({fold(c, acc, x)})"
        acc = step if k == len(xs) - 1 else c.let(step)
    return acc


def _variadic(fold: Callable[[Scalar, str, str], str]) -> Callable[..., str]:
    def f(c: Scalar, *xs: str) -> str:
        return _fold_left(c, fold, xs)
    return f


def _max2(c: Scalar, a: str, b: str) -> str:
    if c.dtype.kind == "f":
        return f"{a} if ({a} > {b} or {a} != {a}) else {b}"
    return f"max({a}, {b})"


def _min2(c: Scalar, a: str, b: str) -> str:
    if c.dtype.kind == "f":
        return f"{a} if ({a} < {b} or {a} != {a}) else {b}"
    return f"min({a}, {b})"


# A kernel's compile time grows with its array arguments (each costs Numba and LLVM tens of ms),
# so the fusion pass leaves a Sum/Max/Min/Mean wider than its kernel size limit out of every kernel
# and it runs as ``fold_variadic``: nothing to compile, whatever the number of inputs.

def fold_variadic(*xs: np.ndarray, kind: str, dtype: np.dtype) -> np.ndarray:
    """Sum/Max/Min/Mean of ``xs`` (broadcast) as a left fold over whole arrays, in the order, compute
    dtype and NaN rule of the scalar expressions above, so results equal the fused kernels' bit for
    bit (float16/bfloat16 compute in float32 and round once; integers wrap as the final cast does)."""
    out_dt = np.dtype(dtype)
    cdt = compute_dtype(out_dt)
    acc = np.asarray(xs[0]).astype(cdt)
    for x in xs[1:]:
        x = np.asarray(x).astype(cdt, copy=False)
        if kind in ("Sum", "Mean"):
            acc = acc + x
        elif cdt.kind == "f":  # as _max2/_min2: keep acc when it wins or is NaN
            acc = np.where((acc > x if kind == "Max" else acc < x) | (acc != acc), acc, x)
        else:
            acc = np.maximum(acc, x) if kind == "Max" else np.minimum(acc, x)
    if kind == "Mean":
        acc = acc / cdt.type(len(xs))
    return np.ascontiguousarray(acc.astype(out_dt, copy=False))


def _fold_lowering(kind: str) -> Callable[[Node, Graph], Call]:
    def lower(node: Node, g: Graph) -> Call:
        return Call(fold_variadic, [Ref(i) for i in node.inputs],
                    {"kind": kind, "dtype": np.dtype(g.type_of(node.outputs[0]).dtype)})
    return lower


elementwise("Max", since=1, lower=_fold_lowering("Max"))(_variadic(_max2))
elementwise("Min", since=1, lower=_fold_lowering("Min"))(_variadic(_min2))
elementwise("Sum", since=1, lower=_fold_lowering("Sum"))(_variadic(lambda c, a, b: f"{a} + {b}"))


@elementwise("Mean", since=1, lower=_fold_lowering("Mean"))
def Mean(c: Scalar, *xs: str) -> str:
    total = _fold_left(c, lambda c, a, b: f"{a} + {b}", xs)
    return f"{total} / {c.const(len(xs))}"


# --- unary math ---------------------------------------------------------------------------------

def _unary(op_type: str, since: int, body: Callable[[Scalar, str], str]) -> None:
    elementwise(op_type, since=since)(body)


_unary("Neg", 1, lambda c, x: f"-{x}")
_unary("Abs", 1, lambda c, x: f"abs({x})")
_unary("Reciprocal", 1, lambda c, x: f"{c.const(1)} / {x}")
_unary("Sqrt", 1, lambda c, x: f"math.sqrt({x})")
_unary("Exp", 1, lambda c, x: c.math("exp", x))
_unary("Log", 1, lambda c, x: c.math("log", x))
_unary("Tanh", 1, lambda c, x: c.math("tanh", x))
_unary("Sigmoid", 1, lambda c, x: c.math("sigmoid", x))
_unary("Erf", 9, lambda c, x: c.math("erf", x))
_unary("Floor", 1, lambda c, x: c.fn("floor", x))
_unary("Ceil", 1, lambda c, x: c.fn("ceil", x))
_unary("Round", 11, lambda c, x: c.fn("rint", x))
for _name in ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh"):
    _unary(_name, 7 if _name in ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan") else 9,
           (lambda fname: lambda c, x: f"math.{fname}({x})")(_name.lower()))


@elementwise("Sign", since=9)
def Sign(c: Scalar, x: str) -> str:
    one, zero = c.const(1), c.const(0)
    body = f"({one} if {x} > {zero} else (-{one} if {x} < {zero} else {zero}))"
    return f"({x} if {x} != {x} else {body})" if c.dtype.kind == "f" else body


@elementwise("Relu", since=6)
def Relu(c: Scalar, x: str) -> str:
    return f"{c.const(0)} if {x} < {c.const(0)} else {x}"


# --- activations (fusable: vision models put them after every conv) -----------------------------

@elementwise("LeakyRelu", since=6)
def LeakyRelu(c: Scalar, x: str) -> str:
    return f"{x} if {x} >= {c.const(0)} else {c.const(c.attrs['alpha'])} * {x}"


@elementwise("PRelu", since=7)
def PRelu(c: Scalar, x: str, slope: str) -> str:
    return f"{x} if {x} >= {c.const(0)} else {slope} * {x}"


@elementwise("Elu", since=6)
def Elu(c: Scalar, x: str) -> str:
    return f"{x} if {x} >= {c.const(0)} else {c.const(c.attrs['alpha'])} * ({c.math('exp', x)} - {c.const(1)})"


@elementwise("Selu", since=6)
def Selu(c: Scalar, x: str) -> str:
    a, g = c.const(c.attrs["alpha"]), c.const(c.attrs["gamma"])
    return f"{g} * ({x} if {x} > {c.const(0)} else {a} * {c.math('exp', x)} - {a})"


@elementwise("Celu", since=12)
def Celu(c: Scalar, x: str) -> str:
    a = c.const(c.attrs["alpha"])
    return f"{x} if {x} >= {c.const(0)} else {a} * ({c.math('exp', f'{x} / {a}')} - {c.const(1)})"


def _clamp01(c: Scalar, v: str) -> str:
    zero, one = c.const(0), c.const(1)
    return f"({zero} if {v} < {zero} else ({one} if {v} > {one} else {v}))"


@elementwise("HardSigmoid", since=6)
def HardSigmoid(c: Scalar, x: str) -> str:
    return _clamp01(c, f"({c.const(c.attrs['alpha'])} * {x} + {c.const(c.attrs['beta'])})")


@elementwise("HardSwish", since=14)
def HardSwish(c: Scalar, x: str) -> str:
    return f"{x} * " + _clamp01(c, f"({x} * {c.const(1 / 6)} + {c.const(0.5)})")


def _softplus(c: Scalar, x: str) -> str:
    # log(1 + e^x) without overflow: x + log1p(e^-x) for x > 0.
    return (f"({x} + math.log1p({c.math('exp', f'-{x}')}) if {x} > {c.const(0)} "
            f"else math.log1p({c.math('exp', x)}))")


_unary("Softplus", 1, _softplus)
_unary("Softsign", 1, lambda c, x: f"{x} / ({c.const(1)} + abs({x}))")
_unary("Mish", 18, lambda c, x: f"{x} * {c.math('tanh', _softplus(c, x))}")


@elementwise("ThresholdedRelu", since=10)
def ThresholdedRelu(c: Scalar, x: str) -> str:
    return f"{x} if {x} > {c.const(c.attrs['alpha'])} else {c.const(0)}"


@elementwise("Shrink", since=9)
def Shrink(c: Scalar, x: str) -> str:
    lam, bias, zero = c.const(c.attrs["lambd"]), c.const(c.attrs["bias"]), c.const(0)
    upper = f"({x} - {bias} if {x} > {lam} else {zero})"
    if c.dtype.kind == "u":  # x >= 0 > -lambd; negating lambd would wrap around
        return upper
    return f"({x} + {bias} if {x} < -{lam} else {upper})"


def gelu(c: Scalar, x: str, approximate: str) -> str:
    """GELU of the scalar ``x``: exact (erf), or the tanh approximation when ``approximate == "tanh"``
    (also onnxruntime's contrib Gelu/BiasGelu/FastGelu, kernels/contrib_activation.py)."""
    half, one = c.const(0.5), c.const(1)
    if approximate == "tanh":
        inner = f"{c.const(math.sqrt(2 / math.pi))} * ({x} + {c.const(0.044715)} * {x} * {x} * {x})"
        return f"{half} * {x} * ({one} + {c.math('tanh', inner)})"
    return f"{half} * {x} * ({one} + {c.math('erf', f'{x} * {c.const(1 / math.sqrt(2))}')})"


@elementwise("Gelu", since=20)
def Gelu(c: Scalar, x: str) -> str:
    return gelu(c, x, c.attrs.get("approximate", "none"))


# --- comparison and logic -----------------------------------------------------------------------

for _name, _sym in (("Equal", "=="), ("Less", "<"), ("Greater", ">"), ("LessOrEqual", "<="),
                    ("GreaterOrEqual", ">=")):
    elementwise(_name, since=12 if "Or" in _name else 7, out_dtype=_bool_out)(
        (lambda sym: lambda c, a, b: f"{a} {sym} {b}")(_sym))

elementwise("And", since=7, out_dtype=_bool_out)(lambda c, a, b: f"{a} and {b}")
elementwise("Or", since=7, out_dtype=_bool_out)(lambda c, a, b: f"{a} or {b}")
elementwise("Xor", since=7, out_dtype=_bool_out)(lambda c, a, b: f"{a} != {b}")
elementwise("Not", since=1, out_dtype=_bool_out)(lambda c, x: f"not {x}")
elementwise("IsNaN", since=9, out_dtype=_bool_out)(lambda c, x: f"{x} != {x}")


@elementwise("IsInf", since=10, out_dtype=_bool_out)
def IsInf(c: Scalar, x: str) -> str:
    parts = []
    if c.attrs.get("detect_positive", 1):
        parts.append(f"{x} == np.inf")
    if c.attrs.get("detect_negative", 1):
        parts.append(f"{x} == -np.inf")
    return " or ".join(parts) if parts else "False"


elementwise("BitwiseAnd", since=18)(lambda c, a, b: f"{a} & {b}")
elementwise("BitwiseOr", since=18)(lambda c, a, b: f"{a} | {b}")
elementwise("BitwiseXor", since=18)(lambda c, a, b: f"{a} ^ {b}")
elementwise("BitwiseNot", since=18)(lambda c, x: f"~{x}")


@elementwise("BitShift", since=11)
def BitShift(c: Scalar, a: str, b: str) -> str:
    # Shifting by the bit width or more (or by a negative amount) is undefined in LLVM; ONNX gives 0.
    bits = c.const(8 * c.dtype.itemsize, c.in_dtypes[1])
    shifted = f"{a} << {b}" if c.attrs["direction"] == "LEFT" else f"{a} >> {b}"
    out_of_range = c.const(0)
    if c.attrs["direction"] != "LEFT" and c.dtype.kind == "i":
        out_of_range = f"({c.const(-1)} if {a} < {c.const(0)} else {c.const(0)})"  # arithmetic shift fills the sign
    return f"({shifted}) if ({b} >= {c.const(0, c.in_dtypes[1])} and {b} < {bits}) else {out_of_range}"


# --- selection and conversion -------------------------------------------------------------------

@elementwise("Where", since=9, out_dtype=lambda n, dts: dts[1])
def Where(c: Scalar, cond: str, x: str, y: str) -> str:
    return f"{x} if {cond} else {y}"


def _clip(c: Scalar, x: str, lo: str | None, hi: str | None) -> str:
    # An omitted bound is the dtype's lowest/max value (the spec; so Clip maps inf to FLT_MAX).
    info = np.finfo(c.dtype) if c.dtype.kind == "f" else np.iinfo(c.dtype)
    lo = lo if lo is not None else c.const(info.min)
    hi = hi if hi is not None else c.const(info.max)
    v = x
    if lo is not None:
        v = f"({lo} if {v} < {lo} else {v})"
    if hi is not None:
        v = f"({hi} if {v} > {hi} else {v})"
    return v


@elementwise("Clip", since=11)
def Clip(c: Scalar, x: str, lo: str | None = None, hi: str | None = None) -> str:
    return _clip(c, x, lo, hi)


@elementwise("Clip", since=6)
def Clip_6(c: Scalar, x: str) -> str:
    return _clip(c, x, c.const(c.attrs["min"]), c.const(c.attrs["max"]))


def _cast_out(node: Node, in_dtypes: list[np.dtype]) -> np.dtype:
    from onnx import helper
    return np.dtype(helper.tensor_dtype_to_np_dtype(node.attrs["to"]))


def cast_expr(c: Scalar, x: str, src: np.dtype, dst: np.dtype) -> str:
    if dst == np.bool_:
        return f"{x} != {c.const(0, src)}" if src != np.bool_ else x
    if src.kind == "f" and dst.kind in "iu" and dst.itemsize < 8:
        # Out-of-range float -> small int is undefined in LLVM; go through int64 and wrap, as C++ does.
        return f"np.int64({x})"
    return x


@elementwise("Cast", since=6, out_dtype=_cast_out)
def Cast(c: Scalar, x: str) -> str:
    return cast_expr(c, x, c.in_dtypes[0], c.dtype)


@elementwise("CastLike", since=15, out_dtype=lambda n, dts: dts[1])
def CastLike(c: Scalar, x: str, like: str) -> str:
    return cast_expr(c, x, c.in_dtypes[0], c.dtype)
