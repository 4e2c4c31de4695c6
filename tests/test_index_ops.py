"""Trilu, OneHot, NonZero, Compress, ReverseSequence, DepthToSpace, SpaceToDepth (kernels/movement.py,
gather.py, layout.py) against onnxruntime or a numpy formula of the spec (helpers: tests/shape_cases.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

import jitort
from jitort.errors import InvalidArgument
from oracle import make_model
from shape_cases import DT_IDS, DTYPES, I64, both, case, data, i64, raises


# --- Trilu, OneHot, NonZero, Compress, ReverseSequence, DepthToSpace, SpaceToDepth ---------------

@pytest.mark.parametrize("shape", [[4, 4], [3, 5], [2, 5, 3], [0, 3]])
@pytest.mark.parametrize("k", [None, 0, 1, -1, 3, -7, I64.max, I64.min])
@pytest.mark.parametrize("upper", [0, 1])
def test_trilu(shape: list[int], k: int | None, upper: int) -> None:
    ins = [("x", data(shape)), ("k", None if k is None else np.array(k, np.int64))]
    case("Trilu", ins, ["k"], upper=upper, opset=14)


@pytest.mark.parametrize("dt", [np.float32, np.int64, np.bool_, np.float16, np.uint8], ids=DT_IDS[:5])
def test_trilu_dtypes(dt: Any) -> None:
    x = data([3, 4], dt)
    case("Trilu", [("x", x), ("k", np.array(1, np.int64))], opset=14, expect=[np.triu(x, 1)])
    case("Trilu", [("x", x)], opset=14, upper=0, expect=[np.tril(x)])


def _one_hot(ind: np.ndarray, depth: int, values: np.ndarray, axis: int) -> np.ndarray:
    i = ind.astype(np.int64)
    i = np.where(i < 0, i + depth, i)
    hot = np.moveaxis(i[..., None] == np.arange(depth), -1, axis)
    return np.where(hot, values[1], values[0])


# (indices, values, depth) dtypes: onnxruntime's kernels, then combinations only numpy checks.
ONE_HOT_ORT = [(np.int64, np.int64, np.int64), (np.float32, np.int64, np.int64), (np.int64, np.float32, np.int64),
               (np.int32, np.float32, np.float32), (np.int64, np.int32, np.float32),
               (np.float32, np.float32, np.float32), (np.int64, object, np.int64)]
ONE_HOT_NP = [(np.uint8, np.float64, np.int32), (np.int16, np.bool_, np.uint8), (np.float16, np.float16, np.int64)]


@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
@pytest.mark.parametrize("idt,vdt,ddt", ONE_HOT_ORT + ONE_HOT_NP)
@pytest.mark.parametrize("opset", [9, 11])
def test_one_hot(axis: int, idt: Any, vdt: Any, ddt: Any, opset: int) -> None:
    ind = np.array([[0, 2, 4], [1, 9, 3]]).astype(idt)
    if opset >= 11 and np.dtype(idt).kind != "u":
        ind[1, 1] = -2
    values = np.array(["off", "on"], object) if vdt is object else np.array([0, 3], vdt)
    ins = [("i", ind), ("d", np.array(5, ddt)), ("v", values)]
    expect = None if (idt, vdt, ddt) in ONE_HOT_ORT else [_one_hot(ind, 5, values, axis)]
    both("OneHot", ins, ["d", "v"], axis=axis, opset=opset, expect=expect)


def test_one_hot_float_depth() -> None:
    ins = [("i", i64(0, 3, 1)), ("d", np.array([4.7], np.float32)), ("v", np.array([0, 1], np.float32))]
    case("OneHot", ins, opset=11)


@pytest.mark.parametrize("dt", [np.float32, np.int64, np.bool_, np.uint8, np.float16], ids=DT_IDS[:3] + ["u8", "f16"])
@pytest.mark.parametrize("shape", [[5], [3, 4], [2, 3, 2], [0, 3]])
def test_non_zero(dt: Any, shape: list[int]) -> None:
    x = data(shape, dt) * (data(shape, np.bool_, seed=1) if dt is not np.bool_ else True)
    case("NonZero", [("x", x.astype(dt))], opset=13)


def test_non_zero_scalar_and_opset9() -> None:
    case("NonZero", [("x", np.array(3.0, np.float32))], opset=13)
    case("NonZero", [("x", np.array(0, np.int64))], opset=13)
    case("NonZero", [("x", np.zeros([2, 2], np.float32))], opset=9)


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("cond", [[True, False, True], [False, True], [False, False, False], [True]])
@pytest.mark.parametrize("opset", [9, 11])
def test_compress(axis: int | None, cond: list[bool], opset: int) -> None:
    if axis is not None and axis < 0 and opset < 11:
        return
    kw = {} if axis is None else {"axis": axis}
    both("Compress", [("x", data([3, 3])), ("c", np.array(cond))], ["c"], opset=opset, **kw)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_compress_dtypes(dt: Any) -> None:
    case("Compress", [("x", data([3, 2], dt)), ("c", np.array([True, False, True]))], axis=0)


@pytest.mark.parametrize("batch_axis,time_axis", [(1, 0), (0, 1)])
@pytest.mark.parametrize("lens", [[4, 3, 1], [1, 1, 1], [0, 2, 4]])
def test_reverse_sequence(batch_axis: int, time_axis: int, lens: list[int]) -> None:
    shape = [4, 3, 2] if batch_axis == 1 else [3, 4, 2]
    if 0 in lens:  # onnxruntime rejects zero lengths; the spec copies such a sequence unchanged
        x = data(shape)
        e = x.copy()
        for b, n in enumerate(lens):
            sl = (slice(None, n), b) if batch_axis == 1 else (b, slice(None, n))
            e[sl] = x[sl][::-1]
        case("ReverseSequence", [("x", x), ("l", i64(*lens))], batch_axis=batch_axis, time_axis=time_axis,
             expect=[e])
        return
    both("ReverseSequence", [("x", data(shape)), ("l", i64(*lens))], ["l"], batch_axis=batch_axis,
         time_axis=time_axis)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_reverse_sequence_dtypes(dt: Any) -> None:
    case("ReverseSequence", [("x", data([3, 2], dt)), ("l", i64(3, 2))], batch_axis=1, time_axis=0)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("shape,bs", [([1, 8, 2, 3], 2), ([2, 18, 1, 2], 3), ([1, 4, 2, 2], 1)])
def test_depth_to_space(mode: str, shape: list[int], bs: int) -> None:
    case("DepthToSpace", [("x", data(shape))], blocksize=bs, mode=mode, opset=13)
    x = data([2, shape[1] // (bs * bs), shape[2] * bs, shape[3] * bs])
    if mode == "DCR":
        case("SpaceToDepth", [("x", x)], blocksize=bs, opset=13)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_depth_space_dtypes_and_opsets(dt: Any) -> None:
    # onnxruntime: DepthToSpace only for float types, and none at opset 1; numpy's formula otherwise.
    x = data([1, 4, 2, 3], dt)
    e = x.reshape(1, 2, 2, 1, 2, 3).transpose(0, 3, 4, 1, 5, 2).reshape(1, 1, 4, 6)
    case("DepthToSpace", [("x", x)], blocksize=2, opset=11, expect=None if dt in (np.float32, np.float16) else [e])
    y = case("DepthToSpace", [("x", x)], blocksize=2, opset=1, expect=[e])[0]
    case("SpaceToDepth", [("x", y)], blocksize=2, opset=1, expect=[x])


def test_space_to_depth_crd_roundtrip() -> None:
    # SpaceToDepth-28's CRD mode is the inverse of DepthToSpace's CRD (onnxruntime stops before opset 28).
    x = data([2, 8, 2, 3])
    y = case("DepthToSpace", [("x", x)], blocksize=2, mode="CRD", opset=13)[0]
    case("SpaceToDepth", [("x", y)], blocksize=2, mode="CRD", opset=28, expect=[x])
    raises(InvalidArgument, "DepthToSpace", [("x", data([1, 3, 2, 2]))], "DepthToSpace", blocksize=2)


def test_registry_covers_every_version() -> None:
    """Every op of this family resolves at each opset version the spec defines for it."""
    import onnx

    from jitort.kernels.registry import lookup
    mine = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
            "GatherElements", "GatherND", "ScatterElements", "ScatterND", "Scatter", "Expand", "Shape", "Size",
            "ConstantOfShape", "Range", "Identity", "Dropout", "Tile", "Pad", "Trilu", "OneHot", "EyeLike",
            "NonZero", "Compress", "ReverseSequence", "DepthToSpace", "SpaceToDepth"}
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain == "" and s.name in mine:
            lookup(s.name, "", s.since_version)


def test_session_api_roundtrip() -> None:
    # The op family through the public API with a symbolic batch: no recompile for a new batch size.
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Transpose", ["r"], ["y"],
                                                                                perm=[0, 2, 1, 3])]
    m = make_model(nodes, {"x": (np.float32, ["b", 8, 6])}, ["y"], {"s": i64(0, 8, 2, 3)}, opset=17)
    sess = jitort.InferenceSession(m.SerializeToString())
    for b in (1, 3):
        x = data([b, 8, 6])
        (y,) = sess.run(None, {"x": x})
        np.testing.assert_array_equal(y, x.reshape(b, 8, 2, 3).transpose(0, 2, 1, 3))


def test_nan_inf_and_float16_reductions() -> None:
    x = np.array([[np.nan, np.inf, -np.inf], [1.5, -0.0, np.nan]], np.float32)
    case("Transpose", [("x", x)])
    both("Pad", [("x", x), ("p", i64(1, 1, 0, 1))], ["p"], mode="reflect")
    both("Gather", [("x", x), ("i", i64(-1, 0))], ["i"], axis=1)
    both("Slice", [("x", x), ("s", i64(-1)), ("e", i64(I64.min)), ("a", i64(1)), ("t", i64(-1))], ["s", "e", "a", "t"])
    # float16 reductions: onnxruntime has none; the oracle applies the updates one by one in float16.
    h, u = data([4], np.float16), data([3], np.float16, seed=2)
    for red, f in (("add", np.add), ("mul", np.multiply), ("max", np.maximum), ("min", np.minimum)):
        e = h.copy()
        for i, v in zip((1, 1, 3), u):
            e[i] = f(e[i], v)
        case("ScatterElements", [("x", h), ("i", i64(1, 1, -1)), ("u", u)], opset=18, reduction=red, expect=[e])
