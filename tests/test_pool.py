"""Pooling ops against onnxruntime (and a numpy transcription of onnxruntime's rules where it has no
kernel: float64 pooling, LpPool/GlobalLpPool opset 1)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from onnx import helper

import jitort
from jitort.errors import InvalidArgument
from jitort.kernels import global_pool, pool2d
from jitort.kernels import pool as P
from oracle import assert_close, check, make_model, node_model, rand, run_ort


def pool_ref(x: np.ndarray, mode: str, k, s, d, pads, ceil=0, cip=0, auto_pad="NOTSET", p=2.0) -> np.ndarray:
    """Window by window, as onnxruntime computes it (see kernels/pool.py's docstring)."""
    r = x.ndim - 2
    outs, begin, end = P.pool_geometry("ref", x.shape[2:], tuple(k), tuple(s), tuple(d), tuple(pads), auto_pad, ceil)
    y = np.zeros(x.shape[:2] + outs)
    for idx in itertools.product(*[range(o) for o in outs]):
        taps, incl = [], 1
        for a in range(r):
            ts = [idx[a] * s[a] - begin[a] + j * d[a] for j in range(k[a])]
            incl *= sum(1 for t in ts if t < x.shape[2 + a] + end[a])
            taps.append([t for t in ts if 0 <= t < x.shape[2 + a]])
        n = math.prod(len(t) for t in taps)
        sel = x[(slice(None), slice(None)) + np.ix_(*taps)].reshape(x.shape[:2] + (-1,)) if n else None
        if mode == "max":
            v = sel.max(-1)
        elif mode == "avg":
            v = sel.sum(-1) / (incl if cip else n)
        else:
            v = (np.abs(sel) ** p).sum(-1) ** (1.0 / p)
        y[(slice(None), slice(None)) + idx] = v
    return y


# (shape, attrs): 1-D / 2-D / 3-D, strides, asymmetric pads, dilations, ceil_mode, auto_pad, batch > 1
WINDOWS = [
    ((2, 3, 9, 8), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ((1, 2, 10, 11), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ((1, 1, 4, 4), dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1)),
    ((2, 3, 7, 9), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 2, 1], ceil_mode=1)),
    ((2, 3, 7, 9), dict(kernel_shape=[3, 2], strides=[2, 3], dilations=[2, 1], pads=[1, 0, 2, 1], ceil_mode=1)),
    ((1, 2, 9, 8), dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1])),
    ((1, 2, 8, 8), dict(kernel_shape=[3, 3], strides=[3, 3], ceil_mode=1)),
    ((1, 2, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 8, 8), dict(kernel_shape=[4, 4], strides=[3, 3], auto_pad="SAME_LOWER")),
    ((1, 2, 8, 9), dict(kernel_shape=[3, 2], strides=[2, 2], auto_pad="VALID")),
    ((1, 2, 9, 9), dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2], auto_pad="SAME_UPPER")),
    ((2, 3, 11), dict(kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1)),
    ((2, 3, 12), dict(kernel_shape=[4], strides=[1], dilations=[3], pads=[2, 3])),
    ((1, 2, 6, 7, 8), dict(kernel_shape=[3, 2, 3], strides=[2, 2, 1], pads=[1, 0, 1, 1, 1, 1], ceil_mode=1)),
    ((1, 2, 5, 6, 7), dict(kernel_shape=[2, 2, 2], strides=[2, 2, 2], dilations=[1, 2, 1])),
    ((1, 3, 33, 35), dict(kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])),
]
IDS = [str(i) for i in range(len(WINDOWS))]


@pytest.mark.parametrize("shape,attrs", WINDOWS, ids=IDS)
def test_maxpool(shape, attrs):
    x = rand(shape, seed=1)
    check(node_model("MaxPool", {"x": x}, opset=12, **attrs), {"x": x})


@pytest.mark.parametrize("shape,attrs", WINDOWS, ids=IDS)
@pytest.mark.parametrize("storage_order", [0, 1])
def test_maxpool_indices(shape, attrs, storage_order):
    x = rand(shape, seed=2)
    x.reshape(-1)[::7] = 1.5  # ties: the first maximum in the window wins
    check(node_model("MaxPool", {"x": x}, n_outputs=2, opset=12, storage_order=storage_order, **attrs), {"x": x})


