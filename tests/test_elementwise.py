"""Elementwise ops vs onnxruntime: dtypes, broadcasting patterns, attributes, NaN/inf."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from oracle import check, node_model, rand, run_jitort, run_ort, assert_close

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, 1e-30, 88.0, -88.0, 100.0],
                   np.float32)


def _float_input(dtype, shape=(4, 16), seed=0, positive=False):
    x = rand(shape, dtype, seed, 0.01 if positive else -4, 4)
    flat = x.reshape(-1)
    flat[: SPECIAL.size] = SPECIAL.astype(dtype)
    return x


def _unsupported_by_ort(e: Exception) -> bool:
    name = type(e).__name__
    return name in ("NotImplemented", "InvalidGraph", "Fail") or "Could not find an implementation" in str(e)


def check_or_numpy(model, feeds, reference, rtol=1e-5, atol=1e-6):
    """onnxruntime is the oracle; where it has no kernel for the dtype, the spec's numpy formula is."""
    got = run_jitort(model, feeds)
    try:
        want = run_ort(model, feeds)
    except Exception as e:  # noqa: BLE001
        if not _unsupported_by_ort(e):
            raise
        want = [reference(*feeds.values())]
    assert_close(got, want, rtol, atol)


def _erf(x):
    import scipy.special
    return scipy.special.erf(x)


# The spec's formula, for dtypes onnxruntime has no kernel for (float64 trigonometry, Erf).
NP_UNARY = {"Tan": np.tan, "Atan": np.arctan, "Sinh": np.sinh, "Cosh": np.cosh, "Asinh": np.arcsinh, "Erf": _erf}

UNARY_FLOAT = ["Neg", "Abs", "Reciprocal", "Sqrt", "Exp", "Log", "Tanh", "Sigmoid", "Erf", "Floor", "Ceil",
               "Round", "Sign", "Relu", "Sin", "Cos", "Tan", "Atan", "Sinh", "Cosh", "Asinh", "Softplus",
               "Softsign", "IsNaN", "IsInf", "HardSwish", "Elu", "Selu", "LeakyRelu"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", UNARY_FLOAT)
def test_unary_float(op, dtype):
    x = _float_input(dtype)
    if op == "HardSwish" and dtype == np.float64:
        pytest.skip("onnxruntime has no float64 HardSwish; covered in float32")
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    check_or_numpy(node_model(op, {"x": x}, opset=18), {"x": x}, NP_UNARY.get(op),
                   rtol=rtol, atol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("op", ["Asin", "Acos", "Acosh", "Atanh"])
def test_unary_domain_limited(op):
    lo, hi = (1.0, 5.0) if op == "Acosh" else (-0.99, 0.99)
    x = rand((33,), np.float32, 1, lo, hi)
    check(node_model(op, {"x": x}), {"x": x}, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
@pytest.mark.parametrize("op", ["Neg", "Abs", "Sign", "Relu"])
def test_unary_int(op, dtype):
    x = rand((5, 7), dtype, 2, -12, 12)
    ref = {"Neg": np.negative, "Abs": np.abs, "Sign": np.sign, "Relu": lambda v: np.maximum(v, 0)}[op]
    check_or_numpy(node_model(op, {"x": x}, opset=14), {"x": x}, ref)


BROADCASTS = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (1, 3, 1)), ((5,), ()), ((), (2, 3)),
              ((2, 3, 1, 5), (3, 4, 1)), ((1,), (7, 1)), ((0, 3), (3,))]
NP_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_broadcast_float(op, shapes):
    a, b = rand(shapes[0], np.float32, 3), rand(shapes[1], np.float32, 4, 0.5, 3)
    check(node_model(op, {"a": a, "b": b}), {"a": a, "b": b}, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                   np.uint32, np.uint64, np.float16])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary_dtypes(op, dtype):
    a = rand((4, 9), dtype, 5, -12, 12)
    b = rand((9,), dtype, 6, 1, 9)
    if np.dtype(dtype).kind in "iu":
        b[b == 0] = 1
    if np.dtype(dtype).kind == "i":
        a[0, :4] = [7, -7, 7, -7]
        b[:4] = [2, 2, -2, -2] if np.dtype(dtype).kind == "i" else b[:4]

    def ref(x, y):
        if op == "Div" and np.dtype(dtype).kind in "iu":
            return (np.trunc(x.astype(np.float64) / y)).astype(dtype)
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](x, y).astype(dtype)
    check_or_numpy(node_model(op, {"a": a, "b": b}, opset=14), {"a": a, "b": b}, ref, rtol=1e-3 if dtype == np.float16 else 1e-6)


