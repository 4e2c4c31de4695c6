"""Convolutions on few output positions (resnet50's 7x7 stage: 1x1 and strided kernels whose outputs
half-fill the register tiles' vectors), against onnxruntime: strides, padding, ranks, batches, bias,
fused activations and residual, float16, thread counts bitwise, equal weight rows.

(They took a transposed product on the MatMul engine until the conv GEMM's tile became 6 x 4 vectors
on AVX-512, which then ran them as fast or faster: Ice Lake-SP VM, 1 thread, 2048->512 on 7x7 0.87 vs
0.99 ms, 512->512 3x3 stride 2 2.17 vs 2.71.)"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort
from oracle import assert_close, make_model, rand, run_ort


def _model(xs, ws, attrs, act="", residual=False, bias=True, dtype=np.float32, seed=0):
    """Conv (+ Add of a second input z) (+ act) with constant weights; returns (model, feeds)."""
    w = rand(ws, seed=seed + 2, low=-0.5, high=0.5)
    b = rand((ws[0],), seed=seed + 3)
    conv = helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], name="conv", **attrs)
    inits = {"w": w, "b": b} if bias else {"w": w}
    if dtype != np.float32:
        inits = {k: v.astype(dtype) for k, v in inits.items()}
    x = rand(xs, seed=seed + 1).astype(dtype)
    feeds = {"x": x}
    ins = {"x": (dtype, xs)}
    nodes, out = [conv], "c"
    if residual:
        ys = run_ort(make_model([conv], ins, ["c"], inits, 13), feeds)[0].shape
        ins["z"] = (dtype, ys)
        feeds["z"] = rand(ys, seed=seed + 4).astype(dtype)
        nodes.append(helper.make_node("Add", ["c", "z"], ["s"], name="add"))
        out = "s"
    if act == "Clip":
        inits.update(lo=np.array(-0.5, dtype), hi=np.array(1.0, dtype))
        nodes.append(helper.make_node("Clip", [out, "lo", "hi"], ["y"], name="act"))
        out = "y"
    elif act == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", [out], ["y"], name="act", alpha=0.1))
        out = "y"
    elif act:
        nodes.append(helper.make_node(act, [out], ["y"], name="act"))
        out = "y"
    return make_model(nodes, ins, [out], inits, 13), feeds


def _session(m, threads=1):
    so = jitort.SessionOptions()
    so.intra_op_num_threads = threads
    return jitort.InferenceSession(m.SerializeToString(), so)


CASES = [
    ((2, 32, 7, 7), (40, 32, 1, 1), dict()),  # batch 2, M not a whole panel
    ((1, 24, 13, 13), (32, 24, 1, 1), dict(strides=[2, 2])),  # strided: 7x7 out
    ((1, 16, 5, 5), (24, 16, 1, 1), dict(pads=[1, 1, 1, 1])),  # padded 1x1: a zero border
    ((1, 20, 40), (16, 20, 1), dict()),  # 1-D, 40 positions
    ((1, 8, 2, 2, 5), (24, 8, 1, 1, 1), dict()),  # 3-D, 20 positions
    ((1, 48, 9, 9), (20, 48, 1, 1), dict(strides=[2, 2], pads=[0, 1, 0, 0])),  # 5x5 out, asymmetric pad
    ((2, 16, 13, 13), (24, 16, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),  # strided 3x3: im2col
    ((1, 8, 13, 13), (16, 8, 3, 3), dict(strides=[2, 2], dilations=[2, 2], pads=[2, 2, 2, 2])),  # dilated
    ((1, 6, 11, 12), (20, 6, 5, 3), dict(strides=[2, 3], pads=[2, 1, 1, 0])),  # 5x3, uneven strides, 5x4 out
]


@pytest.mark.parametrize("xs,ws,attrs", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_ort(xs, ws, attrs, bias):
    m, feeds = _model(xs, ws, attrs, bias=bias)
    sess = _session(m)
    assert_close(sess.run(None, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ["", "Relu", "Clip", "LeakyRelu", "Sigmoid"])
@pytest.mark.parametrize("residual", [False, True])
def test_epilogues_match_ort(act, residual):
    m, feeds = _model((1, 32, 7, 7), (48, 32, 1, 1), {}, act=act, residual=residual)
    sess = _session(m)
    assert len(sess.artifact.ir().nodes) == 1  # Conv, or FusedConv with what it absorbed
    assert_close(sess.run(None, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_float16():
    m, feeds = _model((1, 16, 7, 7), (32, 16, 1, 1), {}, act="Relu", dtype=np.float16)
    sess = _session(m)
    got = sess.run(None, feeds)
    assert got[0].dtype == np.float16
    assert_close(got, run_ort(m, feeds), rtol=1e-2, atol=1e-2)


def test_threads_are_bitwise_equal():
    """Work splits between threads by output channels or positions, never within a sum: 1 and 2
    threads give bitwise equal results."""
    m, feeds = _model((1, 256, 7, 7), (512, 256, 1, 1), {}, act="Relu", residual=True)
    one = _session(m, 1).run(None, feeds)[0]
    np.testing.assert_array_equal(_session(m, 2).run(None, feeds)[0], one)
    assert_close([one], run_ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_output_channels_with_equal_weights_are_bitwise_equal():
    """As on every conv path (test_conv.py): equal weight rows give bitwise equal channels."""
    x = rand((1, 64, 7, 7), seed=1, low=-100, high=100)
    w = np.broadcast_to(rand((1, 64, 1, 1), seed=2), (40, 64, 1, 1)).copy()
    b = np.full(40, 0.02, np.float32)
    m = make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"])], {"x": (np.float32, x.shape)}, ["y"],
                   {"w": w, "b": b}, 13)
    sess = _session(m)
    y = sess.run(None, {"x": x})[0]
    assert (y == y[:, :1]).all()
