"""QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear / MatMulInteger / QLinearMatMul against
onnxruntime (per-tensor, per-axis, blocked; int8/uint8/int16/uint16/int4/uint4/float8), and the
spec's formulas where onnxruntime has no kernel."""
from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from jitort.errors import InvalidArgument
from oracle import check, node_model, rand, run_jitort


def _q_model(opset: int, x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, **attrs: Any):
    inits = {"s": scale}
    names = ["x", "s"]
    if zp is not None:
        inits["z"] = zp
        names.append("z")
    return node_model("QuantizeLinear", {"x": x}, opset=opset, initializers=inits, input_names=names, **attrs)


@pytest.mark.parametrize("opset", [10, 13, 19, 21])
@pytest.mark.parametrize("zdt", [np.uint8, np.int8, None])
def test_quantize_per_tensor(opset: int, zdt: Any) -> None:
    x = np.concatenate([rand([30], seed=1, low=-300, high=300),
                        np.array([0.5, 1.5, 2.5, -0.5, -2.5, 1e6, -1e6], np.float32)])  # ties, saturation
    zp = None if zdt is None else np.array(3 if zdt == np.uint8 else -2, zdt)
    check(_q_model(opset, x, np.array(2.0, np.float32), zp), {"x": x}, rtol=0, atol=0)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_dequantize_per_axis(axis: int) -> None:
    x = rand([3, 4, 5], seed=2, low=-50, high=50)
    n = x.shape[axis]
    scale = np.linspace(0.1, 0.9, n).astype(np.float32)
    zp = np.arange(n).astype(np.int8)
    check(_q_model(13, x, scale, zp, axis=axis), {"x": x}, rtol=0, atol=0)
    q = rand([3, 4, 5], np.int8, seed=3, low=-12, high=12)
    m = node_model("DequantizeLinear", {"q": q}, opset=13, initializers={"s": scale, "z": zp}, axis=axis)
    check(m, {"q": q})


@pytest.mark.parametrize("zdt", [np.int16, np.uint16, ml_dtypes.int4, ml_dtypes.uint4])
def test_quantize_wide_and_4bit(zdt: Any) -> None:
    x = rand([4, 6], seed=4, low=-40, high=40)
    zp = np.array(1, zdt)
    m = _q_model(21, x, np.array(0.7, np.float32), zp)
    got = run_jitort(m, {"x": x})[0]
    lo, hi = (int(ml_dtypes.iinfo(zdt).min), int(ml_dtypes.iinfo(zdt).max))
    want = np.clip(np.rint(x / np.float32(0.7)) + 1, lo, hi).astype(zdt)
    assert got.dtype == np.dtype(zdt)
    np.testing.assert_array_equal(got.astype(np.int32), want.astype(np.int32))
    if zdt in (np.int16, np.uint16):
        check(m, {"x": x}, rtol=0, atol=0)


