"""Resize, Upsample, GridSample, AffineGrid and Col2Im (kernels/resize.py, gridsample.py, col2im.py)
against onnxruntime.

Where onnxruntime has no kernel (float64 Resize, linear on 1-D or on non-spatial axes, cubic outside
2-D/4-D, GridSample cubic in 3-D) onnx.reference is the oracle, used only in cases where its
semantics and the spec's agree. Integer and bool nearest-neighbour results are checked against
onnxruntime's float32 result on the same values (nearest copies values, so the cast is exact).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

import jitort
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from oracle import assert_close, check, node_model, rand, run_jitort, run_ort

COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"]
MODES = ["nearest", "linear", "cubic"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def resize_model(x: np.ndarray, opset: int = 19, scales: Any = None, sizes: Any = None, roi: Any = None,
                 feed_params: bool = False, **attrs: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """A one-node Resize; scales/sizes/roi become initializers, or graph inputs with ``feed_params``."""
    feeds = {"x": x}
    params: dict[str, np.ndarray] = {}
    names = ["x"]
    if opset == 10:
        params["scales"] = np.asarray(scales, np.float32)
        names.append("scales")
    else:
        for name, val, dt in (("roi", roi, np.float32), ("scales", scales, np.float32), ("sizes", sizes, np.int64)):
            if val is None:
                names.append("")
            else:
                params[name] = np.asarray(val, dt)
                names.append(name)
        while names[-1] == "":
            names.pop()
    if feed_params:
        feeds.update(params)
        params = {}
    m = node_model("Resize", feeds, opset=opset, initializers=params or None, input_names=names, **attrs)
    return m, feeds


def ref_run(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


def check_ref(model: Any, feeds: dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert_close(run_jitort(model, feeds), ref_run(model, feeds), rtol, atol)


def check_scales(model: Any, feeds: dict[str, np.ndarray], scales: list[float], coord: str, rtol: float = 1e-5,
                 atol: float = 1e-6) -> None:
    """align_corners with a scale whose ``scale * length`` is not whole: the spec divides by that unfloored
    length - 1 (onnx/onnx#2462), onnxruntime by the integer output length - 1; onnx.reference is the oracle."""
    shape = feeds["x"].shape
    whole = all(float(np.float32(s) * np.float32(n)).is_integer() for s, n in zip(scales, shape))
    if coord == "align_corners" and not whole:
        check_ref(model, feeds, rtol, atol)
    else:
        check(model, feeds, rtol, atol)


X4 = rand((2, 3, 7, 9), seed=1)


# --- every mode x coordinate mode x scales, NCHW, against onnxruntime ---------------------------------

SCALES = [[1, 1, 2, 2], [1, 1, 0.5, 0.5], [1, 1, 1.7, 0.6], [1, 1, 3, 1.25], [1, 1, 0.3, 2.5]]


@pytest.mark.parametrize("scales", SCALES, ids=str)
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", MODES)
def test_resize_scales(mode, coord, scales):
    m, feeds = resize_model(X4, scales=scales, mode=mode, coordinate_transformation_mode=coord)
    check_scales(m, feeds, scales, coord, rtol=1e-5, atol=1e-5)


SIZES = [[2, 3, 14, 18], [2, 3, 4, 5], [2, 3, 9, 20], [2, 3, 1, 1], [2, 3, 7, 4]]


@pytest.mark.parametrize("sizes", SIZES, ids=str)
@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", MODES)
def test_resize_sizes(mode, coord, sizes):
    m, feeds = resize_model(X4, sizes=sizes, mode=mode, coordinate_transformation_mode=coord)
    check(m, feeds, rtol=1e-5, atol=1e-5)


# Scales that put source coordinates exactly on .5 ties, where the nearest modes differ.
@pytest.mark.parametrize("scales", [[1, 1, 2, 4], [1, 1, 0.5, 0.25], [1, 1, 1.5, 2.5], [1, 1, 0.75, 0.4]], ids=str)
@pytest.mark.parametrize("coord", ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"])
@pytest.mark.parametrize("nearest_mode", NEAREST)
def test_resize_nearest_modes(nearest_mode, coord, scales):
    m, feeds = resize_model(X4, scales=scales, mode="nearest", nearest_mode=nearest_mode,
                            coordinate_transformation_mode=coord)
    check_scales(m, feeds, scales, coord)


def test_resize_align_corners_scales_spec():
    """align_corners with the scales input divides by the unfloored scale * length - 1 (the conformance
    cases test_resize_downsample_scales_{linear,cubic}_align_corners; onnxruntime gives 4.0 here)."""
    x = np.arange(1, 9, dtype=np.float32).reshape(1, 1, 2, 4)
    m, feeds = resize_model(x, scales=[1, 1, 0.6, 0.6], mode="linear", coordinate_transformation_mode="align_corners")
    assert_close(run_jitort(m, feeds), [np.array([[[[1, 3.142857]]]], np.float32)], 1e-6, 1e-6)
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    m, feeds = resize_model(x, scales=[1, 1, 0.8, 0.8], mode="cubic", coordinate_transformation_mode="align_corners",
                            feed_params=True)
    check_ref(m, feeds)
    # antialias takes the same coordinates; sizes keep the integer length (onnxruntime's, exact)
    x = rand((2, 3, 13, 17), seed=2)
    m, feeds = resize_model(x, scales=[1, 1, 0.3, 0.7], mode="linear", antialias=1,
                            coordinate_transformation_mode="align_corners")
    check_ref(m, feeds)
    m, feeds = resize_model(x, sizes=[2, 3, 3, 11], mode="linear", coordinate_transformation_mode="align_corners")
    check(m, feeds)


@pytest.mark.parametrize("nearest_mode", NEAREST)
def test_resize_tf_half_pixel_for_nn(nearest_mode):
    m, feeds = resize_model(X4, opset=11, roi=[], scales=[1, 1, 1.5, 0.6], mode="nearest",
                            nearest_mode=nearest_mode, coordinate_transformation_mode="tf_half_pixel_for_nn")
    check(m, feeds)


ROIS = [[0, 0, 0.1, 0.2, 1, 1, 0.8, 0.9], [0, 0, -0.2, 0.3, 1, 1, 1.3, 0.7], [0, 0, 0.5, 0.5, 1, 1, 0.5, 0.5]]


@pytest.mark.parametrize("roi", ROIS, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", ["scales", "sizes"])
def test_resize_tf_crop_and_resize(mode, roi, target):
    kw = {"scales": [1, 1, 1.5, 0.8]} if target == "scales" else {"sizes": [2, 3, 5, 11]}
    m, feeds = resize_model(X4, roi=roi, mode=mode, coordinate_transformation_mode="tf_crop_and_resize",
                            extrapolation_value=-9.5, **kw)
    check(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes", [[2, 3, 14, 18], [2, 3, 4, 5], [2, 3, 5, 30]], ids=str)
@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("a", [-0.5, -0.75])
def test_resize_cubic_attrs(a, exclude_outside, sizes):
    m, feeds = resize_model(X4, sizes=sizes, mode="cubic", cubic_coeff_a=a, exclude_outside=exclude_outside)
    check(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes", [[2, 3, 3, 4], [2, 3, 4, 3], [2, 3, 2, 8], [2, 3, 14, 18]], ids=str)
@pytest.mark.parametrize("coord", ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"])
@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_antialias(mode, exclude_outside, coord, sizes):
    x = rand((2, 3, 13, 17), seed=2)
    m, feeds = resize_model(x, sizes=sizes, mode=mode, antialias=1, exclude_outside=exclude_outside,
                            coordinate_transformation_mode=coord)
    check(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("mode,axes,sizes", [("nearest", None, [2, 3, 4, 13]), ("nearest", None, [4, 3, 14, 3]),
                                             ("nearest", [2, 3], [12, 5]), ("linear", [2, 3], [12, 5]),
                                             ("linear", [3, 2], [5, 12]), ("cubic", [2, 3], [3, 3])], ids=str)
def test_resize_keep_aspect_ratio(mode, axes, sizes, policy):
    kw = {"axes": axes} if axes is not None else {}
    m, feeds = resize_model(X4, opset=18, sizes=sizes, mode=mode, keep_aspect_ratio_policy=policy, **kw)
    check(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_negative_axes(policy):
    """onnxruntime ignores negative axes in keep_aspect_ratio_policy (it returns the input shape, which
    contradicts its own shape inference); jitort normalises them, so -1/-2 equal 3/2."""
    m, feeds = resize_model(X4, opset=18, sizes=[3, 5], mode="linear", keep_aspect_ratio_policy=policy, axes=[-1, -2])
    m2, _ = resize_model(X4, opset=18, sizes=[3, 5], mode="linear", keep_aspect_ratio_policy=policy, axes=[3, 2])
    assert_close(run_jitort(m, feeds), run_ort(m2, feeds), 1e-5, 1e-5)


@pytest.mark.parametrize("axes,scales", [([2, 3], [0.5, 1.5]), ([3], [2.5]), ([-2], [0.7]), ([3, 2], [2.0, 0.5])],
                         ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_resize_axes(mode, axes, scales):
    m, feeds = resize_model(X4, opset=18, scales=scales, mode=mode, axes=axes)
    check(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("opset", [10, 11, 13])
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 0.5, 0.6], [1, 1, 1.5, 3.3]], ids=str)
def test_resize_old_opsets(opset, mode, scales):
    roi = [] if opset == 11 else None  # opset 11 requires the roi input
    m, feeds = resize_model(X4, opset=opset, roi=roi, scales=scales, mode=mode)
    check(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_params_as_feeds(mode):
    """scales / sizes / roi computed at run time (graph inputs) instead of constants."""
    m, feeds = resize_model(X4, scales=[1, 1, 1.5, 0.5], mode=mode, feed_params=True)
    check(m, feeds, rtol=1e-5, atol=1e-5)
    m, feeds = resize_model(X4, roi=ROIS[0], sizes=[2, 3, 5, 11], mode=mode, feed_params=True,
                            coordinate_transformation_mode="tf_crop_and_resize")
    check(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("coord", ["half_pixel", "asymmetric", "align_corners"])
@pytest.mark.parametrize("mode", MODES)
def test_resize_nan_inf(mode, coord):
    x = rand((1, 2, 5, 6), seed=3)
    x[0, 0, 1, 2], x[0, 0, 3, 4], x[0, 1, 0, 0], x[0, 1, 4, 5] = np.nan, np.inf, -np.inf, np.nan
    m, feeds = resize_model(x, scales=[1, 1, 2, 2], mode=mode, coordinate_transformation_mode=coord)
    check(m, feeds, rtol=1e-5, atol=1e-5)


# --- ranks and layouts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,scales", [((9,), [1.7]), ((5, 7), [2, 0.5]), ((4, 5, 6), [2, 1.5, 0.5]),
                                          ((2, 2, 3, 4, 5), [1, 1, 2, 1.5, 0.7]), ((1, 6, 7, 3), [1, 2, 0.5, 1]),
                                          ((2, 3, 4, 5), [0.5, 2, 1.5, 1])], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_ranks(mode, shape, scales):
    if mode == "linear" and (len(shape) == 1 or scales[0] != 1):
        pytest.skip("onnxruntime has no linear kernel for this layout (covered against onnx.reference)")
    x = rand(shape, seed=4)
    m, feeds = resize_model(x, scales=scales, mode=mode)
    check(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,scales", [((9,), [1.7]), ((9,), [0.5]), ((4, 5, 6), [2, 1.5, 0.5]),
                                          ((2, 3, 5, 4), [1, 2, 1.5, 1]), ((2, 3, 5, 4), [2, 1, 1, 0.5])], ids=str)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_any_axes_vs_reference(mode, shape, scales):
    """onnxruntime supports linear only on the spatial axes of 2-5-D inputs and cubic only in 2-D."""
    x = rand(shape, seed=5)
    m, feeds = resize_model(x, scales=scales, mode=mode)
    check_ref(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_empty_roi_and_scales(mode):
    """The exporters' opset-11 pattern: roi and scales given as empty tensors, sizes set."""
    params = {"roi": np.array([], np.float32), "scales": np.array([], np.float32),
              "sizes": np.array([2, 3, 11, 4], np.int64)}
    m = node_model("Resize", {"x": X4}, opset=11, initializers=params, input_names=["x", "roi", "scales", "sizes"],
                   mode=mode)
    check(m, {"x": X4}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_tf_crop_and_resize_axes(mode):
    m, feeds = resize_model(X4, opset=18, roi=[0.1, 0.2, 0.8, 1.1], sizes=[5, 6], axes=[2, 3], mode=mode,
                            coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=3.0)
    check(m, feeds, rtol=1e-5, atol=1e-5)


def test_resize_empty_batch():
    x = np.zeros((0, 3, 4, 4), np.float32)
    m, feeds = resize_model(x, scales=[1, 1, 2, 2], mode="linear")
    check(m, feeds)


# --- dtypes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 0.6, 1.7], [1, 1, 3, 3]], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_float16(mode, scales):
    x = rand((1, 2, 5, 7), np.float16, seed=6)
    m, feeds = resize_model(x, scales=scales, mode=mode)
    check(m, feeds, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 0.6, 1.7], [1, 1, 3, 3]], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32])
def test_resize_int(dtype, mode, scales):
    """Integer linear resize truncates like onnxruntime's C++ cast (same weight products, same order)."""
    x = rand((1, 2, 5, 7), dtype, seed=7, low=0 if dtype == np.uint8 else -5, high=12)
    m, feeds = resize_model(x, scales=scales, mode=mode)
    check(m, feeds)


@pytest.mark.parametrize("sizes", [[1, 2, 3, 4], [1, 2, 2, 3]], ids=str)
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int8])
def test_resize_int_antialias(dtype, sizes):
    """Antialiased integer results are rounded; onnxruntime's fixed-point uint8 path can differ by one.
    onnxruntime's int8 antialias is wrong (it clamps to [0, 255] before the int8 cast), so int8 is
    compared with onnxruntime's float32 result, rounded."""
    x = rand((1, 2, 5, 7), dtype, seed=8, low=-5 if dtype == np.int8 else 0, high=12)
    m, feeds = resize_model(x, sizes=sizes, mode="linear", antialias=1)
    got = run_jitort(m, feeds)[0]
    if dtype == np.int8:
        mf, ff = resize_model(x.astype(np.float32), sizes=sizes, mode="linear", antialias=1)
        yf = run_ort(mf, ff)[0].astype(np.float64)
        want = np.clip(np.copysign(np.floor(np.abs(yf) + 0.5), yf), -128, 127).astype(np.int8)
    else:
        want = run_ort(m, feeds)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= 1


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_, np.float64, np.int8])
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 0.5, 1.5], [2, 1, 1, 0.5]], ids=str)
def test_resize_nearest_any_dtype(dtype, scales):
    x = rand((2, 2, 5, 6), dtype, seed=9)
    m, feeds = resize_model(x, scales=scales, mode="nearest")
    xf = x.astype(np.float32)
    mf, ff = resize_model(xf, scales=scales, mode="nearest")
    want = run_ort(mf, ff)[0].astype(dtype)
    assert_close(run_jitort(m, feeds), [want])


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 0.5], [1, 1, 1.3, 0.7]], ids=str)
def test_resize_float64_vs_reference(mode, coord, scales):
    x = rand((2, 3, 7, 8), np.float64, seed=10)
    m, feeds = resize_model(x, scales=scales, mode=mode, coordinate_transformation_mode=coord)
    # onnx.reference computes cubic weights in float32 (cubic_coeff_a arrives as np.float32)
    tol = 1e-10 if mode == "linear" else 1e-5
    check_ref(m, feeds, rtol=tol, atol=tol)