def test_integer_overflow_wraps():
    a = np.array([100, -100, 127], np.int8)
    check_or_numpy(node_model("Add", {"a": a, "b": a}, opset=14), {"a": a, "b": a}, lambda x, y: (x + y).astype(np.int8))


@pytest.mark.parametrize("fmod,dtype", [(0, np.int32), (1, np.int32), (0, np.int64), (1, np.float32), (1, np.float64)])
def test_mod(fmod, dtype):
    a = np.array([7, -7, 7, -7, 0, 5, 13], dtype)
    b = np.array([2, 2, -2, -2, 3, 5, -4], dtype)
    check(node_model("Mod", {"a": a, "b": b}, fmod=fmod), {"a": a, "b": b})


@pytest.mark.parametrize("shapes", [((3, 4), (4,)), ((3, 4), ())], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_pow(dtype, shapes):
    # Small operands: integer overflow in Pow is implementation-defined (onnxruntime goes through double).
    rng = np.random.default_rng(7)
    a = rng.integers(-5, 6, size=shapes[0]).astype(dtype)
    b = rng.integers(0, 5, size=shapes[1]).astype(dtype)
    if np.dtype(dtype).kind == "f":
        a = np.abs(a) + dtype(0.5)
    check(node_model("Pow", {"a": a, "b": b}, opset=15), {"a": a, "b": b}, rtol=1e-6)


@pytest.mark.parametrize("exponent", [2.0, 0.5, 3.0, 1.0, -1.5])
def test_pow_constant_exponent(exponent):
    x = rand((6, 5), np.float32, 9, 0.1, 4)
    m = node_model("Pow", {"x": x}, initializers={"e": np.array(exponent, np.float32)}, opset=15)
    check(m, {"x": x}, rtol=1e-6)


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32])
def test_comparison(op, dtype):
    a = rand((3, 5), dtype, 10, -3, 3)
    b = rand((5,), dtype, 11, -3, 3)
    if dtype == np.float32:
        a[0, 0] = np.nan
        b[2] = a[1, 2]
    check(node_model(op, {"a": a, "b": b}, opset=16), {"a": a, "b": b})


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op):
    a = rand((4, 6), np.bool_, 12)
    b = rand((6,), np.bool_, 13)
    check(node_model(op, {"a": a, "b": b}), {"a": a, "b": b})


def test_not():
    a = rand((4, 6), np.bool_, 14)
    check(node_model("Not", {"a": a}), {"a": a})


@pytest.mark.parametrize("pos,neg", [(1, 1), (1, 0), (0, 1)])
def test_isinf_attrs(pos, neg):
    x = _float_input(np.float32)
    check(node_model("IsInf", {"x": x}, detect_positive=pos, detect_negative=neg), {"x": x})


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_bitshift(direction, dtype):
    a = np.array([1, 2, 3, 255, 16], dtype)
    b = np.array([1, 2, 3, 1, 4], dtype)
    check(node_model("BitShift", {"a": a, "b": b}, direction=direction), {"a": a, "b": b})


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
def test_bitwise(op):
    a, b = rand((9,), np.int32, 15, -50, 50), rand((9,), np.int32, 16, -50, 50)
    check(node_model(op, {"a": a, "b": b}, opset=18), {"a": a, "b": b})


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_variadic(op, dtype):
    a, b, c = rand((2, 3, 4), dtype, 17), rand((3, 1), dtype, 18), rand((4,), dtype, 19)
    a[0, 0, 0] = np.nan
    b[1, 0] = np.nan
    check_or_numpy(node_model(op, {"a": a, "b": b, "c": c}, opset=13), {"a": a, "b": b, "c": c},
                   lambda x, y, z: ((x + y + z) / 3).astype(dtype), rtol=1e-6)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_variadic_int_single(op):
    a = rand((5,), np.int32, 20)
    check(node_model(op, {"a": a, "b": a[::-1].copy()}, opset=13), {"a": a, "b": a[::-1].copy()})
    check(node_model(op, {"a": a}, opset=13), {"a": a})