@pytest.mark.parametrize("opset", [1, 8, 10, 11, 12, 22])
def test_maxpool_opsets(opset):
    x = rand((2, 3, 7, 8), seed=3)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1])
    if opset >= 10:
        attrs.update(ceil_mode=1)
    if opset >= 8:
        check(node_model("MaxPool", {"x": x}, n_outputs=2, opset=min(opset, 21), **attrs), {"x": x})
    got = jitort.InferenceSession(node_model("MaxPool", {"x": x}, opset=opset, **attrs).SerializeToString()).run(
        None, {"x": x})[0]
    np.testing.assert_array_equal(got, pool_ref(x, "max", [3, 3], [2, 2], [1, 1], [1, 0, 1, 1],
                                                attrs.get("ceil_mode", 0)).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float16, np.float64])
def test_maxpool_dtypes(dtype):
    x = rand((2, 3, 9, 8), dtype, seed=4, low=-12, high=12)
    for n_out in (1, 2):
        check(node_model("MaxPool", {"x": x}, n_outputs=n_out, kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]), {"x": x})


def test_maxpool_inf():
    x = rand((1, 2, 6, 6), seed=5)
    x[0, 0, :3, :3] = -np.inf
    x[0, 1, 2, 2] = np.inf
    check(node_model("MaxPool", {"x": x}, n_outputs=2, kernel_shape=[3, 3], strides=[3, 3]), {"x": x})


@pytest.mark.parametrize("shape,attrs", WINDOWS, ids=IDS)
@pytest.mark.parametrize("cip", [0, 1])
def test_averagepool(shape, attrs, cip):
    x = rand(shape, seed=6)
    check(node_model("AveragePool", {"x": x}, opset=19, count_include_pad=cip, **attrs), {"x": x},
          rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [7, 10, 11, 19, 22])
def test_averagepool_opsets(opset):
    x = rand((2, 3, 7, 8), seed=7)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1], count_include_pad=1)
    if opset >= 10:
        attrs.update(ceil_mode=1)
    if opset >= 19:
        attrs.update(dilations=[1, 2])
    check(node_model("AveragePool", {"x": x}, opset=min(opset, 21), **attrs), {"x": x}, rtol=1e-5, atol=1e-5)


def test_averagepool_float16_float64():
    x = rand((2, 3, 9, 8), np.float16, seed=8)
    check(node_model("AveragePool", {"x": x}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), {"x": x},
          rtol=1e-3, atol=1e-3)
    x64 = rand((2, 3, 9, 8), np.float64, seed=8)
    got = P.AveragePool(x64, auto_pad="NOTSET", ceil_mode=1, count_include_pad=1, kernel_shape=[3, 3],
                        strides=[2, 2], pads=[1, 1, 1, 1])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, pool_ref(x64, "avg", [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 1, 1), rtol=1e-12)


@pytest.mark.parametrize("shape,attrs", [WINDOWS[i] for i in (0, 4, 7, 11, 13)])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lppool(shape, attrs, p):
    x = rand(shape, seed=9)
    check(node_model("LpPool", {"x": x}, opset=18, p=p, **attrs), {"x": x}, rtol=1e-4, atol=1e-5)


def test_lppool_opsets():
    x = rand((2, 3, 7, 8), seed=10)
    for opset in (2, 11):
        check(node_model("LpPool", {"x": x}, opset=opset, kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 0, 1],
                         p=3), {"x": x}, rtol=1e-4, atol=1e-5)
    # opset 1 has a float p and no onnxruntime kernel
    m = node_model("LpPool", {"x": x}, opset=1, kernel_shape=[3, 2], strides=[2, 1], p=2.5)
    got = jitort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, pool_ref(x.astype(np.float64), "lp", [3, 2], [2, 1], [1, 1], [0] * 4, p=2.5),
                               rtol=1e-5)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 9), (2, 3, 9, 8), (1, 4, 3, 5, 6), (1, 2, 1, 1)])
def test_global(op, shape):
    x = rand(shape, seed=11)
    check(node_model(op, {"x": x}, **({"p": 3} if op == "GlobalLpPool" else {})), {"x": x}, rtol=1e-5, atol=1e-5)