def test_resize_float64_antialias_vs_reference():
    x = rand((2, 3, 13, 17), np.float64, seed=11)
    m, feeds = resize_model(x, sizes=[2, 3, 4, 6], mode="linear", antialias=1)
    check_ref(m, feeds, rtol=1e-10, atol=1e-10)


# --- Upsample -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 2, 3], [1, 1, 1.5, 2.5], [2, 1, 1, 1]], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("opset", [7, 9])
def test_upsample(opset, mode, scales):
    if mode == "linear" and scales[0] != 1:
        pytest.skip("onnxruntime's linear Upsample needs the outer two scales to be 1")
    if opset == 7:
        m = node_model("Upsample", {"x": X4}, opset=7, mode=mode, scales=[float(v) for v in scales])
    else:
        m = node_model("Upsample", {"x": X4}, opset=9, initializers={"s": np.array(scales, np.float32)}, mode=mode)
    check(m, {"x": X4}, rtol=1e-5, atol=1e-5)


def test_upsample_int():
    x = rand((1, 2, 3, 4), np.int32, seed=12)
    check(node_model("Upsample", {"x": x}, opset=9, initializers={"s": np.array([1, 1, 2, 2], np.float32)}),
          {"x": x})


# --- errors ---------------------------------------------------------------------------------------------