@pytest.mark.parametrize("to,src", [
    (TensorProto.INT32, np.float32), (TensorProto.INT8, np.float32), (TensorProto.UINT8, np.float32),
    (TensorProto.BOOL, np.float32), (TensorProto.DOUBLE, np.float32), (TensorProto.FLOAT16, np.float32),
    (TensorProto.FLOAT, np.int64), (TensorProto.FLOAT, np.bool_), (TensorProto.FLOAT, np.float16),
    (TensorProto.INT64, np.int32), (TensorProto.INT8, np.int64), (TensorProto.BOOL, np.int32),
    (TensorProto.INT64, np.float64), (TensorProto.UINT16, np.int32)])
def test_cast(to, src):
    if np.dtype(src).kind == "f":
        x = (rand((3, 7), src, 21, -300, 300) if to in (TensorProto.INT8, TensorProto.UINT8)
             else rand((3, 7), src, 21, -1e4, 1e4))
        x.reshape(-1)[0] = 0.0
        x.reshape(-1)[1] = 2.5
    else:
        x = rand((3, 7), src, 21, -300, 300)
    check(node_model("Cast", {"x": x}, to=to, opset=19), {"x": x})


def test_cast_float16_rounding_exhaustive_sample():
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32) * np.float32(1000)
    x[:8] = [65504.0, 65520.0, 1e-8, -1e-8, np.inf, -np.inf, np.nan, 5.9604645e-08]
    check(node_model("Cast", {"x": x}, to=TensorProto.FLOAT16), {"x": x})


def test_castlike():
    x = rand((4,), np.float32, 22)
    like = np.zeros((1,), np.int32)
    check(node_model("CastLike", {"x": x, "like": like}, opset=15), {"x": x, "like": like})


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float16])
def test_where_broadcast(dtype):
    c = rand((2, 1, 5), np.bool_, 23)
    x = rand((3, 5), dtype, 24)
    y = rand((2, 3, 1), dtype, 25)
    check_or_numpy(node_model("Where", {"c": c, "x": x, "y": y}, opset=16), {"c": c, "x": x, "y": y}, np.where)


@pytest.mark.parametrize("which", ["both", "min", "max", "none"])
def test_clip_11(which):
    x = _float_input(np.float32)
    inits = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}
    names = ["x", "lo" if which in ("both", "min") else "", "hi" if which in ("both", "max") else ""]
    while names[-1] == "":
        names.pop()
    m = node_model("Clip", {"x": x}, initializers={k: v for k, v in inits.items() if k in names},
                   input_names=names, opset=13)
    check(m, {"x": x})


def test_clip_runtime_bounds_and_int():
    x = rand((10,), np.int32, 26, -20, 20)
    lo, hi = np.array(-3, np.int32), np.array(5, np.int32)
    check(node_model("Clip", {"x": x, "lo": lo, "hi": hi}, opset=13), {"x": x, "lo": lo, "hi": hi})


def test_clip_6_attrs():
    x = _float_input(np.float32)
    check(node_model("Clip", {"x": x}, opset=6, min=-1.0, max=2.0), {"x": x})


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    x = _float_input(np.float32)
    check(node_model("Gelu", {"x": x}, opset=20, approximate=approximate), {"x": x}, rtol=1e-5, atol=1e-6)


def test_float16_chain_matches_per_op_rounding():
    x = rand((64,), np.float16, 27)
    y = rand((64,), np.float16, 28)
    from onnx import helper
    from oracle import make_model
    nodes = [helper.make_node("Mul", ["x", "y"], ["m"]), helper.make_node("Add", ["m", "x"], ["a"]),
             helper.make_node("Relu", ["a"], ["z"])]
    m = make_model(nodes, {"x": (np.float16, [64]), "y": (np.float16, [64])}, ["z"])
    check(m, {"x": x, "y": y}, rtol=1e-3, atol=1e-3)
