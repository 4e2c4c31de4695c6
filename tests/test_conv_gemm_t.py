"""Conv's transposed-GEMM path (kernels/conv_gemm_t.py: 1x1 and strided convs on few output
positions, on the MatMul engine), against onnxruntime: which shapes take it, strides/padding/ranks/batches, bias,
fused activations and residual, float16, both ISA paths and thread counts bitwise."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort
from jitort.errors import RuntimeException
from jitort.kernels import conv as K
from jitort.kernels import conv_gemm_t as GT
from jitort.kernels import conv_setup as S
from oracle import assert_close, make_model, rand, run_ort


@pytest.fixture(autouse=True)
def _small_shapes_take_it(request, monkeypatch):
    """The path's cost rule wants hundreds of channels; the tests' small shapes take it by making
    the transposes free in the rule (not in the kernels). ``conv_plan`` caches decisions per shape."""
    if not request.node.name.startswith("test_the_rule"):
        monkeypatch.setattr(GT, "_MOVE", 0.0)
    S.conv_plan.cache_clear()
    yield
    S.conv_plan.cache_clear()


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


def _takes_path(sess):
    """Whether the plan's conv call got weights packed for this path (1-D, non-empty)."""
    (line,) = [ln for ln in sess.artifact.plan_source.splitlines() if "conv_packed(" in ln]
    name = line.split("conv_packed(")[1].split(", ")[1]
    w = sess.artifact.consts[name]
    return w.ndim == 1 and w.size > 0


def _path(xs, ws, group=1, strides=None, pads=None, gemm_t=True):
    r = len(xs) - 2
    _, s, dl, p = K.attrs_norm(r, ws[2:], strides, None, pads)
    return S.conv_plan(tuple(xs), tuple(ws), group, s, dl, p, "NOTSET", False, gemm_t)[1]


def test_the_rule_on_real_shapes():
    assert _path((1, 512, 7, 7), (2048, 512, 1, 1)) == S.GEMM_T
    assert _path((1, 1024, 14, 14), (2048, 1024, 1, 1), strides=[2, 2]) == S.GEMM_T
    assert _path((1, 512, 14, 14), (512, 512, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1]) == S.GEMM_T
    assert _path((1, 1024, 7, 7), (128, 1024, 1, 1)) != S.GEMM_T  # the transposes cost more than the waste
    assert _path((1, 1024, 14, 14), (256, 1024, 1, 1)) != S.GEMM_T  # 94 % of lanes used


def test_which_shapes_take_it():
    assert _path((1, 32, 7, 7), (48, 32, 1, 1)) == S.GEMM_T  # 49 of 64 lanes
    assert _path((1, 32, 14, 14), (48, 32, 1, 1), strides=[2, 2]) == S.GEMM_T  # strided, 7x7 out
    assert _path((1, 32, 7, 7), (48, 32, 1, 1), gemm_t=False) == S.GEMM_1X1  # no such weights
    assert _path((1, 32, 12, 12), (48, 32, 1, 1)) == S.GEMM_1X1  # 144 positions fill whole vectors
    assert _path((1, 32, 14, 14), (48, 32, 1, 1)) != S.GEMM_T  # 196 of 208 lanes
    assert _path((1, 32, 7, 7), (48, 32, 3, 3), pads=[1, 1, 1, 1]) != S.GEMM_T  # 3x3 unstrided: Winograd
    assert _path((1, 32, 14, 14), (48, 32, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1]) == S.GEMM_T
    assert _path((1, 32, 7, 7), (48, 16, 1, 1), group=2) != S.GEMM_T
    assert not GT.gemm_t_applies((48, 32, 1, 1), 1, 300, (1, 1))  # beyond P_MAX


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
    assert _takes_path(sess)
    assert_close(sess.run(None, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ["", "Relu", "Clip", "LeakyRelu", "Sigmoid"])
@pytest.mark.parametrize("residual", [False, True])
def test_epilogues_match_ort(act, residual):
    m, feeds = _model((1, 32, 7, 7), (48, 32, 1, 1), {}, act=act, residual=residual)
    sess = _session(m)
    assert len(sess.artifact.ir().nodes) == 1  # Conv, or FusedConv with what it absorbed
    assert _takes_path(sess)
    assert_close(sess.run(None, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_float16():
    m, feeds = _model((1, 16, 7, 7), (32, 16, 1, 1), {}, act="Relu", dtype=np.float16)
    sess = _session(m)
    assert _takes_path(sess)
    got = sess.run(None, feeds)
    assert got[0].dtype == np.float16
    assert_close(got, run_ort(m, feeds), rtol=1e-2, atol=1e-2)


def test_isa_paths_and_threads_are_bitwise_equal(monkeypatch):
    """The engine sums every element in k order on either ISA path and any split: the results of
    AVX-512 (where the host has it) and AVX2, at 1 and 2 threads, are bitwise equal (2 threads:
    2*49*256*512 flops is over the engine's one-thread limit)."""
    m, feeds = _model((1, 256, 7, 7), (512, 256, 1, 1), {}, act="Relu", residual=True)
    one = _session(m, 1).run(None, feeds)[0]
    np.testing.assert_array_equal(_session(m, 2).run(None, feeds)[0], one)
    monkeypatch.setenv("JITORT_ISA", "avx2")
    np.testing.assert_array_equal(_session(m, 1).run(None, feeds)[0], one)
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
    assert _takes_path(sess)
    y = sess.run(None, {"x": x})[0]
    assert (y == y[:, :1]).all()


def test_a_shape_the_weights_were_not_prepared_for_is_refused():
    w = rand((48, 32, 1, 1), seed=2)
    wt, b = GT.pack_t_weights(w), GT.pad_t_bias(rand((48,), seed=3))
    kw = dict(w_shape=(48, 32, 1, 1), auto_pad="NOTSET", group=1, strides=(1, 1), dilations=(1, 1),
              pads=(0, 0, 0, 0), act=0)
    prm = K.epilogue_params(np.dtype(np.float32), 0.0, 0.0)
    x = rand((1, 32, 7, 7), seed=1)
    y = K.conv_packed(x, wt, b, prm, **kw)
    ref = np.einsum("mc,nchw->nmhw", w[:, :, 0, 0].astype(np.float64), x.astype(np.float64))
    np.testing.assert_allclose(y, ref + b[:48].reshape(1, 48, 1, 1), rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeException, match="transposed GEMM only"):
        K.conv_packed(rand((1, 32, 12, 12), seed=1), wt, b, prm, **kw)