def _run_raises(m: Any, feeds: dict[str, np.ndarray], exc: type) -> None:
    with pytest.raises(exc):
        jitort.InferenceSession(m.SerializeToString()).run(None, feeds)


def test_resize_errors():
    m, feeds = resize_model(X4, scales=[1, 1, 2], mode="linear")
    _run_raises(m, feeds, InvalidArgument)
    m, feeds = resize_model(X4, scales=[1, 1, 2, 2], sizes=[2, 3, 4, 4], mode="linear")
    _run_raises(m, feeds, InvalidArgument)
    m, feeds = resize_model(X4, scales=[1, 1, 2, 2], mode="nearest", antialias=1)
    _run_raises(m, feeds, InvalidArgument)
    m, feeds = resize_model(X4, scales=[1, 1, 2, 2], mode="linear", feed_params=True)
    feeds["scales"] = np.array([1, 1, -2, 2], np.float32)
    _run_raises(m, feeds, InvalidArgument)
    xb = rand((1, 1, 3, 3), np.bool_)
    m, feeds = resize_model(xb, scales=[1, 1, 2, 2], mode="linear")
    _run_raises(m, feeds, OrtNotImplemented)
    m = node_model("Upsample", {"x": X4}, opset=9, initializers={"s": np.array([1, 1, 0.5, 2], np.float32)})
    _run_raises(m, {"x": X4}, InvalidArgument)


