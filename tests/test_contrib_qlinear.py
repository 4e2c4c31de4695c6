"""QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearConcat, QLinearGlobalAveragePool
(com.microsoft) vs onnxruntime, uint8 and int8, broadcasting, channels_last; scales chosen so many
values fall on rounding ties (exact equality asserted)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from oracle import make_model, rand, run_ort

F = np.float32
MS = {"com.microsoft": 1}


def _run(node, feeds, inits):
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y"], inits, extra_opsets=MS)
    got = ort.InferenceSession(m.SerializeToString()).run(None, feeds)[0]
    want = run_ort(m, feeds)[0]
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    np.testing.assert_array_equal(got, want)


def _q(shape, dt, seed):
    info = np.iinfo(dt)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(dt)


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("dt,bshape", [(np.uint8, (3, 4, 5)), (np.int8, (5,)), (np.uint8, (4, 1))])
def test_qlinear_binary(op, dt, bshape):
    inits = {"sa": np.array(0.05, F), "za": np.array(3, dt), "sb": np.array(0.02, F), "zb": np.array(-2 if dt == np.int8 else 7, dt),
             "sc": np.array(0.08 if op == "QLinearAdd" else 0.1, F), "zc": np.array(5, dt)}
    node = helper.make_node(op, ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain="com.microsoft")
    _run(node, {"a": _q((3, 4, 5), dt, 1), "b": _q(bshape, dt, 2)}, inits)


@pytest.mark.parametrize("op,attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {}),
                                      ("QLinearLeakyRelu", {"alpha": 0.3})])
@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_qlinear_unary(op, attrs, dt):
    inits = {"sx": np.array(0.05, F), "zx": np.array(10, dt), "sy": np.array(1 / 256 if op == "QLinearSigmoid" else 0.04, F),
             "zy": np.array(0 if dt == np.uint8 else -128, dt) if op == "QLinearSigmoid" else np.array(4, dt)}
    node = helper.make_node(op, ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft", **attrs)
    _run(node, {"x": _q((4, 33), dt, 3)}, inits)


@pytest.mark.parametrize("dt,axis", [(np.uint8, 1), (np.int8, -1), (np.uint8, 0)])
def test_qlinear_concat(dt, axis):
    inits = {"sy": np.array(0.1, F), "zy": np.array(6, dt), "s1": np.array(0.05, F), "z1": np.array(2, dt),
             "s2": np.array(0.2, F), "z2": np.array(-3 if dt == np.int8 else 9, dt)}
    shape2 = [2, 3, 4]
    shape2[axis] = 5
    node = helper.make_node("QLinearConcat", ["sy", "zy", "x1", "s1", "z1", "x2", "s2", "z2"], ["y"],
                            domain="com.microsoft", axis=axis)
    _run(node, {"x1": _q((2, 3, 4), dt, 4), "x2": _q(tuple(shape2), dt, 5)}, inits)


@pytest.mark.parametrize("dt,channels_last", [(np.uint8, 0), (np.int8, 0), (np.uint8, 1)])
def test_qlinear_global_average_pool(dt, channels_last):
    inits = {"sx": np.array(0.05, F), "zx": np.array(3, dt), "sy": np.array(0.03, F), "zy": np.array(-1 if dt == np.int8 else 2, dt)}
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft",
                            channels_last=channels_last)
    _run(node, {"x": _q((2, 6, 5, 7), dt, 6)}, inits)
