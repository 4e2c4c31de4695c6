"""ConvInteger and QLinearConv (kernels/qconv.py) against onnxruntime and an exact numpy oracle.

onnxruntime's u8 x s8 paths accumulate pairs of products in int16 with saturation (vpmaddubsw), so
with extreme inputs they are not exact: mixed-signedness cases compare with onnxruntime on inputs
where |x| * |w| stays small, and with the numpy oracle (exact int64 sums) on full-range inputs.
onnxruntime also has no per-channel ConvInteger zero point and no QLinearConv with x and y of
different types: the numpy oracle covers those.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import jitort
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from oracle import assert_close, check, node_model, run_jitort

U8, S8 = np.uint8, np.int8


def q(shape: Any, dt: Any, seed: int, lo: int | None = None, hi: int | None = None) -> np.ndarray:
    info = np.iinfo(dt)
    rng = np.random.default_rng(seed)
    return rng.integers(info.min if lo is None else lo, (info.max if hi is None else hi) + 1, size=shape).astype(dt)


def conv_ref(x: np.ndarray, w: np.ndarray, group: int = 1, strides: Any = None, dilations: Any = None,
             pads: Any = None) -> np.ndarray:
    """Exact integer convolution (int64) of already-centred x [N, C, *sp] and w [M, C/group, *k]."""
    r = x.ndim - 2
    strides = strides or [1] * r
    dilations = dilations or [1] * r
    pads = pads or [0] * (2 * r)
    xp = np.pad(x.astype(np.int64), [(0, 0), (0, 0)] + [(pads[d], pads[d + r]) for d in range(r)])
    k = w.shape[2:]
    out_sp = [(xp.shape[2 + d] - (dilations[d] * (k[d] - 1) + 1)) // strides[d] + 1 for d in range(r)]
    N, C, M = x.shape[0], x.shape[1], w.shape[0]
    Cg, Mg = C // group, M // group
    out = np.zeros((N, M, *out_sp), np.int64)
    for tap in itertools.product(*[range(kk) for kk in k]):
        sl = tuple(slice(tap[d] * dilations[d], tap[d] * dilations[d] + (out_sp[d] - 1) * strides[d] + 1, strides[d])
                   for d in range(r))
        xs = xp[(slice(None), slice(None)) + sl]
        for g in range(group):
            wt = w[(slice(g * Mg, (g + 1) * Mg), slice(None)) + tap].astype(np.int64)
            out[:, g * Mg:(g + 1) * Mg] += np.einsum("mc,nc...->nm...", wt, xs[:, g * Cg:(g + 1) * Cg])
    return out


def centred(v: np.ndarray, zp: np.ndarray | None, per_channel_axis0: bool = False) -> np.ndarray:
    c = v.astype(np.int64)
    if zp is None:
        return c
    z = zp.astype(np.int64)
    if per_channel_axis0 and z.size > 1:
        z = z.reshape((-1,) + (1,) * (v.ndim - 1))
    return c - z


def requant_ref(acc: np.ndarray, xs: float, ws: np.ndarray, ys: float, yzp: np.ndarray) -> np.ndarray:
    """onnxruntime's requantisation: float32 multiplier x_scale * w_scale / y_scale, float32 product,
    round half to even, zero point, saturate."""
    M = acc.shape[1]
    s = ((np.float32(xs) * np.asarray(ws, np.float32).reshape(-1)) / np.float32(ys)).astype(np.float32)
    s = np.broadcast_to(s, (M,)).reshape((1, M) + (1,) * (acc.ndim - 2))
    v = np.rint(acc.astype(np.float32) * s) + np.float32(yzp)
    info = np.iinfo(yzp.dtype)
    return np.clip(v, info.min, info.max).astype(yzp.dtype)


# --- ConvInteger ---------------------------------------------------------------------------------------

GEOMS = [  # x shape, w shape, attrs
    ((1, 1, 5, 5), (1, 1, 3, 3), {}),
    ((2, 4, 7, 6), (6, 2, 3, 3), dict(group=2, pads=[1, 0, 2, 1], strides=[2, 1])),
    ((2, 3, 9, 8), (4, 3, 3, 2), dict(dilations=[2, 1], pads=[2, 1, 2, 1])),
    ((1, 6, 6, 7), (6, 1, 3, 3), dict(group=6, pads=[1, 1, 1, 1])),  # depthwise
    ((2, 8, 5, 5), (4, 8, 1, 1), {}),  # 1x1
    ((1, 3, 8, 8), (2, 3, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 3, 8, 7), (2, 3, 2, 3), dict(auto_pad="SAME_LOWER")),
    ((1, 3, 8, 7), (2, 3, 3, 3), dict(auto_pad="VALID", strides=[1, 2])),
    ((3, 2, 11), (4, 2, 3), dict(pads=[2, 1], strides=[2], dilations=[2])),  # 1-D
    ((1, 2, 4, 5, 6), (3, 2, 2, 3, 2), dict(pads=[1, 0, 1, 0, 1, 1], strides=[1, 2, 1])),  # 3-D
]


@pytest.mark.parametrize("const_w", [False, True], ids=["feed_w", "const_w"])
@pytest.mark.parametrize("geom", range(len(GEOMS)))
@pytest.mark.parametrize("xd,wd", [(U8, U8), (U8, S8), (S8, S8)], ids=["u8u8", "u8s8", "s8s8"])
def test_convinteger(xd, wd, geom, const_w):
    xs, ws, attrs = GEOMS[geom]
    x, w = q(xs, xd, 1), q(ws, wd, 2)
    feeds = {"x": x, "xz": np.array(xd(7))}
    inits = {"w": w, "wz": np.array(wd(3))}
    if not const_w:
        feeds, inits = {**feeds, **inits}, {}
    m = node_model("ConvInteger", feeds, initializers=inits, input_names=["x", "w", "xz", "wz"], opset=10, **attrs)
    got = check(m, feeds)
    if "auto_pad" not in attrs:
        ref = conv_ref(centred(x, feeds["xz"]), centred(w, (feeds | inits)["wz"]), attrs.get("group", 1),
                       attrs.get("strides"), attrs.get("dilations"), attrs.get("pads"))
        assert np.array_equal(got[0], ref.astype(np.int32))


@pytest.mark.parametrize("geom", [1, 3, 8])
def test_convinteger_s8u8(geom):
    """x int8, w uint8: onnxruntime on a moderate range, the exact oracle on the full range."""
    xs, ws, attrs = GEOMS[geom]
    x, w = q(xs, S8, 3, -60, 60), q(ws, U8, 4, 0, 100)
    feeds = {"x": x, "w": w, "xz": np.array(S8(-3)), "wz": np.array(U8(50))}
    check(node_model("ConvInteger", feeds, input_names=["x", "w", "xz", "wz"], opset=10, **attrs), feeds)
    feeds |= {"x": q(xs, S8, 5), "w": q(ws, U8, 6)}
    got = run_jitort(node_model("ConvInteger", feeds, input_names=["x", "w", "xz", "wz"], opset=10, **attrs), feeds)
    ref = conv_ref(centred(feeds["x"], feeds["xz"]), centred(feeds["w"], feeds["wz"]), attrs.get("group", 1),
                   attrs.get("strides"), attrs.get("dilations"), attrs.get("pads"))
    assert np.array_equal(got[0], ref.astype(np.int32))


@pytest.mark.parametrize("names", [["x", "w"], ["x", "w", "xz"], ["x", "w", "", "wz"]], ids=str)
def test_convinteger_optional_zero_points(names):
    x, w = q((2, 3, 6, 5), U8, 1), q((4, 3, 3, 3), U8, 2)
    feeds = {"x": x, "w": w, "xz": np.array(U8(128)), "wz": np.array(U8(100))}
    feeds = {k: v for k, v in feeds.items() if k in names}
    check(node_model("ConvInteger", feeds, input_names=names, opset=10, pads=[1, 1, 1, 1]), feeds)


@pytest.mark.parametrize("const_w", [False, True])
def test_convinteger_per_channel_w_zero_point(const_w):
    """onnxruntime supports only a per-tensor w_zero_point here; the spec allows one per output channel."""
    x, w, wz = q((2, 4, 6, 7), U8, 1), q((6, 2, 3, 3), S8, 2), q((6,), S8, 3)
    feeds = {"x": x, "xz": np.array(U8(9))}
    inits = {"w": w, "wz": wz}
    if not const_w:
        feeds, inits = {**feeds, **inits}, {}
    m = node_model("ConvInteger", feeds, initializers=inits, input_names=["x", "w", "xz", "wz"], opset=10, group=2,
                   pads=[1, 2, 0, 1], strides=[1, 2])
    ref = conv_ref(centred(x, feeds["xz"]), centred(w, wz, True), 2, [1, 2], None, [1, 2, 0, 1])
    assert np.array_equal(run_jitort(m, feeds)[0], ref.astype(np.int32))


def test_convinteger_large_sums_exact():
    """K = 64 * 5 * 5 = 1600 taps of extreme products: sums far beyond float32's exact range (2**24)."""
    x = np.full((1, 64, 6, 6), 255, U8)
    x[0, :, ::2] = 0
    w = np.zeros((3, 64, 5, 5), U8)
    w[1] = 255
    w[2, ::2] = 255
    feeds = {"x": x, "w": w, "xz": np.array(U8(0)), "wz": np.array(U8(128))}
    m = node_model("ConvInteger", feeds, input_names=["x", "w", "xz", "wz"], opset=10, pads=[2, 2, 2, 2])
    got = run_jitort(m, feeds)[0]
    ref = conv_ref(centred(x, feeds["xz"]), centred(w, feeds["wz"]), pads=[2, 2, 2, 2])
    assert np.abs(ref).max() > 2 ** 24
    assert np.array_equal(got, ref.astype(np.int32))
    assert_close([got], run_ort_list(m, feeds))