def test_global_dtypes_and_opset1():
    x16 = rand((2, 3, 9, 8), np.float16, seed=12)
    for op in ("GlobalAveragePool", "GlobalMaxPool"):
        check(node_model(op, {"x": x16}), {"x": x16}, rtol=1e-3, atol=1e-3)
    x = rand((2, 3, 9, 8), np.float64, seed=12)
    np.testing.assert_allclose(global_pool.GlobalAveragePool(x), x.mean((2, 3), keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(global_pool.GlobalMaxPool(x), x.max((2, 3), keepdims=True))
    x32 = x.astype(np.float32)
    m = node_model("GlobalLpPool", {"x": x32}, opset=1, p=2.5)
    got = jitort.InferenceSession(m.SerializeToString()).run(None, {"x": x32})[0]
    np.testing.assert_allclose(got, (np.abs(x) ** 2.5).sum((2, 3), keepdims=True) ** (1 / 2.5), rtol=1e-5)


def _n_signatures() -> int:
    return sum(len(k.signatures) for k in (pool2d.pool2d, P._max_pool, P._sum_pool, global_pool.global_kernel))


def test_batch_change_does_not_compile():
    for shape in ((1, 3, 9, 8), (1, 2, 3, 4, 5), (1, 3, 7, 7)):  # 2-D, 3-D and whole-plane windows
        P.MaxPool(rand(shape), auto_pad="NOTSET", kernel_shape=shape[2:] if shape[-1] == 7 else [2] * (len(shape) - 2))
        P.AveragePool(rand(shape), auto_pad="NOTSET", kernel_shape=shape[2:] if shape[-1] == 7 else [2] * (len(shape) - 2))
    n = _n_signatures()
    for shape in ((4, 3, 9, 8), (2, 5, 11), (1, 2, 3, 4, 5), (8, 300, 14, 14), (3, 2, 7, 7)):
        x = rand(shape)
        k = shape[2:] if shape[-1] == 7 else [3] * (len(shape) - 2)
        P.MaxPool(x, auto_pad="NOTSET", kernel_shape=k, pads=[1] * (2 * len(k)) if shape[-1] != 7 else None)
        P.AveragePool(x, auto_pad="NOTSET", kernel_shape=k, strides=[2] * len(k))
    assert _n_signatures() == n


def test_pool_errors():
    x = rand((1, 2, 5, 5))
    with pytest.raises(InvalidArgument, match="Pad should be smaller than kernel"):
        P.MaxPool(x, auto_pad="NOTSET", kernel_shape=[2, 2], pads=[2, 0, 0, 0])
    with pytest.raises(InvalidArgument, match="kernel_shape"):
        P.AveragePool(x, auto_pad="NOTSET", kernel_shape=[2])
    with pytest.raises(InvalidArgument, match="too small"):
        P.MaxPool(x, auto_pad="NOTSET", kernel_shape=[6, 6])


# --- ROI ops -------------------------------------------------------------------------------------

def test_maxroipool():
    x = rand((2, 3, 12, 10), seed=13)
    x[1, 2] = -np.abs(x[1, 2]) - 1  # all-negative channel: onnxruntime's bins start from FLT_MIN
    rois = np.array([[0, 0, 0, 9, 11], [1, 2.4, 1.5, 7.6, 8.5], [1, 5, 5, 4, 4], [0, -3, -2, 30, 3.5],
                     [1, 8, 9, 9, 11]], np.float32)
    for scale, ps in ((1.0, [2, 2]), (0.5, [3, 4]), (0.75, [1, 5])):
        feeds = {"x": x, "rois": rois}
        check(node_model("MaxRoiPool", feeds, pooled_shape=ps, spatial_scale=scale), feeds)


ROIS = np.array([[0.0, 0.0, 9.0, 9.0], [1.2, 0.7, 7.3, 5.1], [4.0, 4.0, 4.2, 4.1], [-2.0, -1.5, 12.0, 14.0],
                 [6.5, 2.25, 2.0, 8.0]], np.float32)


@pytest.mark.parametrize("opset,ctm", [(10, None), (16, "half_pixel"), (16, "output_half_pixel")])
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("sampling_ratio,out_hw,scale", [(0, (3, 3), 1.0), (2, (2, 4), 0.5), (1, (5, 1), 1.5)])
def test_roialign(opset, ctm, mode, sampling_ratio, out_hw, scale):
    x = rand((2, 3, 10, 11), seed=14)
    n = 4 if ctm == "half_pixel" and sampling_ratio == 0 else 5  # onnxruntime overflows on the reversed roi
    feeds = {"x": x, "rois": ROIS[:n], "bi": np.array([0, 1, 1, 0, 1][:n], np.int64)}
    attrs = dict(mode=mode, output_height=out_hw[0], output_width=out_hw[1], sampling_ratio=sampling_ratio,
                 spatial_scale=scale)
    if ctm:
        attrs["coordinate_transformation_mode"] = ctm
    check(node_model("RoiAlign", feeds, opset=opset, **attrs), feeds, rtol=1e-5, atol=1e-5)


def test_roialign_float64_float16():
    for dt, tol in ((np.float64, 1e-12), (np.float16, 2e-2)):
        x = rand((1, 2, 8, 8), dt, seed=15)
        feeds = {"x": x, "rois": ROIS[:3].astype(dt), "bi": np.zeros(3, np.int64)}
        check(node_model("RoiAlign", feeds, opset=16, output_height=2, output_width=3, sampling_ratio=2), feeds,
              rtol=tol, atol=tol)


def test_maxunpool():
    for shape, opset in (((2, 3, 8, 8), 11), ((2, 3, 8, 8), 9), ((1, 2, 6, 4, 4), 11)):
        x = rand(shape, seed=16)
        r = len(shape) - 2
        pool = node_model("MaxPool", {"x": x}, n_outputs=2, kernel_shape=[2] * r, strides=[2] * r)
        y, idx = run_ort(pool, {"x": x})
        feeds = {"y": y, "i": idx}
        check(node_model("MaxUnpool", feeds, opset=opset, kernel_shape=[2] * r, strides=[2] * r), feeds)
    # odd input: the indices need the explicit output_shape (and padding attributes shrink the default)
    x = rand((2, 3, 9, 9), seed=17)
    y, idx = run_ort(node_model("MaxPool", {"x": x}, n_outputs=2, kernel_shape=[2, 2], strides=[2, 2]), {"x": x})
    feeds = {"y": y, "i": idx, "shape": np.array([2, 3, 9, 9], np.int64)}
    check(node_model("MaxUnpool", feeds, opset=11, kernel_shape=[2, 2], strides=[2, 2]), feeds)
    feeds = {"y": y, "i": np.zeros_like(idx)}
    check(node_model("MaxUnpool", feeds, opset=11, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]), feeds)


# --- the benchmark shape -------------------------------------------------------------------------

def test_maxpool_resnet_stem():
    x = rand((1, 8, 112, 112), seed=17)
    check(node_model("MaxPool", {"x": x}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), {"x": x})


def test_maxunpool_output_shape_is_the_index_space():
    """With output_shape, I indexes that tensor (onnxruntime since microsoft/onnxruntime#2193, PyTorch), so a
    MaxPool of an odd-sized input round-trips. onnx's test_maxunpool_export_with_output_shape expects
    onnx.reference's reading (I in the default shape, zero-padded at the end): a known mismatch, see
    tests/test_conformance.py."""
    feeds = {"x": np.array([[[[5, 6], [7, 8]]]], np.float32), "i": np.array([[[[5, 7], [13, 15]]]], np.int64),
             "shape": np.array([1, 1, 5, 5], np.int64)}
    y = check(node_model("MaxUnpool", feeds, opset=11, kernel_shape=[2, 2], strides=[2, 2]), feeds)[0]
    assert y.reshape(-1)[[5, 7, 13, 15]].tolist() == [5, 6, 7, 8]


# --- the 2-D kernel's paths: plane chunks ("tall" images), rows padded to the vector width, border
# rows/columns, whole-plane windows --------------------------------------------------------------

CNN = [((2, 300, 14, 14), dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),   # s1 chunks
       ((1, 200, 14, 14), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),   # s2 chunks
       ((1, 150, 12, 12), dict(kernel_shape=[2, 2], strides=[2, 2])),
       ((8, 24, 28, 28), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
       ((1, 96, 27, 27), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),           # not tall
       ((1, 40, 13, 13), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])),
       ((2, 30, 9, 11), dict(kernel_shape=[2, 3], strides=[1, 2], pads=[0, 1, 1, 1]))]


