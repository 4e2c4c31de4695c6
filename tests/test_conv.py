"""Conv, ConvTranspose and the conv-epilogue pass, against onnxruntime.

onnxruntime has no float64 Conv/ConvTranspose kernel and rejects SAME auto-padding with dilations,
so those cases use the numpy reference below (a direct transcription of the spec's sum).
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper

import jitort
from jitort.errors import Fail, InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.ir import verify
from jitort.kernels import conv as K
from jitort.kernels import conv_fused as F
from jitort.kernels import conv_setup as S
from jitort.kernels import threads as T
from jitort.kernels import convtranspose as KT
from jitort.kernels.registry import lower_node, run_call
from jitort.frontend.importer import import_model
from jitort.passes.conv_epilogue import fuse_conv_epilogue
from oracle import assert_close, check, make_model, node_model, rand, run_ort

def conv_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides: list[int], dilations: list[int],
             begin: list[int], out_sp: list[int], group: int) -> np.ndarray:
    """y[n, m, o] = b[m] + sum_{c, k} w[m, c, k] x[n, g*Cg + c, o*s - p + k*d] (zero outside)."""
    r = x.ndim - 2
    N, C = x.shape[:2]
    M = w.shape[0]
    Cg, Mg = C // group, M // group
    y = np.zeros((N, M) + tuple(out_sp))
    for ks in itertools.product(*[range(k) for k in w.shape[2:]]):
        idx = []
        valid = []
        for d in range(r):
            pos = np.arange(out_sp[d]) * strides[d] - begin[d] + ks[d] * dilations[d]
            valid.append((pos >= 0) & (pos < x.shape[2 + d]))
            idx.append(np.clip(pos, 0, x.shape[2 + d] - 1))
        xs = x[(slice(None), slice(None)) + np.ix_(*idx)]
        mask = np.ones(out_sp, bool)
        for d in range(r):
            mask = mask & valid[d].reshape([-1 if e == d else 1 for e in range(r)])
        xs = xs * mask
        for g in range(group):
            wk = w[(slice(g * Mg, (g + 1) * Mg), slice(None)) + ks]
            y[:, g * Mg:(g + 1) * Mg] += np.einsum("mc,nc...->nm...", wk, xs[:, g * Cg:(g + 1) * Cg])
    if b is not None:
        y += b.reshape((1, M) + (1,) * r)
    return y


# (x shape, w shape, attrs): 1-D / 2-D / 3-D, groups, depthwise, multipliers, strides, dilations,
# asymmetric pads, auto_pad modes, 1x1, odd sizes, batch > 1.
CONV_CASES = [
    ((2, 4, 9, 9), (6, 4, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 3, 10, 7), (5, 3, 3, 3), dict()),
    ((3, 4, 9, 11), (6, 4, 1, 1), dict()),
    ((2, 8, 9, 9), (6, 8, 1, 1), dict(strides=[2, 2])),
    ((1, 8, 7, 7), (4, 8, 1, 1), dict(pads=[1, 0, 0, 1])),
    ((2, 4, 9, 9), (6, 2, 3, 3), dict(group=2, strides=[2, 2])),
    ((2, 6, 8, 9), (9, 2, 2, 3), dict(group=3, dilations=[2, 1], pads=[0, 1, 1, 0])),
    ((2, 4, 9, 9), (8, 1, 3, 3), dict(group=4, strides=[2, 1], pads=[1, 0, 2, 1])),
    ((1, 5, 13, 12), (5, 1, 3, 3), dict(group=5, pads=[1, 1, 1, 1])),
    ((2, 5, 13, 12), (5, 1, 5, 5), dict(group=5, pads=[2, 2, 2, 2], strides=[2, 2])),
    ((1, 4, 9, 9), (4, 1, 3, 3), dict(group=4, dilations=[2, 2])),
    ((1, 4, 9, 9), (4, 1, 3, 3), dict(group=4, dilations=[2, 3], strides=[1, 2], pads=[2, 3, 1, 0])),
    ((1, 3, 11, 10), (5, 3, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 3, 11, 10), (5, 3, 4, 4), dict(auto_pad="SAME_LOWER", strides=[2, 3])),
    ((1, 3, 11, 10), (5, 3, 4, 4), dict(auto_pad="VALID", strides=[2, 3])),
    ((1, 3, 11, 10), (5, 3, 2, 2), dict(auto_pad="SAME_UPPER")),
    ((1, 3, 11, 10), (5, 3, 1, 1), dict(auto_pad="SAME_LOWER", strides=[3, 3])),
    ((1, 2, 8, 8), (3, 2, 3, 3), dict(pads=[3, 3, 3, 3])),
    ((2, 4, 9), (6, 4, 3), dict(pads=[2, 1])),
    ((2, 4, 17), (6, 2, 4), dict(group=2, strides=[3], dilations=[2])),
    ((1, 6, 20), (6, 1, 3), dict(group=6, pads=[1, 1])),
    ((1, 3, 21), (4, 3, 1), dict(auto_pad="SAME_UPPER", strides=[2])),
    ((2, 4, 5, 6, 7), (6, 4, 3, 2, 3), dict(pads=[1, 0, 1, 1, 1, 0], strides=[1, 2, 2])),
    ((1, 4, 5, 6, 7), (4, 1, 3, 3, 3), dict(group=4, pads=[1, 1, 1, 1, 1, 1])),
    ((1, 4, 5, 6, 7), (8, 2, 1, 1, 1), dict(group=2)),
    ((1, 2, 6, 6, 6), (3, 2, 2, 2, 2), dict(auto_pad="SAME_LOWER", strides=[2, 2, 2], dilations=[1, 1, 1])),
    ((1, 16, 30, 31), (32, 16, 3, 3), dict(pads=[1, 1, 1, 1])),  # several GEMM column blocks
    ((1, 64, 40, 40), (8, 64, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 32, 15, 17), (8, 32, 3, 3), dict(strides=[2, 2], pads=[1, 0, 1, 2])),  # im2col (K > 256)
    ((2, 3, 40, 45), (13, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),  # implicit GEMM, row tails
    ((1, 16, 10, 11), (7, 16, 4, 4), dict(dilations=[2, 1], strides=[1, 3])),  # implicit GEMM, K = 256
    ((1, 2, 9, 70), (20, 2, 1, 5), dict(strides=[2, 4], pads=[0, 2, 0, 2])),  # column phases of stride 4
    ((1, 40, 13, 30), (10, 40, 3, 3), dict(pads=[1, 1, 1, 1], group=1, dilations=[1, 2])),  # implicit, K blocks
    ((2, 36, 9, 20), (14, 18, 3, 3), dict(pads=[1, 1, 1, 1], group=2)),  # implicit, K blocks, half-tile tails
    ((1, 5, 6, 100), (9, 5, 3, 3), dict(pads=[1, 1, 1, 1])),  # implicit, rows of 100: a 64-column tile + 3 vectors
    ((1, 3, 9, 147), (13, 3, 3, 3), dict(strides=[2, 2])),  # implicit, rows of 73: 64 columns + a 9-column tail
    ((1, 40, 5, 55), (7, 40, 3, 3), dict(pads=[1, 1, 1, 1])),  # implicit, K blocks, rows of 55 (one tile, masked)
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES, ids=[f"{i}" for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("weights", ["const", "input"])
def test_conv_vs_ort(xs, ws, attrs, weights):
    x = rand(xs, seed=1)
    w = rand(ws, seed=2, low=-1, high=1)
    b = rand((ws[0],), seed=3)
    bias = sum(xs) % 2 == 0  # half the cases without B
    inits = {"w": w, "b": b} if bias else {"w": w}
    if weights == "const":
        m = node_model("Conv", {"x": x}, initializers=inits, opset=11, **attrs)
        check(m, {"x": x}, rtol=1e-4, atol=1e-4)
    else:
        feeds = {"x": x, **inits}
        check(node_model("Conv", feeds, opset=11, **attrs), feeds, rtol=1e-4, atol=1e-4)


WINOGRAD_CASES = [  # 3x3, stride 1, >= 16 channels: Winograd F(2x2, 3x3)
    ((1, 16, 8, 8), 16, dict(pads=[1, 1, 1, 1])),
    ((2, 17, 9, 11), 19, dict(pads=[1, 1, 1, 1])),
    ((1, 16, 7, 5), 24, dict()),
    ((1, 16, 10, 9), 16, dict(pads=[0, 2, 1, 0])),
    ((1, 20, 13, 12), 16, dict(auto_pad="SAME_UPPER")),
    ((2, 32, 28, 28), 48, dict(pads=[1, 1, 1, 1])),  # one block of 14 tile rows
    ((1, 32, 32, 34), 32, dict(pads=[1, 1, 1, 1])),  # blocks of 15 tile rows and of 1 (winograd.wino_rows)
    ((1, 96, 20, 20), 160, dict(pads=[1, 1, 1, 1])),  # blocks of 6 and 4 rows (60 tiles by the weights' rule)
    ((1, 64, 6, 70), 16, dict(pads=[1, 1, 1, 1])),
]


@pytest.mark.usefixtures("all_conv_paths")  # these channel counts take im2col on AVX-512
@pytest.mark.parametrize("xs,m,attrs", WINOGRAD_CASES, ids=[str(i) for i in range(len(WINOGRAD_CASES))])
def test_conv_winograd(xs, m, attrs):
    x, w, b = rand(xs, seed=1), rand((m, xs[1], 3, 3), seed=2, low=-1, high=1), rand((m,), seed=3)
    assert K.winograd_applies(w.shape, 1, (1, 1), (1, 1))
    check(node_model("Conv", {"x": x}, initializers={"w": w, "b": b}, **attrs), {"x": x}, rtol=1e-4, atol=1e-4)
    feeds = {"x": x, "w": w}
    check(node_model("Conv", feeds, **attrs), feeds, rtol=1e-4, atol=1e-4)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    got = F.FusedConv(x64, w64, auto_pad=attrs.get("auto_pad", "NOTSET"), group=1, pads=attrs.get("pads"),
                 activation="Relu")
    ref = K.Conv(x64, w64, auto_pad=attrs.get("auto_pad", "NOTSET"), group=1, pads=attrs.get("pads"),
                 dilations=[1, 1])
    _, _, _, p = K.attrs_norm(2, (3, 3), None, None, attrs.get("pads"))
    out_sp, begin = S.conv_geometry(xs[2:], (3, 3), (1, 1), (1, 1), p, attrs.get("auto_pad", "NOTSET"))
    np.testing.assert_allclose(ref, conv_ref(x64, w64, None, [1, 1], [1, 1], list(begin), list(out_sp), 1),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got, np.maximum(ref, 0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("xs,ws,attrs", [
    ((1, 16, 12, 12), (40, 16, 1, 1), dict()),  # 1x1 GEMM
    ((1, 8, 12, 12), (40, 4, 1, 1), dict(group=2)),  # grouped 1x1
    ((1, 16, 12, 12), (40, 16, 3, 3), dict(pads=[1, 1, 1, 1])),  # Winograd
    ((1, 3, 23, 23), (40, 3, 3, 3), dict(strides=[2, 2])),  # implicit GEMM
    ((1, 32, 12, 12), (40, 32, 3, 3), dict(strides=[2, 2])),  # im2col
    ((1, 4, 12, 12), (40, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),  # depthwise, multiplier 10
])
def test_output_channels_with_equal_weights_are_bitwise_equal(xs, ws, attrs):
    """Every path computes each output element the same way whatever its channel (onnxruntime does;
    light_squeezenet's expected output depends on it): equal weights (and, across groups, equal
    inputs) give bitwise equal output channels."""
    x = rand(xs, seed=1, low=-100, high=100)
    cg = ws[1]
    x = np.tile(x[:, :cg], (1, xs[1] // cg) + (1,) * (len(xs) - 2))  # groups see equal inputs
    w = np.broadcast_to(rand((1,) + ws[1:], seed=2), ws).copy()
    b = np.full(ws[0], 0.02, np.float32)
    y = jitort.InferenceSession(node_model("Conv", {"x": x}, initializers={"w": w, "b": b}, **attrs)
                                .SerializeToString()).run(None, {"x": x})[0]
    assert (y == y[:, :1]).all()


@pytest.mark.parametrize("xs,ws,attrs", [
    ((2, 3, 3, 2), (6, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1])),  # depthwise, planes under a vector
    ((2, 3, 2, 9), (6, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1], strides=[1, 2])),
    ((2, 3, 4, 13), (7, 3, 3, 3), dict(pads=[1, 1, 1, 1])),  # implicit GEMM, short rows
    ((1, 40, 3, 14), (7, 40, 3, 3), dict(pads=[1, 1, 1, 1])),  # implicit GEMM, K blocks
    ((1, 3, 3, 113), (7, 3, 3, 3), dict(strides=[2, 2])),  # implicit GEMM, rows of 56 (2 x 3.5 AVX-512 vectors)
    ((1, 4, 3, 50), (7, 4, 3, 3), dict(pads=[1, 1, 1, 1])),  # implicit GEMM, rows of 50, the last one's tail
    ((2, 1, 77), (9, 1, 20), dict(pads=[3, 2], strides=[7])),  # window, position tiles past the end
])
@pytest.mark.parametrize("residual", [False, True])
def test_kernels_write_nothing_past_the_output(xs, ws, attrs, residual):
    """Vectors that run past a row spill into later rows of the plane; never past the plane."""
    x, w, b = rand(xs, seed=1), rand(ws, seed=2), rand((ws[0],), seed=3)
    group = attrs.get("group", 1)
    r = len(xs) - 2
    _, s_, dl, p = K.attrs_norm(r, ws[2:], attrs.get("strides"), None, attrs.get("pads"))
    out_shape, path, geo, (od, oh, ow), xsh, o3s, nsc, _, _, _ = K.conv_plan(xs, ws, group, s_, dl, p, "NOTSET", False)
    buf = np.full(int(np.prod(o3s)) + 64, 12345.0, np.float32)
    o3 = buf[:-64].reshape(o3s)
    z = rand(o3s, seed=4) if residual else None
    wp = K.pack_conv_weights(w, group, np.dtype(np.float32))
    prm, sc = K.epilogue_params(np.float32, 0, 0), T.scratch(nsc, np.float32)
    if path == K.WINDOW:
        K.window_kernel(x.reshape(xsh), wp, b, o3, z, geo, ow, 1, prm, None, sc, 0, 1)
    else:
        if path == K.IM2COL:  # an AVX-512 host takes im2col for rows this short: run the implicit GEMM anyway
            path, sc = K.IMPLICIT, T.scratch(S._scratch_size(K.IMPLICIT, xs, ws, geo, (od, oh, ow), 0), np.float32)
        assert path in (K.DIRECT, K.IMPLICIT)
        kernel = K._conv_direct if path == K.DIRECT else K._conv_implicit
        kernel(x.reshape(xsh), wp, b, o3, z, geo, od, oh, ow, 1, prm, None, sc, 0, 1)
    assert (buf[-64:] == 12345.0).all()
    ref = conv_ref(x.astype(np.float64), w.astype(np.float64), b, list(s_), list(dl), list(geo[13 - r:]),
                   [od, oh, ow][3 - r:], group)
    if residual:
        ref = ref + z.reshape(out_shape)
    np.testing.assert_allclose(o3.reshape(out_shape), np.maximum(ref, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("xs,ws,attrs", [
    ((2, 16, 12, 12), (40, 16, 1, 1), dict()),  # 1x1 GEMM
    ((1, 16, 20, 20), (40, 16, 3, 3), dict(pads=[1, 1, 1, 1])),  # implicit GEMM
    ((1, 32, 64, 64), (40, 32, 3, 3), dict(pads=[1, 1, 1, 1])),  # Winograd, 5 tile-row blocks
    ((1, 40, 24, 40), (40, 40, 3, 3), dict(pads=[1, 1, 1, 1], dilations=[1, 2])),  # implicit GEMM, K blocks
    ((1, 16, 400, 21), (24, 16, 3, 3), dict(strides=[2, 2])),  # im2col, 4 row blocks
    ((1, 12, 20, 20), (24, 1, 3, 3), dict(group=12, pads=[1, 1, 1, 1])),  # depthwise
])
def test_threads_split_the_work_not_the_sums(xs, ws, attrs, monkeypatch):
    """With several threads each output element is still computed by one thread in the same order:
    the result is bitwise the single-thread one."""
    x, w, b = rand(xs, seed=1), rand(ws, seed=2, low=-1, high=1), rand((ws[0],), seed=3)
    kw = dict(auto_pad="NOTSET", group=attrs.get("group", 1), pads=attrs.get("pads"), strides=attrs.get("strides"),
              dilations=attrs.get("dilations"), activation="Relu")
    monkeypatch.setattr(T, "intra_op_threads", lambda: 1)
    one = F.FusedConv(x, w, b, **kw)
    monkeypatch.setattr(T, "intra_op_threads", lambda: 3)
    monkeypatch.setattr(T, "PART_FLOPS", 1.0)
    np.testing.assert_array_equal(F.FusedConv(x, w, b, **kw), one)


def test_conv_opset1_and_kernel_shape_attr():
    x, w = rand((2, 3, 8, 8)), rand((4, 3, 3, 3), seed=1)
    check(node_model("Conv", {"x": x}, initializers={"w": w}, opset=1, kernel_shape=[3, 3], strides=[2, 2]),
          {"x": x}, rtol=1e-4, atol=1e-4)


def test_conv_float16():
    x = rand((2, 4, 9, 9), np.float16, low=-1, high=1)
    w = rand((6, 4, 3, 3), np.float16, seed=1, low=-1, high=1)
    b = rand((6,), np.float16, seed=2)
    check(node_model("Conv", {"x": x}, initializers={"w": w, "b": b}, pads=[1, 1, 1, 1]), {"x": x},
          rtol=1e-2, atol=2e-2)
    dw = rand((4, 1, 3, 3), np.float16, seed=3)
    check(node_model("Conv", {"x": x, "w": dw}, group=4), {"x": x, "w": dw}, rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize("xs,ws,attrs", [CONV_CASES[i] for i in (0, 2, 6, 9, 19, 22)])
def test_conv_float64_vs_reference(xs, ws, attrs):
    x, w, b = rand(xs, np.float64, seed=1), rand(ws, np.float64, seed=2), rand((ws[0],), np.float64, seed=3)
    m = node_model("Conv", {"x": x}, initializers={"w": w, "b": b}, **attrs)
    got = jitort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    r = x.ndim - 2
    k, s, dl, p = K.attrs_norm(r, ws[2:], attrs.get("strides"), attrs.get("dilations"), attrs.get("pads"))
    out_sp, begin = S.conv_geometry(xs[2:], k, s, dl, p, attrs.get("auto_pad", "NOTSET"))
    ref = conv_ref(x, w, b, list(s), list(dl), list(begin), list(out_sp), attrs.get("group", 1))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_conv_same_with_dilation_follows_spec():
    # onnxruntime refuses SAME_* with dilations; jitort implements the spec (output = ceil(in / stride)).
    x, w = rand((1, 2, 9, 8)), rand((3, 2, 3, 3), seed=1)
    for ap in ("SAME_UPPER", "SAME_LOWER"):
        m = node_model("Conv", {"x": x}, initializers={"w": w}, auto_pad=ap, dilations=[2, 2], strides=[2, 1])
        got = jitort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
        assert got.shape == (1, 3, 5, 8)
        out_sp, begin = S.conv_geometry((9, 8), (3, 3), (2, 1), (2, 2), (0,) * 4, ap)
        ref = conv_ref(x.astype(np.float64), w.astype(np.float64), None, [2, 1], [2, 2], list(begin), list(out_sp), 1)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_conv_nan_inf_propagate():
    x = rand((1, 2, 6, 6))
    x[0, 0, 2, 3] = np.nan
    x[0, 1, 4, 4] = np.inf
    w = rand((3, 2, 3, 3), seed=1)
    check(node_model("Conv", {"x": x}, initializers={"w": w}, pads=[1, 1, 1, 1]), {"x": x}, rtol=1e-4, atol=1e-4)


def test_conv_errors():
    x, w = rand((1, 4, 6, 6)), rand((3, 3, 3, 3), seed=1)
    m = node_model("Conv", {"x": x, "w": w})
    with pytest.raises(Exception):
        run_ort(m, {"x": x, "w": w})
    with pytest.raises(Fail, match="Conv"):
        jitort.InferenceSession(m.SerializeToString()).run(None, {"x": x, "w": w})
    with pytest.raises(InvalidArgument, match="Conv"):  # output would be empty
        K.Conv(rand((1, 3, 2, 2)), w, auto_pad="NOTSET", group=1)
    with pytest.raises(OrtNotImplemented, match="Conv"):
        K.Conv(rand((1, 3, 2, 2, 2, 2)), rand((3, 3, 1, 1, 1, 1)), auto_pad="NOTSET", group=1)


# --- the epilogue: run-time parameters of one compiled kernel ------------------------------------

def _act_ref(y: np.ndarray, act: str, alpha: float, beta: float) -> np.ndarray:
    return {
        "": lambda v: v,
        "Relu": lambda v: np.maximum(v, 0),
        "Clip": lambda v: np.clip(v, alpha, beta),
        "LeakyRelu": lambda v: np.where(v >= 0, v, alpha * v),
        "HardSigmoid": lambda v: np.clip(alpha * v + beta, 0, 1),
        "HardSwish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1),
        "Sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "SiLU": lambda v: v / (1 + np.exp(-v)),
    }[act](y)


@pytest.mark.parametrize("act,alpha,beta", [("", 0, 0), ("Relu", 0, 0), ("Clip", -1.0, 2.5), ("LeakyRelu", 0.1, 0),
                                            ("HardSigmoid", 0.2, 0.5), ("HardSwish", 0, 0), ("Sigmoid", 0, 0),
                                            ("SiLU", 0, 0)])
@pytest.mark.parametrize("case", ["gemm", "1x1", "depthwise"])
def test_epilogue_activations(act, alpha, beta, case):
    ws = {"gemm": (6, 4, 3, 3), "1x1": (6, 4, 1, 1), "depthwise": (4, 1, 3, 3)}[case]
    group = 4 if case == "depthwise" else 1
    x, w, b = rand((2, 4, 7, 8), seed=1), rand(ws, seed=2), rand((ws[0],), seed=3)
    plain = K.Conv(x, w, b, auto_pad="NOTSET", group=group, pads=[1, 1, 1, 1])
    got = F.FusedConv(x, w, b, auto_pad="NOTSET", group=group, pads=[1, 1, 1, 1], activation=act, alpha=alpha,
                 beta=beta)
    np.testing.assert_allclose(got, _act_ref(plain.astype(np.float64), act, alpha, beta), rtol=1e-5, atol=1e-6)


def test_new_activation_or_batch_does_not_compile():
    """A kernel's part function compiles once for the activations fused into the GEMM tile (none,
    Relu, Clip) and once for the others (``convutil.epilogue_kind``); beyond that, no activation or
    batch size compiles anything (jitort.cache's count of Numba compiles)."""
    from jitort import cache
    x, w = rand((1, 4, 7, 8)), rand((6, 4, 3, 3), seed=2)
    F.FusedConv(x, w, auto_pad="NOTSET", group=1, activation="Relu")
    F.FusedConv(x, w, auto_pad="NOTSET", group=1, activation="Sigmoid")
    mark = cache.compile_count()
    for act in K.ACTIVATIONS:
        F.FusedConv(rand((3, 4, 9, 5)), w, auto_pad="NOTSET", group=1, activation=act, alpha=0.5, beta=1.0)
    assert cache.compiled_since(mark) == []
    with pytest.raises(OrtNotImplemented, match="Tanh"):
        F.FusedConv(x, w, auto_pad="NOTSET", group=1, activation="Tanh")


def test_epilogue_nan_propagates():
    x, w = rand((1, 2, 4, 4)), rand((3, 2, 1, 1), seed=2)
    x[0, :, 1, 1] = np.nan
    for act in ("Relu", "Clip", "LeakyRelu", "HardSwish"):
        y = F.FusedConv(x, w, auto_pad="NOTSET", group=1, activation=act, alpha=-1.0, beta=1.0)
        assert np.isnan(y[0, :, 1, 1]).all() and not np.isnan(y[0, :, 0, 0]).any(), act


# --- the pass ------------------------------------------------------------------------------------

def _bn_inits(m: int, seed: int = 5) -> dict[str, np.ndarray]:
    return {"sc": rand((m,), seed=seed, low=0.5, high=2), "bb": rand((m,), seed=seed + 1),
            "mu": rand((m,), seed=seed + 2), "var": rand((m,), seed=seed + 3, low=0.1, high=2)}


def _chain(act_nodes: list[onnx.NodeProto], bias: bool = True, bn: bool = True, opset: int = 17,
           extra_out: list[str] | None = None, w_shape: tuple[int, ...] = (6, 4, 3, 3), group: int = 1
           ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    x = rand((2, 4, 9, 8), seed=1)
    inits = {"w": rand(w_shape, seed=2), **_bn_inits(w_shape[0])}
    if bias:
        inits["b"] = rand((w_shape[0],), seed=3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"], name="Conv_3", pads=[1, 1, 1, 1],
                              group=group)]
    last = "c"
    if bn:
        nodes.append(helper.make_node("BatchNormalization", ["c", "sc", "bb", "mu", "var"], ["n"], epsilon=1e-3,
                                      name="BatchNormalization_4"))
        last = "n"
    for k, a in enumerate(act_nodes):
        a.input[0] = last if a.input[0] == "$" else a.input[0]
        for j, i in enumerate(a.input):
            if i == "$":
                a.input[j] = last
        nodes.append(a)
    out = nodes[-1].output[0]
    m = make_model(nodes, {"x": (np.float32, x.shape)}, [out] + (extra_out or []), inits, opset)
    return m, {"x": x}


def _run_fused(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Import, run the pass, then evaluate node by node through the registry's lowering (library ops
    only; elementwise nodes left behind run through numpy's spelling of the op)."""
    g = import_model(m)
    g = fuse_conv_epilogue(g)
    verify(g)
    env = {k: v.const for k, v in g.values.items() if v.const is not None}
    env.update(feeds)
    for n in g.nodes:
        if n.op_type in _NUMPY_OPS:
            env[n.outputs[0]] = _NUMPY_OPS[n.op_type](*[env[i] for i in n.inputs if i])
            continue
        out = run_call(lower_node(n, g), env)
        for name, v in zip(n.outputs, out if isinstance(out, tuple) else (out,)):
            env[name] = v
    return [env[o] for o in g.outputs], [n.op_type for n in g.nodes], g.notes


_NUMPY_OPS = {"Relu": lambda v: np.maximum(v, np.float32(0)), "Add": np.add, "Mul": np.multiply,
              "Sigmoid": lambda v: (1 / (1 + np.exp(-v))).astype(v.dtype),
              "Clip": lambda v, lo=None, hi=None: np.clip(v, lo, hi)}


ACT_CASES = [
    ("Relu", [helper.make_node("Relu", ["$"], ["y"], name="Relu_5")], 17),
    ("LeakyRelu", [helper.make_node("LeakyRelu", ["$"], ["y"], alpha=0.2, name="act")], 17),
    ("HardSigmoid", [helper.make_node("HardSigmoid", ["$"], ["y"], alpha=0.3, beta=0.4, name="act")], 17),
    ("HardSwish", [helper.make_node("HardSwish", ["$"], ["y"], name="act")], 17),
    ("Sigmoid", [helper.make_node("Sigmoid", ["$"], ["y"], name="act")], 17),
    ("Clip", [helper.make_node("Clip", ["$"], ["y"], min=-0.5, max=1.5, name="act")], 9),
    ("Clip", [helper.make_node("Clip", ["$", "lo", "hi"], ["y"], name="act")], 13),
    ("Clip", [helper.make_node("Clip", ["$", "", "hi"], ["y"], name="act")], 13),
    ("SiLU", [helper.make_node("Sigmoid", ["$"], ["s"], name="sig"), helper.make_node("Mul", ["$", "s"], ["y"])], 17),
    ("SiLU", [helper.make_node("Sigmoid", ["$"], ["s"], name="sig"), helper.make_node("Mul", ["s", "$"], ["y"])], 17),
]


@pytest.mark.parametrize("name,acts,opset", ACT_CASES, ids=[f"{a[0]}-{i}" for i, a in enumerate(ACT_CASES)])
@pytest.mark.parametrize("bn", [True, False])
def test_pass_absorbs_activation(name, acts, opset, bn):
    acts = [onnx.NodeProto.FromString(a.SerializeToString()) for a in acts]
    m, feeds = _chain(acts, bn=bn, opset=opset, bias=not bn)
    if any("lo" in a.input or "hi" in a.input for a in acts):
        m.graph.initializer.extend([onnx.numpy_helper.from_array(np.array(-0.25, np.float32), "lo"),
                                    onnx.numpy_helper.from_array(np.array(0.75, np.float32), "hi")])
    got, ops, notes = _run_fused(m, feeds)
    assert ops == ["FusedConv"], ops
    assert len(notes) == 1 and notes[0].startswith("conv epilogue: Conv_3 + "), notes
    if bn:
        assert "BatchNormalization_4" in notes[0]
    assert_close(got, run_ort(m, feeds), rtol=1e-4, atol=1e-4)
    assert_close(jitort.InferenceSession(m.SerializeToString()).run(None, feeds), run_ort(m, feeds), 1e-4, 1e-4)


def test_pass_note_format_and_bn_without_bias():
    m, feeds = _chain([helper.make_node("Relu", ["$"], ["y"], name="Relu_5")], bias=False, bn=True)
    got, ops, notes = _run_fused(m, feeds)
    assert notes == ["conv epilogue: Conv_3 + BatchNormalization_4 + Relu_5"]
    assert_close(got, run_ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_pass_depthwise_bn_relu():
    m, feeds = _chain([helper.make_node("Relu", ["$"], ["y"])], w_shape=(4, 1, 3, 3), group=4)
    got, ops, _ = _run_fused(m, feeds)
    assert ops == ["FusedConv"]
    assert_close(got, run_ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_pass_refuses():
    # the conv output is also a graph output: nothing may be folded away
    m, feeds = _chain([helper.make_node("Relu", ["$"], ["y"])], bn=False, extra_out=["c"])
    got, ops, notes = _run_fused(m, feeds)
    assert ops == ["Conv", "Relu"] and notes == []
    assert_close(got, run_ort(m, feeds), rtol=1e-4, atol=1e-4)
    # two consumers of the conv output
    m, feeds = _chain([helper.make_node("Relu", ["$"], ["r"]), helper.make_node("Add", ["$", "r"], ["y"])],
                      bn=False)
    _, ops, notes = _run_fused(m, feeds)
    assert ops == ["Conv", "Relu", "Add"] and notes == []
    # Clip bound that is not a constant
    m, feeds = _chain([helper.make_node("Clip", ["$", "x2"], ["y"])], bn=False)
    m.graph.input.append(helper.make_tensor_value_info("x2", onnx.TensorProto.FLOAT, []))
    feeds["x2"] = np.array(0.1, np.float32)
    got, ops, _ = _run_fused(m, feeds)
    assert ops == ["Conv", "Clip"]
    assert_close(got, run_ort(m, feeds), rtol=1e-4, atol=1e-4)
    # BN whose statistics are graph inputs: the activation after it stays too
    m, feeds = _chain([helper.make_node("Relu", ["$"], ["y"])], bn=True)
    keep = [i for i in m.graph.initializer if i.name != "mu"]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    m.graph.input.append(helper.make_tensor_value_info("mu", onnx.TensorProto.FLOAT, [6]))
    feeds["mu"] = rand((6,), seed=9)
    got, ops, _ = _run_fused(m, feeds)
    assert ops == ["Conv", "BatchNormalization", "Relu"]


def test_pass_silu_with_shared_sigmoid_is_refused():
    acts = [helper.make_node("Sigmoid", ["$"], ["s"]), helper.make_node("Mul", ["$", "s"], ["y"])]
    m, feeds = _chain(acts, bn=False, extra_out=["s"])
    _, ops, notes = _run_fused(m, feeds)
    assert ops == ["Conv", "Sigmoid", "Mul"] and notes == []


def test_pass_chain_of_convs():
    x = rand((1, 3, 12, 12), seed=1)
    inits = {"w1": rand((8, 3, 3, 3), seed=2), "w2": rand((8, 1, 3, 3), seed=3), "w3": rand((5, 8, 1, 1), seed=4),
             **_bn_inits(8)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["a", "sc", "bb", "mu", "var"], ["an"]),
             helper.make_node("Clip", ["an"], ["ar"], min=0.0, max=6.0),
             helper.make_node("Conv", ["ar", "w2"], ["d"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["d"], ["ds"]),
             helper.make_node("Mul", ["d", "ds"], ["dm"]),
             helper.make_node("Conv", ["dm", "w3"], ["y"])]
    m = make_model(nodes, {"x": (np.float32, x.shape)}, ["y"], inits, opset=9)
    got, ops, notes = _run_fused(m, {"x": x})
    assert ops == ["FusedConv", "FusedConv", "Conv"] and len(notes) == 2
    assert_close(got, run_ort(m, {"x": x}), rtol=1e-4, atol=1e-4)


# --- ConvTranspose -------------------------------------------------------------------------------

CT_CASES = [
    ((2, 4, 5, 6), (4, 3, 3, 3), dict()),
    ((2, 4, 5, 6), (4, 3, 3, 3), dict(strides=[2, 2], pads=[1, 0, 1, 2])),
    ((2, 4, 5, 6), (4, 3, 3, 3), dict(strides=[2, 3], output_padding=[1, 2])),
    ((2, 4, 5, 6), (4, 3, 3, 2), dict(strides=[2, 2], dilations=[2, 1])),
    ((2, 4, 5, 6), (4, 2, 3, 3), dict(group=2, strides=[2, 2])),
    ((1, 4, 5, 6), (4, 1, 3, 3), dict(group=4, strides=[1, 2], pads=[1, 1, 1, 1])),
    ((1, 2, 5, 5), (2, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 5, 5), (2, 3, 4, 4), dict(strides=[3, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 5, 5), (2, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 2, 5, 5), (2, 3, 4, 4), dict(strides=[3, 2], auto_pad="SAME_LOWER")),
    ((1, 2, 5, 5), (2, 3, 4, 4), dict(strides=[3, 2], auto_pad="VALID")),
    ((1, 2, 5, 5), (2, 3, 3, 3), dict(strides=[2, 2], output_shape=[10, 11])),
    ((1, 2, 5, 5), (2, 3, 3, 3), dict(strides=[2, 2], output_shape=[12, 9], auto_pad="SAME_UPPER")),
    ((1, 2, 5, 5), (2, 3, 3, 3), dict(strides=[2, 2], output_shape=[9, 10], auto_pad="SAME_LOWER")),
    ((1, 2, 5, 5), (2, 3, 3, 3), dict(strides=[2, 2], output_shape=[10, 11], output_padding=[1, 1])),
    ((2, 3, 7), (3, 2, 3), dict(strides=[2], pads=[1, 2])),
    ((2, 3, 7), (3, 2, 4), dict(strides=[3], dilations=[2], output_padding=[2])),
    ((1, 2, 3, 4, 5), (2, 3, 2, 2, 3), dict(strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 0])),
    ((1, 16, 30, 30), (16, 8, 4, 4), dict(strides=[2, 2], pads=[1, 1, 1, 1])),  # several column blocks
]


@pytest.mark.parametrize("xs,ws,attrs", CT_CASES, ids=[f"{i}" for i in range(len(CT_CASES))])
@pytest.mark.parametrize("weights", ["const", "input"])
def test_convtranspose_vs_ort(xs, ws, attrs, weights):
    x, w = rand(xs, seed=1), rand(ws, seed=2, low=-1, high=1)
    inits = {"w": w}
    if len(xs) % 2 == 0:
        inits["b"] = rand((ws[1] * attrs.get("group", 1),), seed=3)
    if weights == "const":
        check(node_model("ConvTranspose", {"x": x}, initializers=inits, **attrs), {"x": x}, rtol=1e-4, atol=1e-4)
    else:
        feeds = {"x": x, **inits}
        check(node_model("ConvTranspose", feeds, **attrs), feeds, rtol=1e-4, atol=1e-4)


def test_convtranspose_float16_float64():
    x, w = rand((1, 2, 5, 5), np.float16, low=-1, high=1), rand((2, 3, 3, 3), np.float16, seed=1, low=-1, high=1)
    check(node_model("ConvTranspose", {"x": x}, initializers={"w": w}, strides=[2, 2]), {"x": x}, 1e-2, 2e-2)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    got = KT.ConvTranspose(x64, w64, auto_pad="NOTSET", group=1, strides=[2, 2])
    ref = run_ort(node_model("ConvTranspose", {"x": x64.astype(np.float32)},
                             initializers={"w": w64.astype(np.float32)}, strides=[2, 2]), {"x": x.astype(np.float32)})
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref[0], rtol=1e-5, atol=1e-5)


def test_convtranspose_bad_output_shape():
    x, w = rand((1, 2, 5, 5)), rand((2, 3, 3, 3), seed=1)
    m = node_model("ConvTranspose", {"x": x}, initializers={"w": w}, strides=[2, 2], output_shape=[13, 12])
    with pytest.raises(Exception):
        run_ort(m, {"x": x})
    with pytest.raises(InvalidArgument, match="output_shape"):
        jitort.InferenceSession(m.SerializeToString()).run(None, {"x": x})


def test_pass_end_to_end_through_session():
    """Once the compiler's pass list runs fuse_conv_epilogue, a Conv+BN+Relu model is one conv call."""
    import inspect

    import jitort.compiler as compiler
    m, feeds = _chain([helper.make_node("Relu", ["$"], ["y"], name="Relu_5")])
    sess = jitort.InferenceSession(m.SerializeToString())
    assert_close(sess.run(None, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)
    if "fuse_conv_epilogue" not in inspect.getsource(compiler):
        pytest.skip("fuse_conv_epilogue is not in the compiler's pass list yet")
    plan = sess.artifact.plan_source
    assert "BatchNormalization" not in plan.split("def run")[1].replace("# Conv", "")
    assert plan.count("conv_packed(") == 1 and "act=1" in plan


@pytest.mark.parametrize("dims", [[1, 64, 14, 14], ["N", 64, "H", "W"]])
def test_lowering_prepares_the_weights_of_the_path_that_runs(dims):
    """A 3x3 stride-1 conv whose input shape is known at lowering gets the Winograd weights only
    (no packed GEMM copy); with symbolic dims both are kept and the kernel picks per call. Both
    agree with onnxruntime."""
    from onnx import TensorProto, numpy_helper
    rng = np.random.default_rng(5)
    w = rng.standard_normal((128, 64, 3, 3)).astype(np.float32)  # (not conv_lanes.lanes_rule's: M > 96)
    x = rng.standard_normal((1, 64, 14, 14)).astype(np.float32)  # Winograd on every host
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = jitort.InferenceSession(m.SerializeToString())
    assert_close(sess.run(None, {"x": x}), run_ort(m, {"x": x}), rtol=1e-4, atol=1e-4)
    import re
    (line,) = [ln for ln in sess.artifact.plan_source.splitlines() if "conv_packed(" in ln]
    names = re.search(r"conv_packed\((\w+), (\w+), (\w+), (\w+), (\w+),", line).groups()
    packed, b, prm, wino = (sess.artifact.consts[n] for n in names[1:])
    assert isinstance(wino, np.ndarray)
    assert (packed.size == 0) == isinstance(dims[0], int)
    if isinstance(dims[0], int):  # a shape the weights were not prepared for is refused, not computed wrong
        with pytest.raises(Exception, match="Winograd path only"):
            K.conv_packed(np.zeros((1, 64, 3, 3), np.float32), packed, b, prm, wino, w_shape=(128, 64, 3, 3),
                          auto_pad="NOTSET", group=1, strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), act=0)


def test_winograd_only_weights_run_winograd_whatever_the_host_rule(monkeypatch):
    """Weights prepared for Winograd only (the lowering's host took Winograd for the shape) run
    Winograd even where this host's rule would take im2col (an artifact built on another host)."""
    from jitort.kernels import conv_setup as S
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    b = np.zeros(16, np.float32)
    kw = dict(w_shape=(16, 16, 3, 3), auto_pad="NOTSET", group=1, strides=(1, 1), dilations=(1, 1),
              pads=(1, 1, 1, 1), act=0)
    u = K.winograd_weights(w, np.dtype(np.float32))
    prm = K.epilogue_params(np.float32, 0, 0)
    want = K.conv_packed(x, K.pack_conv_weights(w, 1, np.dtype(np.float32)), b, prm, None, **kw)
    for wide in (False, True):
        monkeypatch.setattr(S, "WIDE_TILE_RULES", wide)
        S.conv_plan.cache_clear()
        got = K.conv_packed(x, np.empty(0, np.float32), b, prm, u, **kw)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    S.conv_plan.cache_clear()
