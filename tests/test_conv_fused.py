"""jitort's FusedConv (domain "jitort"): the residual Add/Sum (+ activation) taken into the conv's
epilogue by the conv epilogue pass, on every conv path, against onnxruntime; and the window path
for audio front ends (1-D, few input channels, long kernels, large strides)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort
from jitort.errors import InvalidArgument
from jitort.kernels import conv as K
from jitort.kernels import conv_fused as F
from jitort.kernels import threads as T
from jitort.kernels.registry import lookup
from oracle import assert_close, make_model, rand, run_ort

# every conv kernel is covered on every host (conv_setup.WIDE_TILE_RULES)
pytestmark = pytest.mark.usefixtures("all_conv_paths")


def _residual_model(xs, ws, attrs, act, sum_op=False, swap=False, opset=13):
    """y = act(Conv(x) + z) with z a second input of the conv output's shape."""
    x, w, b = rand(xs, seed=1), rand(ws, seed=2, low=-0.5, high=0.5), rand((ws[0],), seed=3)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", **attrs)
    ys = run_ort(make_model([conv], {"x": (np.float32, xs)}, ["c"], {"w": w, "b": b}, opset), {"x": x})[0].shape
    ins = ["z", "c"] if swap else ["c", "z"]
    nodes = [conv, helper.make_node("Sum" if sum_op else "Add", ins, ["s"], name="add")]
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["s"], ["y"], name="act"))
    elif act == "Clip":
        nodes.append(helper.make_node("Clip", ["s", "lo", "hi"], ["y"], name="act"))
    elif act == "Sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["s"], ["y"], name="act"))
    out = "y" if act else "s"
    inits = {"w": w, "b": b, "lo": np.array(-0.5, np.float32), "hi": np.array(1.0, np.float32)}
    m = make_model(nodes, {"x": (np.float32, xs), "z": (np.float32, ys)}, [out], inits, opset)
    return m, {"x": x, "z": rand(ys, seed=4)}


def _session(m, threads=1):
    so = jitort.SessionOptions()
    so.intra_op_num_threads = threads
    return jitort.InferenceSession(m.SerializeToString(), so)