@pytest.mark.parametrize("shape,attrs", CNN, ids=[str(i) for i in range(len(CNN))])
def test_cnn_shapes(shape, attrs):
    x = rand(shape, seed=18)
    check(node_model("MaxPool", {"x": x}, **attrs), {"x": x})
    check(node_model("AveragePool", {"x": x}, **attrs), {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("w", [7, 8, 9, 15, 16, 17, 23])
def test_row_widths(w):
    x = rand((2, 5, w, w), seed=19)
    for attrs in (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                  dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
                  dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])):
        check(node_model("MaxPool", {"x": x}, **attrs), {"x": x})
        check(node_model("AveragePool", {"x": x}, count_include_pad=1, **attrs), {"x": x}, rtol=1e-5, atol=1e-5)


def test_whole_plane_window():
    x = rand((2, 37, 7, 7), seed=20)
    for op in ("MaxPool", "AveragePool"):
        check(node_model(op, {"x": x}, kernel_shape=[7, 7]), {"x": x}, rtol=1e-5, atol=1e-6)
        check(node_model(op, {"x": x}, kernel_shape=[7, 7], pads=[1, 1, 1, 1]), {"x": x}, rtol=1e-5, atol=1e-6)
    x8 = rand((1, 3, 5, 5), np.int8, seed=20)
    check(node_model("MaxPool", {"x": x8}, kernel_shape=[5, 5]), {"x": x8})