def run_ort_list(m: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from oracle import run_ort
    return run_ort(m, feeds)


def test_convinteger_batch_change():
    """A new batch size runs through the same compiled kernel and stays exact."""
    w = q((4, 3, 3, 3), U8, 2)
    m = node_model("ConvInteger", {"x": q((1, 3, 5, 5), U8, 1)}, initializers={"w": w}, input_names=["x", "w"],
                   opset=10, pads=[1, 1, 1, 1])
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    sess = jitort.InferenceSession(m.SerializeToString())
    for n in (1, 3, 2):
        x = q((n, 3, 5, 5), U8, n)
        ref = conv_ref(x, w, pads=[1, 1, 1, 1])
        assert np.array_equal(sess.run(None, {"x": x})[0], ref.astype(np.int32))


def _raises(m: Any, feeds: dict[str, np.ndarray], exc: type) -> None:
    with pytest.raises(exc):
        jitort.InferenceSession(m.SerializeToString()).run(None, feeds)


def test_convinteger_errors():
    x, w = q((1, 2, 5, 5), U8, 1), q((3, 2, 3, 3), U8, 2)
    f = {"x": x, "w": w, "xz": np.array([1, 2], U8)}
    _raises(node_model("ConvInteger", f, input_names=["x", "w", "xz"], opset=10), f, InvalidArgument)
    f = {"x": x, "w": w, "xz": np.array(U8(1)), "wz": np.array([1, 2], U8)}
    _raises(node_model("ConvInteger", f, input_names=["x", "w", "xz", "wz"], opset=10), f, InvalidArgument)
    f = {"x": q((1, 3, 5, 5), U8, 1), "w": w}
    _raises(node_model("ConvInteger", f, opset=10), f, InvalidArgument)
    f = {"x": q((1, 2, 3, 3, 3, 3), U8, 1), "w": q((1, 2, 1, 1, 1, 1), U8, 2)}
    _raises(node_model("ConvInteger", f, opset=10), f, OrtNotImplemented)


# --- QLinearConv ---------------------------------------------------------------------------------------

def qlinear_feeds(xs: Any, ws: Any, xd: Any, wd: Any, yd: Any, per_channel: bool, seed: int = 0,
                  xr: tuple[int | None, int | None] = (None, None),
                  wr: tuple[int | None, int | None] = (None, None)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    M = ws[0]
    return {
        "x": q(xs, xd, seed + 1, *xr), "xs": np.array(0.02, np.float32),
        "xz": np.array(-7 if xd == S8 else 131).astype(xd),
        "w": q(ws, wd, seed + 2, *wr),
        "ws": (rng.uniform(0.001, 0.02, M).astype(np.float32) if per_channel else np.array(0.006, np.float32)),
        "wz": (q((M,), wd, seed + 3, -20 if wd == S8 else 100, 20 if wd == S8 else 150) if per_channel
               else np.array(wd(3 if wd == S8 else 120))),
        "ys": np.array(0.11, np.float32), "yz": np.array(yd(-5 if yd == S8 else 120)),
        "B": rng.integers(-5000, 5000, M).astype(np.int32),
    }


QNAMES = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "B"]


def qlinear_model(feeds: dict[str, np.ndarray], const_w: bool, names: list[str] = QNAMES, **attrs: Any) -> Any:
    keep = {"x", "xs", "xz", "ys", "yz"} if const_w else set(feeds)
    f = {k: v for k, v in feeds.items() if k in keep}
    inits = {k: v for k, v in feeds.items() if k not in keep}
    return node_model("QLinearConv", f, initializers=inits, input_names=names, opset=10, **attrs), f


def qlinear_ref(f: dict[str, np.ndarray], **attrs: Any) -> np.ndarray:
    acc = conv_ref(centred(f["x"], f["xz"]), centred(f["w"], f["wz"], True), attrs.get("group", 1),
                   attrs.get("strides"), attrs.get("dilations"), attrs.get("pads"))
    if "B" in f:
        acc = acc + f["B"].astype(np.int64).reshape((1, -1) + (1,) * (acc.ndim - 2))
    return requant_ref(acc, f["xs"], f["ws"], f["ys"], f["yz"])


@pytest.mark.parametrize("const_w", [False, True], ids=["feed_w", "const_w"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor", "channel"])
@pytest.mark.parametrize("geom", range(len(GEOMS)))
@pytest.mark.parametrize("xd,wd", [(U8, U8), (S8, S8)], ids=["u8u8", "s8s8"])
def test_qlinearconv(xd, wd, geom, per_channel, const_w):
    xs, ws, attrs = GEOMS[geom]
    feeds = qlinear_feeds(xs, ws, xd, wd, xd, per_channel, seed=geom)
    m, f = qlinear_model(feeds, const_w, **attrs)
    got = check(m, f)
    if "auto_pad" not in attrs:
        assert np.array_equal(got[0], qlinear_ref(feeds, **attrs))


@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor", "channel"])
@pytest.mark.parametrize("geom", [1, 2, 8, 9])
def test_qlinearconv_u8s8(geom, per_channel):
    """uint8 x, int8 w: onnxruntime on |x|, |w| <= 127 (its int16 pair sums cannot saturate), the exact
    oracle on the full range."""
    xs, ws, attrs = GEOMS[geom]
    feeds = qlinear_feeds(xs, ws, U8, S8, U8, per_channel, seed=geom, xr=(0, 127), wr=(-127, 127))
    m, f = qlinear_model(feeds, True, **attrs)
    check(m, f)
    feeds = qlinear_feeds(xs, ws, U8, S8, U8, per_channel, seed=geom + 10)
    m, f = qlinear_model(feeds, False, **attrs)
    assert np.array_equal(run_jitort(m, f)[0], qlinear_ref(feeds, **attrs))


@pytest.mark.parametrize("xd,wd,yd", [(U8, S8, S8), (S8, S8, U8), (S8, U8, S8), (U8, U8, S8)])
def test_qlinearconv_mixed_types(xd, wd, yd):
    """Type combinations the spec allows and onnxruntime has no kernel for: the numpy oracle."""
    xs, ws, attrs = GEOMS[1]
    feeds = qlinear_feeds(xs, ws, xd, wd, yd, True, seed=4)
    m, f = qlinear_model(feeds, False, **attrs)
    got = run_jitort(m, f)[0]
    assert got.dtype == yd
    assert np.array_equal(got, qlinear_ref(feeds, **attrs))


def test_qlinearconv_no_bias():
    feeds = qlinear_feeds((2, 3, 6, 6), (4, 3, 3, 3), U8, U8, U8, False)
    del feeds["B"]
    m, f = qlinear_model(feeds, True, names=QNAMES[:-1], pads=[1, 1, 1, 1])
    got = check(m, f)
    assert np.array_equal(got[0], qlinear_ref(feeds, pads=[1, 1, 1, 1]))


@pytest.mark.parametrize("yd", [U8, S8])
def test_qlinearconv_rounding_ties_and_saturation(yd):
    """Products landing exactly on .5 round half to even; large ones saturate at both ends."""
    x = np.arange(-12, 13, dtype=np.int64).reshape(1, 1, 5, 5)
    xz = 0 if yd == S8 else 128  # onnxruntime wants x, w and y all int8 or x and y uint8
    feeds = {"x": (x + xz).astype(yd), "xs": np.array(1.0, np.float32), "xz": np.array(xz).astype(yd),
             "w": np.ones((2, 1, 1, 1), yd), "ws": np.array([0.5, 40.0], np.float32), "wz": np.array(0).astype(yd),
             "ys": np.array(1.0, np.float32), "yz": np.array(yd(0 if yd == S8 else 128)),
             "B": np.array([0, 0], np.int32)}
    m, f = qlinear_model(feeds, False)
    got = check(m, f)[0]
    v = np.rint(x[0, 0] * 0.5) + (0 if yd == S8 else 128)
    info = np.iinfo(yd)
    assert np.array_equal(got[0, 0], np.clip(v, info.min, info.max).astype(yd))
    assert got[0, 1].min() == info.min and got[0, 1].max() == info.max
    assert np.array_equal(got, qlinear_ref(feeds))


def test_qlinearconv_conformance_like_1x1_const():
    """The node conformance case's shape: a 1x1 kernel with a weight at its zero point's opposite end."""
    feeds = qlinear_feeds((1, 1, 7, 7), (1, 1, 1, 1), U8, U8, U8, False, seed=9)
    feeds["w"] = np.zeros((1, 1, 1, 1), U8)
    feeds["wz"] = np.array([255], U8)
    feeds["ws"] = np.array([0.00172794575], np.float32)
    del feeds["B"]
    m, f = qlinear_model(feeds, True, names=QNAMES[:-1])
    check(m, f)


def test_qlinearconv_errors():
    base = qlinear_feeds((1, 2, 5, 5), (4, 2, 3, 3), U8, U8, U8, False)
    for key, bad, exc in [("ws", np.ones(3, np.float32), InvalidArgument),
                          ("wz", np.ones(3, U8), InvalidArgument),
                          ("xs", np.ones(2, np.float32), InvalidArgument),
                          ("B", np.ones(4, np.int64), InvalidArgument)]:
        f = dict(base, **{key: bad})
        m, ff = qlinear_model(f, False)
        _raises(m, ff, exc)


# --- QLinearConv on integer vector tiles (kernels/qconv_lanes.py) -------------------------------------

LANES_GEOMS = [  # x shape, w shape, attrs: strides 1 and 2, asymmetric and no pads, channels off 4 and 32,
    # planes smaller than a tile, a 7x7 stem, a batch of two
    ((1, 13, 17, 17), (40, 13, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 8, 9, 10), (33, 8, 3, 3), dict(pads=[0, 1, 2, 0], strides=[2, 2])),
    ((1, 64, 14, 14), (24, 64, 1, 1), {}),
    ((1, 36, 8, 8), (70, 36, 1, 1), dict(strides=[2, 2])),
    ((1, 3, 23, 22), (16, 3, 7, 7), dict(pads=[3, 3, 3, 3], strides=[2, 2])),
    ((1, 5, 3, 3), (7, 5, 3, 3), {}),
    ((1, 6, 12, 11), (9, 6, 5, 5), dict(pads=[2, 2, 2, 2])),
]


def lanes_feeds(xs: Any, ws: Any, xd: Any, yd: Any, per_channel: bool, seed: int) -> dict[str, np.ndarray]:
    f = qlinear_feeds(xs, ws, xd, S8, yd, per_channel, seed=seed)
    f["wz"] = np.zeros(ws[0], S8) if per_channel else np.array(0, S8)  # int8 weights, symmetric
    return f


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("per_channel", [False, True], ids=["tensor", "channel"])
@pytest.mark.parametrize("geom", range(len(LANES_GEOMS)))
@pytest.mark.parametrize("xd,yd", [(U8, U8), (S8, S8), (U8, S8)], ids=["u8", "s8", "u8->s8"])
def test_qlinearconv_lanes_is_exact(xd, yd, geom, per_channel, threads, monkeypatch):
    """int8 weights with zero zero points (what onnxruntime's quantisers write): on an AVX2 host the
    plan runs qconv_lanes.py's kernel (elsewhere qconv.py's float32 path), on the host's tiles (VNNI
    on this VM), then on the AVX2 ones (JITORT_ISA=avx2, as on Zen 3) and the portable loops (a host
    with neither), each giving the exact oracle's bytes on full-range inputs, split between threads
    or not."""
    from jitort.kernels import qconv as QC
    from jitort.kernels import threads as T
    xs, ws, attrs = LANES_GEOMS[geom]
    feeds = lanes_feeds(xs, ws, xd, yd, per_channel, seed=geom)
    m, f = qlinear_model(feeds, True, **attrs)
    if threads > 1:
        monkeypatch.setattr(T, "PART_FLOPS", 1.0)
    so = jitort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = jitort.InferenceSession(m.SerializeToString(), so)
    assert ("qlinearconv_lanes" in sess.artifact.plan_source) == QC.int8_lanes()
    got = sess.run(None, f)[0]
    want = qlinear_ref(feeds, **attrs)
    assert got.dtype == yd
    assert np.array_equal(got, want)
    if QC.int8_lanes():
        monkeypatch.setenv("JITORT_ISA", "avx2")
        assert QC.tile_kind() == "avx2"
        assert np.array_equal(sess.run(None, f)[0], want)
        monkeypatch.setattr(QC, "tile_kind", lambda: "portable")
        assert np.array_equal(sess.run(None, f)[0], want)


def test_qlinearconv_lanes_matches_onnxruntime():
    """The u8 x s8 case onnxruntime's quantisers produce, on inputs its int16 pair sums cannot saturate."""
    xs, ws, attrs = LANES_GEOMS[0]
    feeds = qlinear_feeds(xs, ws, U8, S8, U8, True, seed=5, xr=(0, 127), wr=(-127, 127))
    feeds["wz"] = np.zeros(ws[0], S8)
    m, f = qlinear_model(feeds, True, **attrs)
    check(m, f)
