"""The conv with output channels in vector lanes (kernels/conv_lanes.py): against the spec's sum
(test_conv's ``conv_ref``, float64) on both vector widths (``JITORT_ISA=avx2`` runs the AVX2 kernel on
an AVX-512 host), with and without a residual, each epilogue, channel counts that leave partial
vectors and pairs, pads that crop or are asymmetric, planes smaller than a tile and sums over several
K blocks; bitwise equal across widths and thread counts (one fma chain per element); chosen by the
lowering where its rule says (on AVX-512 hosts) and then agreeing with onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import jitort
from jitort.kernels import conv as K
from jitort.kernels import conv_setup as S
from jitort.kernels import threads as T
from jitort.kernels.conv_lanes import pack_lanes
from jitort.kernels.gemm import host_isa
from oracle import assert_close, rand, run_ort
from test_conv import conv_ref

ISAS = ["avx2"] + (["avx512"] if host_isa() == "avx512" else [])

# (x shape, w shape, pads): 3x3 on 14x14 (one K block), M = 40 (a partial pair, partial lanes),
# K = 576 (three K blocks), 5x5, asymmetric pads, no pads, planes smaller than a tile (1x1 and 3x3
# outputs), a batch of two, a 7x7 plane with a remainder tile.
CASES = [
    ((1, 16, 14, 14), (32, 16, 3, 3), (1, 1, 1, 1)),
    ((1, 8, 9, 11), (40, 8, 3, 3), (1, 1, 1, 1)),
    ((1, 64, 10, 10), (24, 64, 3, 3), (1, 1, 1, 1)),
    ((1, 6, 12, 13), (17, 6, 5, 5), (2, 2, 2, 2)),
    ((1, 5, 9, 9), (33, 5, 3, 3), (0, 1, 2, 0)),
    ((1, 7, 8, 8), (16, 7, 3, 3), (0, 0, 0, 0)),
    ((1, 9, 3, 3), (20, 9, 3, 3), (0, 0, 0, 0)),
    ((1, 4, 1, 1), (12, 4, 3, 3), (1, 1, 1, 1)),
    ((2, 12, 7, 7), (48, 12, 3, 3), (1, 1, 1, 1)),
]
ACTS = [(0, 0.0, 0.0), (1, 0.0, 0.0), (2, -0.5, 0.75)]


def _lanes(x, w, b, pads, act=0, lo=0.0, hi=0.0, z=None):  # type: ignore[no-untyped-def]
    M = w.shape[0]
    bl = np.zeros(-(-M // 32) * 32, np.float32)
    bl[:M] = b
    return K.conv_packed(x, pack_lanes(w), bl, K.epilogue_params(np.float32, lo, hi), None, z, w_shape=w.shape,
                         auto_pad="NOTSET", group=1, strides=(1, 1), dilations=(1, 1), pads=pads, act=act, lanes=1)


def _want(x, w, b, pads, act, lo, hi, z):  # type: ignore[no-untyped-def]
    out_sp = [x.shape[2] + pads[0] + pads[2] - w.shape[2] + 1, x.shape[3] + pads[1] + pads[3] - w.shape[3] + 1]
    y = conv_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), [1, 1], [1, 1],
                 [pads[0], pads[1]], out_sp, 1)
    if z is not None:
        y = y + z
    return np.maximum(y, 0) if act == 1 else np.clip(y, lo, hi) if act == 2 else y


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("xs,ws,pads", CASES, ids=[str(i) for i in range(len(CASES))])
def test_lanes_conv_vs_the_spec(xs, ws, pads, isa, monkeypatch):
    monkeypatch.setenv("JITORT_ISA", isa)
    x, w, b = rand(xs, seed=1), rand(ws, seed=2, low=-1, high=1), rand((ws[0],), seed=3)
    for residual in (False, True):
        for act, lo, hi in ACTS:
            want = _want(x, w, b, pads, act, lo, hi, None)
            z = rand(want.shape, seed=4) if residual else None
            if residual:
                want = _want(x, w, b, pads, act, lo, hi, z)
            got = _lanes(x, w, b, pads, act, lo, hi, z)
            assert got.shape == want.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_lanes_conv_is_bitwise_the_same_across_widths_and_threads(monkeypatch):
    """One fma chain per element in k order: the same bits from the AVX2 and AVX-512 kernels and from
    any split between threads."""
    x, w, b = rand((2, 40, 9, 10), seed=5), rand((56, 40, 3, 3), seed=6, low=-1, high=1), rand((56,), seed=7)
    z = rand((2, 56, 9, 10), seed=8)
    monkeypatch.setattr(T, "intra_op_threads", lambda: 1)
    runs = []
    for isa in ISAS:
        monkeypatch.setenv("JITORT_ISA", isa)
        runs.append(_lanes(x, w, b, (1, 1, 1, 1), 1, z=z))
    monkeypatch.setattr(T, "intra_op_threads", lambda: 3)
    monkeypatch.setattr(T, "PART_FLOPS", 1.0)
    runs.append(_lanes(x, w, b, (1, 1, 1, 1), 1, z=z))
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


def test_lanes_only_weights_refuse_another_shape():
    """Weights packed for this path only (the lowering's shape) refuse an input it cannot compute,
    instead of computing something wrong."""
    x, w = rand((1, 8, 6, 6), seed=1), rand((16, 8, 3, 3), seed=2)
    M = 16
    with pytest.raises(Exception, match="lanes path only"):
        K.conv_packed(x, pack_lanes(w), np.zeros(32, np.float32), K.epilogue_params(np.float32, 0, 0), None,
                      w_shape=(M, 8, 3, 3), auto_pad="NOTSET", group=1, strides=(2, 2), dilations=(1, 1),
                      pads=(1, 1, 1, 1), act=0, lanes=1)


def test_lowering_takes_lanes_where_the_rule_says():
    """A 3x3 conv 64 -> 32 on 28x28 with a residual Add and Relu (what the rule takes on AVX-512
    hosts) agrees with onnxruntime, and its plan uses the lanes weights there (never elsewhere)."""
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((32, 64, 3, 3)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(32).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
                           helper.make_node("Add", ["y", "r"], ["s"]), helper.make_node("Relu", ["s"], ["o"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 28, 28]),
                           helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 32, 28, 28])],
                          [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": rng.standard_normal((1, 64, 28, 28)).astype(np.float32),
             "r": rng.standard_normal((1, 32, 28, 28)).astype(np.float32)}
    sess = jitort.InferenceSession(m.SerializeToString())
    assert_close(sess.run(None, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)
    (line,) = [ln for ln in sess.artifact.plan_source.splitlines() if "conv_packed(" in ln]
    assert ("lanes=1" in line) == (S.VB == 64)