def test_symbolic_batch_session():
    """The lowered call caches its preparation per input shape: a new batch size gets its own."""
    m = make_model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                    helper.make_node("AveragePool", ["y"], ["z"], kernel_shape=[2, 2], strides=[2, 2])],
                   {"x": (np.float32, ["n", 16, 20, 20])}, ["z"])
    sess = jitort.InferenceSession(m.SerializeToString())
    for n in (1, 3, 1):
        x = rand((n, 16, 20, 20), seed=n)
        assert_close(sess.run(None, {"x": x}), run_ort(m, {"x": x}), 1e-5, 1e-6)


def test_nan_propagates():
    """A window (or plane) holding a NaN gives NaN (onnxruntime's result depends on the position)."""
    x = rand((1, 3, 8, 8), seed=21)
    x[0, 0, 3, 4] = np.nan
    x[0, 2, 0, 0] = np.nan
    y = P.MaxPool(x, auto_pad="NOTSET", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    ref = pool_ref(x.astype(np.float64), "max", [3, 3], [2, 2], [1, 1], [1, 1, 1, 1])
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    g = global_pool.GlobalMaxPool(x).reshape(-1)
    assert np.isnan(g[0]) and not np.isnan(g[1]) and np.isnan(g[2])


# --- kernels/pool_rows.py: float32, undilated, column stride 1 or 2, both ISA paths, threads ----------
# (planes of <= 32 columns take the register path on AVX-512, the row buffer on AVX2)

ROWS_GRID = [((1, 3, 13, 13), [3, 3], [2, 2], [0, 0, 0, 0], 1),
             ((2, 5, 17, 31), [3, 3], [2, 2], [1, 1, 1, 1], 0),
             ((1, 4, 16, 33), [3, 3], [1, 1], [1, 1, 1, 1], 0),
             ((1, 3, 14, 35), [2, 2], [2, 2], [0, 0, 0, 0], 1),
             ((1, 3, 12, 12), [3, 3], [2, 2], [0, 0, 1, 1], 1),
             ((1, 2, 9, 40), [3, 2], [3, 2], [1, 0, 2, 1], 1),    # row stride 3, asymmetric pads
             ((1, 2, 20, 47), [5, 4], [1, 2], [2, 1, 2, 2], 0),   # taps beyond 3
             ((3, 2, 7, 5), [2, 3], [1, 1], [0, 1, 1, 1], 1),
             ((1, 2, 1, 70), [1, 3], [1, 2], [0, 1, 0, 1], 1),
             ((1, 3, 9, 29), [3, 3], [1, 1], [1, 1, 1, 1], 0),    # <= 32 columns: two output vectors
             ((1, 2, 6, 32), [3, 3], [1, 1], [1, 1, 1, 1], 1),    # the end pad past the registers
             ((1, 2, 5, 30), [2, 9], [1, 1], [0, 4, 1, 4], 0)]    # more taps than the lane table


@pytest.mark.parametrize("isa", ["host", "avx2"])
@pytest.mark.parametrize("case", range(len(ROWS_GRID)))
def test_rows_kernel_grid(isa, case, monkeypatch):
    """Odd sizes, row tails shorter and longer than a vector, pads, ceil_mode, both averaging modes,
    against onnxruntime; and NaN propagation (a NaN anywhere in a window) against the window-by-window
    reference, on the host's vector width and on AVX2's."""
    if isa == "avx2":
        monkeypatch.setenv("JITORT_ISA", "avx2")
    shape, k, s, pads, ceil = ROWS_GRID[case]
    x = rand(shape, seed=30 + case)
    attrs = dict(kernel_shape=k, strides=s, pads=pads, ceil_mode=ceil)
    check(node_model("MaxPool", {"x": x}, opset=12, **attrs), {"x": x})
    for cip in (0, 1):
        check(node_model("AveragePool", {"x": x}, opset=19, count_include_pad=cip, **attrs), {"x": x},
              rtol=1e-5, atol=1e-6)
    xn = x.copy()
    flat = xn.reshape(-1)
    rng = np.random.default_rng(case)
    flat[rng.integers(0, flat.size, max(1, flat.size // 20))] = np.nan
    flat[rng.integers(0, flat.size, max(1, flat.size // 20))] = -np.inf
    flat[rng.integers(0, flat.size, max(1, flat.size // 40))] = np.inf
    y = P.MaxPool(xn, auto_pad="NOTSET", kernel_shape=tuple(k), strides=tuple(s), pads=tuple(pads), ceil_mode=ceil)
    ref = pool_ref(xn.astype(np.float64), "max", k, s, [1, 1], pads, ceil)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(y[~np.isnan(y)], ref[~np.isnan(ref)].astype(np.float32))


def test_rows_all_minus_inf_window():
    """A window of -inf gives -inf (the identity of the max is -inf, not the lowest float)."""
    x = rand((1, 2, 6, 6), seed=40)
    x[0, 0, :3, :3] = -np.inf
    y = P.MaxPool(x, auto_pad="NOTSET", kernel_shape=(3, 3), strides=(3, 3))
    assert y[0, 0, 0, 0] == -np.inf and np.isfinite(y[0, 1]).all()


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1))])
@pytest.mark.parametrize("isa", ["host", "avx2"])
def test_rows_two_threads(op, attrs, isa, monkeypatch):
    """At 2 threads a large enough pooling splits over planes as native parts: bitwise the 1-thread
    result, and onnxruntime's."""
    if isa == "avx2":
        monkeypatch.setenv("JITORT_ISA", "avx2")
    x = rand((2, 40, 61, 63), seed=41)  # ~1 MiB: worth a split (pool_rows._BYTES_PER_PART)
    m = node_model(op, {"x": x}, opset=19, **attrs)
    outs = []
    for t in (1, 2):
        so = jitort.SessionOptions()
        so.intra_op_num_threads = t
        outs.append(jitort.InferenceSession(m.SerializeToString(), so).run(None, {"x": x})[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    assert_close([outs[1]], run_ort(m, {"x": x}), 1e-5, 1e-6)


def test_rows_split_runs_native_parts(monkeypatch):
    """The 2-thread split of ``pool_rows.run`` goes through ``run_native`` with several parts."""
    from jitort.kernels import pool_rows, threads
    seen = []
    real = pool_rows.run_native
    monkeypatch.setattr(pool_rows, "run_native", lambda fn, argv, n, t: (seen.append((n, t)), real(fn, argv, n, t)))
    monkeypatch.setattr(pool_rows, "intra_op_threads", lambda: 2)
    monkeypatch.setattr(threads, "intra_op_threads", lambda: 2)
    x = rand((1, 64, 80, 80), seed=42)
    y = P.MaxPool(x, auto_pad="NOTSET", kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    ref = pool_ref(x.astype(np.float64), "max", [3, 3], [2, 2], [1, 1], [1, 1, 1, 1])
    np.testing.assert_array_equal(y, ref.astype(np.float32))
    assert seen and seen[0][0] >= 2 and seen[0][1] == 2