# --- GridSample -----------------------------------------------------------------------------------------

GS_MODES = {16: ["bilinear", "nearest", "bicubic"], 20: ["linear", "nearest", "cubic"]}


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("opset,mode", [(o, m) for o in (16, 20) for m in GS_MODES[o]])
def test_grid_sample_2d(opset, mode, padding, align):
    x = rand((2, 3, 5, 7), seed=13)
    g = rand((2, 4, 6, 2), seed=14, low=-1.7, high=1.7)
    check(node_model("GridSample", {"x": x, "g": g}, opset=opset, mode=mode, padding_mode=padding,
                     align_corners=align), {"x": x, "g": g}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_grid_sample_3d(mode, padding, align):
    x = rand((2, 2, 3, 4, 5), seed=15)
    g = rand((2, 2, 3, 4, 3), seed=16, low=-1.5, high=1.5)
    check(node_model("GridSample", {"x": x, "g": g}, opset=22, mode=mode, padding_mode=padding,
                     align_corners=align), {"x": x, "g": g}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["zeros", "reflection"])
@pytest.mark.parametrize("shape,gshape", [((2, 2, 3, 4, 5), (2, 2, 3, 4, 3)), ((2, 3, 9), (2, 5, 1))], ids=str)
def test_grid_sample_nd_cubic_vs_reference(shape, gshape, padding):
    """onnxruntime has cubic only in 2-D. (onnx.reference pads border coordinates before cubic
    sampling, unlike onnxruntime and PyTorch, so border is compared in 2-D only.)"""
    x, g = rand(shape, seed=17), rand(gshape, seed=18, low=-1.4, high=1.4)
    check_ref(node_model("GridSample", {"x": x, "g": g}, opset=20, mode="cubic", padding_mode=padding),
              {"x": x, "g": g}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_grid_sample_float64(mode):
    x, g = rand((1, 2, 4, 6), np.float64, seed=19), rand((1, 3, 5, 2), np.float64, seed=20, low=-1.2, high=1.2)
    check(node_model("GridSample", {"x": x, "g": g}, opset=20, mode=mode, padding_mode="border"),
          {"x": x, "g": g}, rtol=1e-12, atol=1e-12)


def test_grid_sample_bad_grid():
    x, g = rand((1, 2, 4, 6)), rand((1, 3, 5, 3))
    m = node_model("GridSample", {"x": x, "g": g}, opset=20)
    _run_raises(m, {"x": x, "g": g}, InvalidArgument)


# --- AffineGrid -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [[2, 3, 5, 7], [2, 1, 1, 4], [2, 3, 3, 1], [2, 3, 2, 3, 4], [2, 1, 1, 3, 1]], ids=str)
def test_affine_grid(size, align, dtype):
    r = len(size) - 2
    theta = rand((2, r, r + 1), dtype, seed=21)
    check(node_model("AffineGrid", {"t": theta}, opset=20, initializers={"s": np.array(size, np.int64)},
                     align_corners=align), {"t": theta}, rtol=1e-6, atol=1e-6)


def test_affine_grid_into_grid_sample():
    theta = np.array([[[0.9, 0.2, 0.1], [-0.1, 1.1, -0.2]]], np.float32)
    x = rand((1, 3, 6, 8), seed=22)
    from onnx import helper
    from oracle import make_model
    nodes = [helper.make_node("AffineGrid", ["t", "s"], ["g"], align_corners=0),
             helper.make_node("GridSample", ["x", "g"], ["y"], mode="linear")]
    m = make_model(nodes, {"x": (np.float32, x.shape), "t": (np.float32, theta.shape)}, ["y"],
                   {"s": np.array([1, 3, 5, 9], np.int64)}, opset=20)
    check(m, {"x": x, "t": theta}, rtol=1e-5, atol=1e-5)


# --- Col2Im ---------------------------------------------------------------------------------------------

COL2IM = [([3, 4], [2, 2], {}), ([5, 6], [2, 3], {"strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [1, 2]}),
          ([7], [3], {"strides": [2]}), ([3, 4, 5], [2, 2, 2], {}), ([6, 6], [3, 3], {"pads": [1, 1, 1, 1]})]


def _col2im_input(image: list[int], block: list[int], kw: dict, dtype: Any, seed: int) -> np.ndarray:
    k = len(image)
    st, pd, dl = kw.get("strides", [1] * k), kw.get("pads", [0] * 2 * k), kw.get("dilations", [1] * k)
    L = math.prod((image[d] + pd[d] + pd[k + d] - dl[d] * (block[d] - 1) - 1) // st[d] + 1 for d in range(k))
    return rand((2, 3 * math.prod(block), L), dtype, seed=seed)


@pytest.mark.parametrize("image,block,kw", COL2IM, ids=str)
def test_col2im(image, block, kw):
    x = _col2im_input(image, block, kw, np.float32, 23)
    inits = {"i": np.array(image, np.int64), "b": np.array(block, np.int64)}
    check(node_model("Col2Im", {"x": x}, opset=18, initializers=inits, **kw), {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_col2im_other_dtypes_vs_reference(dtype):
    image, block, kw = COL2IM[1]
    x = _col2im_input(image, block, kw, dtype, 24)
    inits = {"i": np.array(image, np.int64), "b": np.array(block, np.int64)}
    check_ref(node_model("Col2Im", {"x": x}, opset=18, initializers=inits, **kw), {"x": x}, 1e-12, 1e-12)


def test_col2im_bad_shape():
    x = rand((1, 8, 5))
    m = node_model("Col2Im", {"x": x}, opset=18,
                   initializers={"i": np.array([3, 4], np.int64), "b": np.array([2, 2], np.int64)})
    _run_raises(m, {"x": x}, InvalidArgument)
