"""onnxruntime's com.microsoft activations (Gelu, BiasGelu, FastGelu, QuickGelu, BiasAdd) vs
onnxruntime: each alone over its attributes and broadcast shapes, and chained with standard ops
(they fuse into one kernel)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from oracle import assert_close, make_model, rand, run_ort

F = np.float32
MS = {"com.microsoft": 1}


def _ms(op, ins, outs=("y",), **attrs):
    return helper.make_node(op, list(ins), list(outs), domain="com.microsoft", **attrs)


def _check(nodes, feeds, out_names, inits=None, rtol=1e-5, atol=1e-5):
    m = make_model(nodes, {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, list(out_names), inits,
                   extra_opsets=MS)
    sess = ort.InferenceSession(m.SerializeToString())
    got = sess.run(None, feeds)
    assert_close(got, run_ort(m, feeds), rtol, atol)
    return sess


CASES = [
    ("Gelu", ["x"], {}),
    ("BiasGelu", ["x", "b"], {}),
    ("FastGelu", ["x"], {}),
    ("FastGelu", ["x", "b"], {}),
    ("QuickGelu", ["x"], {}),
    ("QuickGelu", ["x"], {"alpha": 1.0}),
    ("QuickGelu", ["x"], {"alpha": -0.5}),
]


@pytest.mark.parametrize("op,ins,attrs", CASES, ids=[f"{c[0]}-{len(c[1])}-{c[2]}" for c in CASES])
def test_activation(op, ins, attrs):
    feeds = {"x": rand((2, 3, 8), seed=1, low=-6, high=6), "b": rand((8,), seed=2), "s": rand((2, 3, 8), seed=3)}
    feeds = {k: v for k, v in feeds.items() if k in ins}
    _check([_ms(op, ins, **attrs)], feeds, ["y"])


def test_bias_add():
    """onnxruntime has BiasAdd for CUDA only: the oracle runs its definition, X + bias + skip."""
    feeds = {"x": rand((2, 3, 8), seed=1), "b": rand((8,), seed=2), "s": rand((2, 3, 8), seed=3)}
    m = make_model([_ms("BiasAdd", ["x", "b", "s"])], {k: (F, list(v.shape)) for k, v in feeds.items()}, ["y"],
                   extra_opsets=MS)
    ref = make_model([helper.make_node("Add", ["x", "b"], ["t"]), helper.make_node("Add", ["t", "s"], ["y"])],
                     {k: (F, list(v.shape)) for k, v in feeds.items()}, ["y"])
    assert_close(ort.InferenceSession(m.SerializeToString()).run(None, feeds), run_ort(ref, feeds))


def test_chain_fuses_into_one_kernel():
    """MatMul -> BiasGelu -> Mul -> FastGelu -> QuickGelu: the four elementwise ops are one kernel."""
    w = rand((8, 8), seed=4)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), _ms("BiasGelu", ["h", "b"], ["g"]),
             helper.make_node("Mul", ["g", "g"], ["m"]), _ms("FastGelu", ["m"], ["f"]),
             _ms("QuickGelu", ["f"], ["y"])]
    feeds = {"x": rand((2, 5, 8), seed=5), "b": rand((8,), seed=6)}
    sess = _check(nodes, feeds, ["y"], {"w": w}, rtol=1e-4, atol=1e-5)
    assert len(sess.compile_report["kernels"]) == 1, sess.compile_report["kernels"]
    assert "fused" in sess.artifact.plan_source and "BiasGelu" in sess.artifact.plan_source


@pytest.mark.parametrize("op", ["Gelu", "FastGelu", "QuickGelu", "BiasGelu"])
def test_float16(op):
    feeds = {"x": rand((4, 6), np.float16, seed=7), "b": rand((6,), np.float16, seed=8)}
    ins = ["x", "b"] if op == "BiasGelu" else ["x"]
    _check([_ms(op, ins, ["y"])], {k: feeds[k] for k in ins}, ["y"], rtol=1e-2, atol=1e-2)