@pytest.mark.parametrize("block", [2, 3])
def test_quantize_dequantize_blocked(block: int) -> None:
    x = rand([4, 6], seed=5, low=-20, high=20)
    blocks = -(-6 // block)
    scale = rand([4, blocks], seed=6, low=0.1, high=1.0)
    zp = rand([4, blocks], np.int8, seed=7, low=-0.5, high=0.5)
    m = _q_model(21, x, scale, zp, axis=1, block_size=block)
    check(m, {"x": x}, rtol=0, atol=0)
    q = run_jitort(m, {"x": x})[0]
    d = node_model("DequantizeLinear", {"q": q}, opset=21, initializers={"s": scale, "z": zp}, axis=1,
                   block_size=block)
    check(d, {"q": q})


@pytest.mark.parametrize("fmt", [TP.FLOAT8E4M3FN, TP.FLOAT8E5M2])
@pytest.mark.parametrize("saturate", [1, 0])
def test_quantize_float8(fmt: int, saturate: int) -> None:
    x = np.array([0.3, -1.7, 1000.0, -1e5, 3e4, np.inf, np.nan, 0.0], np.float32)
    dt = helper.tensor_dtype_to_np_dtype(fmt)
    m = _q_model(21, x, np.array(0.5, np.float32), np.zeros((), dt), saturate=saturate)
    got = run_jitort(m, {"x": x})[0]
    y = x / np.float32(0.5)
    if saturate:
        fmax = float(ml_dtypes.finfo(dt).max)
        y = np.clip(y, -fmax, fmax)
    np.testing.assert_array_equal(got.astype(np.float32), y.astype(dt).astype(np.float32))


@pytest.mark.parametrize("dt", [np.float16, np.float32])
def test_dequantize_output_dtypes(dt: Any) -> None:
    q = rand([2, 5], np.uint8, seed=8, low=0, high=25)
    m = node_model("DequantizeLinear", {"q": q}, opset=19, initializers={"s": np.array(0.25, dt),
                                                                          "z": np.array(7, np.uint8)})
    check(m, {"q": q}, rtol=1e-3)


def test_dequantize_int32_no_zero_point() -> None:
    q = np.array([-100000, 0, 7, 123456], np.int32)
    m = node_model("DequantizeLinear", {"q": q}, opset=13, initializers={"s": np.array(0.01, np.float32)})
    check(m, {"q": q})


@pytest.mark.parametrize("seed", [0, 1])
def test_dynamic_quantize(seed: int) -> None:
    x = rand([3, 7], seed=seed, low=-4, high=9)
    check(node_model("DynamicQuantizeLinear", {"x": x}, n_outputs=3, opset=11), {"x": x})
    pos = np.abs(x) + 1
    check(node_model("DynamicQuantizeLinear", {"x": pos}, n_outputs=3, opset=11), {"x": pos})


@pytest.mark.parametrize("adt,bdt", [(np.uint8, np.uint8), (np.int8, np.int8), (np.uint8, np.int8)])
@pytest.mark.parametrize("zps", [False, True])
def test_matmul_integer(adt: Any, bdt: Any, zps: bool) -> None:
    a = rand([2, 3, 4], adt, seed=9, low=-10, high=10)
    b = rand([4, 5], bdt, seed=10, low=-10, high=10)
    inits = {}
    names = ["a", "b"]
    if zps:
        inits = {"az": np.array(2, adt), "bz": np.array(3, bdt)}
        names += ["az", "bz"]
    m = node_model("MatMulInteger", {"a": a, "b": b}, opset=10, initializers=inits, input_names=names)
    check(m, {"a": a, "b": b})


def test_matmul_integer_per_column_zero_point() -> None:
    a = rand([3, 4], np.uint8, seed=11, low=0, high=20)
    b = rand([4, 5], np.uint8, seed=12, low=0, high=20)
    m = node_model("MatMulInteger", {"a": a, "b": b}, opset=10,
                   initializers={"az": np.array(1, np.uint8), "bz": np.arange(5, dtype=np.uint8)},
                   input_names=["a", "b", "az", "bz"])
    check(m, {"a": a, "b": b})


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("shape_a,shape_b", [([2, 4], [4, 3]), ([2, 2, 4], [4, 3])])
def test_qlinear_matmul(dt: Any, shape_a: list, shape_b: list) -> None:
    a = rand(shape_a, dt, seed=13, low=-12, high=12)
    b = rand(shape_b, dt, seed=14, low=-12, high=12)
    inits = {"as": np.array(0.05, np.float32), "az": np.array(1, dt), "bs": np.array(0.03, np.float32),
             "bz": np.array(2, dt), "ys": np.array(0.02, np.float32), "yz": np.array(5, dt)}
    m = node_model("QLinearMatMul", {"a": a, "b": b}, opset=10, initializers=inits,
                   input_names=["a", "as", "az", "b", "bs", "bz", "ys", "yz"])
    check(m, {"a": a, "b": b}, rtol=0, atol=1)


def test_quantize_bad_axis_and_zero_point_type() -> None:
    x = rand([2, 3])
    m = _q_model(13, x, np.ones(4, np.float32), np.zeros(4, np.uint8), axis=1)
    with pytest.raises(InvalidArgument, match="QuantizeLinear"):
        run_jitort(m, {"x": x})
    q = np.zeros(3, np.int8)
    m = node_model("DequantizeLinear", {"q": q}, opset=21, initializers={"s": np.ones((), np.float32)},
                   input_names=["q", "s"])
    assert run_jitort(m, {"q": q})[0].dtype == np.float32



@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("axis", [None, 1, -1])
def test_quantize_compiled_pass_is_the_numpy_path(dt, axis, monkeypatch):
    """float32 <-> 8-bit with a per-tensor or per-axis scale runs as one compiled pass: the numpy
    path's bits, ties (x / scale exactly halfway) and saturation included."""
    from jitort.kernels import quant as Q
    rng = np.random.default_rng(3)
    x = (rng.integers(-600, 600, (3, 5, 7)) / 2).astype(np.float32)  # halves: ties for scale 1
    n = 1 if axis is None else x.shape[axis]
    scale = np.array(1.0, np.float32) if axis is None else rng.choice([1.0, 0.5, 0.3], n).astype(np.float32)
    zp = np.array(7, dt) if axis is None else rng.integers(-5, 6, n).astype(dt)
    ax = 1 if axis is None else axis
    fast_q = Q._quantize(x, scale, zp, ax, 1, 0, np.dtype(dt))
    fast_dq = Q._dequantize(fast_q, scale, zp, ax, 0, np.dtype(np.float32))
    monkeypatch.setattr(Q, "_axis_view", lambda *a: None)
    np.testing.assert_array_equal(fast_q, Q._quantize(x, scale, zp, ax, 1, 0, np.dtype(dt)))
    np.testing.assert_array_equal(fast_dq, Q._dequantize(fast_q, scale, zp, ax, 0, np.dtype(np.float32)))