# one case per conv path: (x, w, attrs)
PATHS = {
    "1x1": ((1, 16, 9, 10), (24, 16, 1, 1), dict()),
    "im2col": ((1, 8, 19, 15), (12, 8, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    # two K blocks (K > 256), 13 output channels (a double row tile and a partial one), 32 + 3 columns
    "1x1 K blocks": ((1, 300, 5, 7), (13, 300, 1, 1), dict()),
    "im2col K blocks": ((1, 40, 9, 9), (19, 40, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "implicit": ((2, 4, 9, 20), (10, 4, 3, 3), dict(pads=[1, 1, 1, 1])),
    "winograd": ((1, 16, 10, 9), (16, 16, 3, 3), dict(pads=[1, 1, 1, 1])),
    "depthwise": ((1, 6, 9, 11), (6, 1, 3, 3), dict(group=6, pads=[1, 1, 1, 1])),
    "window": ((1, 1, 300), (20, 1, 32), dict(strides=[16], pads=[4, 4])),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("act", ["Relu", "", "Sigmoid"])
def test_residual_epilogue_matches_ort(path, act):
    xs, ws, attrs = PATHS[path]
    m, feeds = _residual_model(xs, ws, attrs, act)
    sess = _session(m)
    g = sess.artifact.ir()
    assert [(n.op_type, n.domain) for n in g.nodes] == [("FusedConv", "jitort")], [n.op_type for n in g.nodes]
    n = g.nodes[0]
    assert n.inputs[3] == "z" and n.attrs["activation"] == act
    assert [a.name for a in n.attrs["_absorbed"]] == ["add"] + (["act"] if act else [])
    assert not any(k in n.attrs for k in ("_activation", "_alpha", "_beta"))
    assert_close(sess.run(None, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sum_op,swap", [(True, False), (False, True)])
def test_residual_sum_and_either_operand(sum_op, swap):
    xs, ws, attrs = PATHS["1x1"]
    m, feeds = _residual_model(xs, ws, attrs, "Clip", sum_op=sum_op, swap=swap, opset=13)
    sess = _session(m)
    assert [n.op_type for n in sess.artifact.ir().nodes] == ["FusedConv"]
    assert_close(sess.run(None, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)


def test_residual_from_a_later_conv_moves_the_fused_node():
    """Add(conv_a, conv_b) with conv_b after conv_a in the graph: the FusedConv reads conv_b's
    output, so it runs where the Add was."""
    x = rand((1, 8, 6, 6), seed=1)
    inits = {"wa": rand((8, 8, 1, 1), seed=2), "wb": rand((8, 8, 3, 3), seed=3)}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    m = make_model(nodes, {"x": (np.float32, x.shape)}, ["y"], inits, 13)
    sess = _session(m)
    ops = [(n.name, n.op_type) for n in sess.artifact.ir().nodes]
    assert ops == [("conv_b", "Conv"), ("conv_a", "FusedConv")], ops
    assert_close(sess.run(None, {"x": x}), run_ort(m, {"x": x}), rtol=1e-4, atol=1e-4)


def test_residual_operand_read_elsewhere_stays():
    """Add(conv_a, conv_b) fused into conv_a, and conv_b's output also feeds a Relu: conv_b must keep
    its output (the FusedConv reads it), so it does not absorb that Relu."""
    x = rand((1, 8, 6, 6), seed=1)
    inits = {"wa": rand((8, 8, 1, 1), seed=2), "wb": rand((8, 8, 1, 1), seed=3)}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b"),
             helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Relu", ["b"], ["r"], name="relu_b"),
             helper.make_node("Mul", ["s", "r"], ["y"], name="mul")]
    m = make_model(nodes, {"x": (np.float32, x.shape)}, ["y"], inits, 13)
    sess = _session(m)
    ops = [(n.name, n.op_type) for n in sess.artifact.ir().nodes]
    assert ("conv_b", "Conv") in ops and ("conv_a", "FusedConv") in ops, ops
    assert_close(sess.run(None, {"x": x}), run_ort(m, {"x": x}), rtol=1e-4, atol=1e-4)


def test_residual_refused():
    xs, ws, attrs = PATHS["1x1"]
    # broadcast operand: not the output's shape
    x, w = rand(xs, seed=1), rand(ws, seed=2)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "z"], ["y"])]
    m = make_model(nodes, {"x": (np.float32, xs), "z": (np.float32, (1, 24, 1, 1))}, ["y"], {"w": w}, 13)
    sess = _session(m)
    assert [n.op_type for n in sess.artifact.ir().nodes] == ["Conv", "FusedElementwise"]
    feeds = {"x": x, "z": rand((1, 24, 1, 1), seed=5)}
    assert_close(sess.run(None, feeds), run_ort(m, feeds), rtol=1e-4, atol=1e-4)
    # the conv output is read twice: Add(c, c)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "c"], ["y"])]
    m = make_model(nodes, {"x": (np.float32, xs)}, ["y"], {"w": w}, 13)
    assert [n.op_type for n in _session(m).artifact.ir().nodes] != ["FusedConv"]


def test_fused_conv_is_a_registered_op():
    d = lookup("FusedConv", "jitort", 1)
    assert d.fn is F.FusedConv
    x, w, b = rand((1, 4, 6, 7), seed=1), rand((5, 4, 3, 3), seed=2), rand((5,), seed=3)
    z = rand((1, 5, 4, 5), seed=4)
    got = F.FusedConv(x, w, b, z, activation="Clip", alpha=-0.2, beta=0.7)
    ref = np.clip(K.Conv(x, w, b, auto_pad="NOTSET", group=1) + z, -0.2, 0.7)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidArgument, match="residual"):
        F.FusedConv(x, w, b, z[:, :, :3])


@pytest.mark.parametrize("path", ["1x1", "implicit", "window", "depthwise"])
def test_residual_threads_bitwise(path, monkeypatch):
    xs, ws, attrs = PATHS[path]
    x, w, b = rand(xs, seed=1), rand(ws, seed=2), rand((ws[0],), seed=3)
    kw = dict(auto_pad="NOTSET", group=attrs.get("group", 1), pads=attrs.get("pads"), strides=attrs.get("strides"),
              activation="Relu")
    z = np.zeros_like(F.FusedConv(x, w, b, **kw)) + rand((1,), seed=6)
    monkeypatch.setattr(T, "intra_op_threads", lambda: 1)
    one = F.FusedConv(x, w, b, z, **kw)
    monkeypatch.setattr(T, "intra_op_threads", lambda: 2)
    monkeypatch.setattr(T, "PART_FLOPS", 1.0)
    np.testing.assert_array_equal(F.FusedConv(x, w, b, z, **kw), one)


# --- the window path: audio front ends -----------------------------------------------------------

AUDIO = [
    ((1, 1, 576), (258, 1, 256), dict(strides=[128])),  # learned STFT of a voice-activity chunk
    ((2, 1, 1001), (40, 1, 64), dict(strides=[16], pads=[7, 3])),  # odd length, asymmetric pads
    ((1, 2, 517), (33, 2, 25), dict(strides=[5], dilations=[2])),  # two channels, dilation
    ((1, 4, 130), (16, 4, 8), dict(strides=[3], auto_pad="SAME_UPPER")),
    ((1, 1, 200), (8, 1, 16), dict(strides=[4], pads=[-2, 5])),  # negative pad crops the input
]


@pytest.mark.parametrize("xs,ws,attrs", AUDIO, ids=[str(i) for i in range(len(AUDIO))])
def test_window_conv_matches_ort(xs, ws, attrs):
    assert K.window_applies(ws, 1)
    x, w, b = rand(xs, seed=1), rand(ws, seed=2, low=-0.3, high=0.3), rand((ws[0],), seed=3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)]
    m = make_model(nodes, {"x": (np.float32, xs)}, ["y"], {"w": w, "b": b}, 17)
    if min(attrs.get("pads", [0])) < 0:  # onnxruntime refuses negative pads: the spec's sum instead
        from test_conv import conv_ref
        p = attrs["pads"]
        ow = (xs[2] + p[0] + p[1] - ws[2]) // attrs["strides"][0] + 1
        ref = [conv_ref(x.astype(np.float64), w.astype(np.float64), b, attrs["strides"], [1], [p[0]], [ow],
                        1).astype(np.float32)]
    else:
        ref = run_ort(m, {"x": x})
    assert_close(_session(m).run(None, {"x": x}), ref, rtol=1e-4, atol=1e-4)
    two = _session(m, threads=2).run(None, {"x": x})
    np.testing.assert_array_equal(two[0], _session(m).run(None, {"x": x})[0])


# --- depthwise small planes: channels in vector lanes ----------------------------------------------

DW_SMALL = [
    ((2, 40, 7, 7), dict(pads=[1, 1, 1, 1])),
    ((1, 17, 9, 11), dict(pads=[1, 0, 1, 2], strides=[2, 2])),  # a partial channel block, odd sizes
    ((1, 33, 5, 6), dict(pads=[2, 2, 2, 2], dilations=[2, 2])),
]


@pytest.mark.parametrize("xs,attrs", DW_SMALL, ids=[str(i) for i in range(len(DW_SMALL))])
@pytest.mark.parametrize("residual", [False, True])
def test_depthwise_small_planes_match_ort_and_the_plane_kernel(xs, attrs, residual, monkeypatch):
    from jitort.kernels import conv_dwblock, conv_setup
    C = xs[1]
    ws = (C, 1, 3, 3)
    kw = dict(auto_pad="NOTSET", group=C, pads=attrs.get("pads"), strides=attrs.get("strides"),
              dilations=attrs.get("dilations"), activation="Relu")
    x, w, b = rand(xs, seed=1), rand(ws, seed=2), rand((C,), seed=3)
    y = F.FusedConv(x, w, b, **kw)
    z = rand(y.shape, seed=4) if residual else None
    assert conv_setup.conv_plan(xs, ws, C, tuple(attrs.get("strides", [1, 1])), tuple(attrs.get("dilations", [1, 1])),
                             tuple(attrs["pads"]), "NOTSET", False)[1] == conv_setup.DWBLOCK
    got = F.FusedConv(x, w, b, z, **kw)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=C, **attrs)]
    feeds = {"x": x}
    if residual:
        nodes.append(helper.make_node("Add", ["c", "z"], ["s"]))
        feeds["z"] = z
    nodes.append(helper.make_node("Relu", ["s" if residual else "c"], ["y"]))
    ins = {"x": (np.float32, xs), **({"z": (np.float32, y.shape)} if residual else {})}
    m = make_model(nodes, ins, ["y"], {"w": w, "b": b}, 13)
    assert_close([got], run_ort(m, feeds), rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(conv_dwblock, "_MAX_OW", 0)  # the per-plane kernel: the same sums, bitwise
    conv_setup.conv_plan.cache_clear()
    try:
        np.testing.assert_array_equal(F.FusedConv(x, w, b, z, **kw), got)
    finally:
        conv_setup.conv_plan.cache_clear()


@pytest.mark.parametrize("cshape", [(8, 1, 1), (1, 8, 1, 1), (1,), ()])
def test_per_channel_mul_add_fold_into_the_conv(cshape):
    """Conv -> BatchNormalization -> Mul(scale) -> Add(shift) -> Relu (caffe2's BN + scale layers, as
    in inception_v2): one FusedConv, matching onnxruntime."""
    rng = np.random.default_rng(3)
    m = 8
    inits = {"w": rand((m, 4, 3, 3), seed=1), "b": rand((m,), seed=2), "sc": rand((m,), seed=3, low=0.5, high=1.5),
             "bb": rand((m,), seed=4), "mu": rand((m,), seed=5), "var": rand((m,), seed=6, low=0.5, high=1.5),
             "s": rng.uniform(0.5, 2.0, cshape).astype(np.float32), "t": rng.uniform(-1, 1, cshape).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "sc", "bb", "mu", "var"], ["n"]),
             helper.make_node("Mul", ["n", "s"], ["p"]), helper.make_node("Add", ["t", "p"], ["q"]),
             helper.make_node("Relu", ["q"], ["y"])]
    model = make_model(nodes, {"x": (np.float32, [1, 4, 9, 9])}, ["y"], inits, 13)
    sess = jitort.InferenceSession(model.SerializeToString())
    assert [n.op_type for n in sess.artifact.ir().nodes] == ["FusedConv"]
    feeds = {"x": rand((1, 4, 9, 9), seed=7)}
    assert_close(sess.run(None, feeds), run_ort(model, feeds), rtol=1e-5, atol=1e-5)


def test_mul_that_broadcasts_beyond_the_channels_stays():
    """A Mul whose constant varies along a spatial axis is no per-channel scale: not folded."""
    inits = {"w": rand((8, 4, 1, 1), seed=1), "s": rand((1, 1, 1, 5), seed=2)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    model = make_model(nodes, {"x": (np.float32, [1, 4, 5, 5])}, ["y"], inits, 13)
    sess = jitort.InferenceSession(model.SerializeToString())
    assert len(sess.artifact.ir().nodes) == 2  # the Conv, then the Mul (alone or in a fused kernel)
    feeds = {"x": rand((1, 4, 5, 5), seed=3)}
    assert_close(sess.run(None, feeds), run_ort(model, feeds), rtol=1e-5, atol=1e-5)
