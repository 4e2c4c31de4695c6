"""QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearConcat, QLinearGlobalAveragePool
(com.microsoft) vs onnxruntime, uint8 and int8, broadcasting, channels_last; scales chosen so many
values fall on rounding ties (exact equality asserted); QGemm (transposes, per-column B, int32 C,
float or requantised Y), QLinearAveragePool (within one step: float sums in another order) and
NhwcMaxPool."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from oracle import make_model, run_ort

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
@pytest.mark.parametrize("dt,bshape", [(np.uint8, (3, 4, 5)), (np.int8, (5,)), (np.uint8, (4, 1)), (np.int8, (1,))])
def test_qlinear_binary(op, dt, bshape):
    inits = {"sa": np.array(0.05, F), "za": np.array(3, dt), "sb": np.array(0.02, F),
             "zb": np.array(-2 if dt == np.int8 else 7, dt),
             "sc": np.array(0.08 if op == "QLinearAdd" else 0.1, F), "zc": np.array(5, dt)}
    node = helper.make_node(op, ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain="com.microsoft")
    _run(node, {"a": _q((3, 4, 5), dt, 1), "b": _q(bshape, dt, 2)}, inits)


@pytest.mark.parametrize("op,attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {}),
                                      ("QLinearLeakyRelu", {"alpha": 0.3})])
@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_qlinear_unary(op, attrs, dt):
    inits = {"sx": np.array(0.05, F), "zx": np.array(10, dt),
             "sy": np.array(1 / 256 if op == "QLinearSigmoid" else 0.04, F),
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
    inits = {"sx": np.array(0.05, F), "zx": np.array(3, dt), "sy": np.array(0.03, F),
             "zy": np.array(-1 if dt == np.int8 else 2, dt)}
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft",
                            channels_last=channels_last)
    _run(node, {"x": _q((2, 6, 5, 7), dt, 6)}, inits)


QGEMM_GRID = [  # onnxruntime registers a quantised Y of A's type only
    # (A type, B type, transA, transB, per-column B, C, y (None: float output), alpha)
    (np.uint8, np.int8, 0, 0, False, False, None, 1.0),
    (np.uint8, np.uint8, 1, 0, True, True, None, 0.5),
    (np.int8, np.int8, 0, 1, False, True, np.int8, 1.0),
    (np.uint8, np.int8, 1, 1, True, False, np.uint8, 2.0),
    (np.uint8, np.int8, 0, 0, True, True, np.uint8, 1.0),
]


@pytest.mark.parametrize("adt,bdt,ta,tb,per_col,with_c,ydt,alpha", QGEMM_GRID)
def test_qgemm(adt, bdt, ta, tb, per_col, with_c, ydt, alpha):
    M, K, N = 5, 24, 7
    rng = np.random.default_rng(M * N + ta * 2 + tb)
    feeds = {"a": _q((K, M) if ta else (M, K), adt, 1)}
    inits = {"sa": np.array(0.03, F), "za": np.array(4, adt), "b": _q((N, K) if tb else (K, N), bdt, 2),
             "sb": rng.uniform(0.01, 0.05, N if per_col else ()).astype(F),
             "zb": (rng.integers(0, 6, N) if per_col else np.array(3)).astype(bdt)}
    ins = ["a", "sa", "za", "b", "sb", "zb", "", "", ""]
    if with_c:
        inits["c"] = rng.integers(-500, 500, (N,)).astype(np.int32)
        ins[6] = "c"
    if ydt is not None:
        inits["sy"], inits["zy"] = np.array(0.4, F), np.array(-3 if ydt == np.int8 else 120, ydt)
        ins[7:9] = ["sy", "zy"]
    while not ins[-1]:
        ins.pop()
    node = helper.make_node("QGemm", ins, ["y"], domain="com.microsoft", transA=ta, transB=tb, alpha=alpha)
    if ydt is not None:
        _run(node, feeds, inits)
        return
    m = make_model([node], {"a": (adt, list(feeds["a"].shape))}, ["y"], inits, extra_opsets=MS)
    got = ort.InferenceSession(m.SerializeToString()).run(None, feeds)[0]
    want = run_ort(m, feeds)[0]
    assert got.dtype == want.dtype == F and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)  # exact integer sums, one float32 product each


@pytest.mark.parametrize("dt,attrs,last", [
    (np.uint8, dict(kernel_shape=[2, 2]), 0),
    (np.int8, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 0),
    (np.uint8, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), 0),
    (np.uint8, dict(kernel_shape=[2, 3], strides=[1, 2], ceil_mode=1), 1),
    (np.int8, dict(kernel_shape=[3], auto_pad="SAME_UPPER"), 0),
])
def test_qlinear_average_pool(dt, attrs, last):
    shape = (2, 7, 6, 3) if last else ((2, 3, 9) if len(attrs["kernel_shape"]) == 1 else (2, 3, 7, 6))
    inits = {"sx": np.array(0.05, F), "zx": np.array(3, dt), "sy": np.array(0.03, F),
             "zy": np.array(-4 if dt == np.int8 else 9, dt)}
    node = helper.make_node("QLinearAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft",
                            channels_last=last, **attrs)
    feeds = {"x": _q(shape, dt, 3)}
    m = make_model([node], {"x": (dt, list(shape))}, ["y"], inits, extra_opsets=MS)
    got = ort.InferenceSession(m.SerializeToString()).run(None, feeds)[0]
    want = run_ort(m, feeds)[0]
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    # onnxruntime sums the window's float32 values in its own order: a sum on a rounding tie may land
    # one step away (seen: 1 to 2 elements of ~100); everything else is equal
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.03, diff


@pytest.mark.parametrize("dt,attrs", [
    (np.uint8, dict(kernel_shape=[2, 2])),
    (np.int8, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    (np.uint8, dict(kernel_shape=[2, 2], dilations=[2, 2], ceil_mode=1, strides=[2, 2])),
    (np.int8, dict(kernel_shape=[3, 2], auto_pad="SAME_UPPER", strides=[2, 1])),
])
def test_nhwc_max_pool(dt, attrs):
    node = helper.make_node("NhwcMaxPool", ["x"], ["y"], domain="com.microsoft", **attrs)
    _run(node, {"x": _q((2, 7, 6, 5), dt, 4)}, {})


def _lstm_model(D, I, H, direction, seq=5, batch=2, peep=False):
    rng = np.random.default_rng(D * 10 + I)
    inits = {"W": (0.4 * rng.standard_normal((D, 4 * H, I))).astype(F),
             "R": (0.4 * rng.standard_normal((D, 4 * H, H))).astype(F),
             "B": (0.2 * rng.standard_normal((D, 8 * H))).astype(F)}
    ins = ["x", "W", "R", "B", "", "h0", "c0"]
    if peep:
        inits["P"] = (0.2 * rng.standard_normal((D, 3 * H))).astype(F)
        ins.append("P")
    node = helper.make_node("LSTM", ins, ["y", "yh", "yc"], hidden_size=H, direction=direction)
    feeds = {"x": np.random.default_rng(5).uniform(-1, 1, (seq, batch, I)).astype(F),
             "h0": np.random.default_rng(6).uniform(-1, 1, (D, batch, H)).astype(F),
             "c0": np.random.default_rng(7).uniform(-1, 1, (D, batch, H)).astype(F)}
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y", "yh", "yc"], inits,
                   opset=14)
    return m, feeds


@pytest.mark.parametrize("direction,per_channel,peep", [("forward", False, False), ("bidirectional", True, True),
                                                        ("reverse", False, True)])
def test_dynamic_quantize_lstm(tmp_path, direction, per_channel, peep):
    """quantize_dynamic writes DynamicQuantizeLSTM; jitort runs it as the float LSTM of the exactly
    dequantised weights (checked against onnxruntime's LSTM on those weights, rtol 1e-5), which is
    within onnxruntime's own activation-quantisation error of its DynamicQuantizeLSTM (atol 3e-2)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from jitort.kernels.contrib_qlstm import dequantize_gates
    D = 2 if direction == "bidirectional" else 1
    m, feeds = _lstm_model(D, 6, 8, direction, peep=peep)
    src, dst = tmp_path / "lstm.onnx", tmp_path / "lstm_q.onnx"
    onnx.save(m, str(src))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)
    q = onnx.load(str(dst))
    node = next(n for n in q.graph.node if n.op_type == "DynamicQuantizeLSTM")
    got = ort.InferenceSession(q.SerializeToString()).run(None, feeds)
    for g_, w_ in zip(got, run_ort(q, feeds)):
        np.testing.assert_allclose(g_, w_, atol=3e-2, rtol=0)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    w = dequantize_gates(*(inits[node.input[k]] for k in (1, 8, 9)), "W")
    r = dequantize_gates(*(inits[node.input[k]] for k in (2, 10, 11)), "R")
    ref = onnx.ModelProto()
    ref.CopyFrom(m)
    for t in ref.graph.initializer:
        if t.name in ("W", "R"):
            t.CopyFrom(onnx.numpy_helper.from_array(w if t.name == "W" else r, t.name))
    for g_, w_ in zip(got, run_ort(ref, feeds)):
        np.testing.assert_allclose(g_, w_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_qlinear_binary_compiled_pass_is_the_numpy_path(op):
    """The one-pass kernel (same shapes, a scalar operand, or one repeated along the other's rows)
    gives the bits of the float32 formula requantised by numpy (``quant``), ties included."""
    from jitort.kernels import contrib_qlinear as Q
    rng = np.random.default_rng(9)
    a, b = _q((64, 129), np.uint8, 7), _q((64, 129), np.uint8, 8)
    args = (np.array(0.5, F), np.array(3, np.uint8), b, np.array(0.25, F), np.array(9, np.uint8),
            np.array(rng.choice([0.5, 1.0, 0.75]), F), np.array(4, np.uint8))
    fn = getattr(Q, op)
    fast = [fn(a, *args), fn(a[:1, :1].reshape(1), *args), fn(a, *args[:2], b[:1, :1], *args[3:]),
            fn(a, *args[:2], b[0], *args[3:]), fn(a[0], *args)]  # and a row repeated along the other
    ref = [Q.quant(v, np.array(1, F), args[-1], np.uint8, op) for v in (
        _float_op(op, a, b, args), _float_op(op, a[:1, :1].reshape(1), b, args), _float_op(op, a, b[:1, :1], args),
        _float_op(op, a, b[0], args), _float_op(op, a[0], b, args))]
    for f, r in zip(fast, ref):
        np.testing.assert_array_equal(f, r)


def _float_op(op, a, b, args):  # type: ignore[no-untyped-def]
    sa, za, _, sb, zb, sc, _ = args
    x1, x2 = a.astype(F) - F(za), b.astype(F) - F(zb)
    return (x1 * x2) * (F(sa) * F(sb) / F(sc)) if op == "QLinearMul" else x1 * (F(sa) / F(sc)) + x2 * (F(sb) / F(sc))
