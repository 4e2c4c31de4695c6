"""Shape and view ops (kernels/shape.py, kernels/movement.py, kernels/layout.py) against onnxruntime:
Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Identity, Concat, Split, Slice, Expand, Tile, Shape, Size,
ConstantOfShape, Range, EyeLike, Dropout, Pad.

Each case runs twice where it matters: with the shape/axes/indices inputs as initializers (the
compile-time ``lower=`` path that bakes them into tuples) and as feeds (the run-time path). Where
onnxruntime has no kernel (old opsets, opsets past its newest, some dtypes) a numpy formula of the
spec is the oracle (helpers: tests/shape_cases.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from oracle import assert_close, make_model
from shape_cases import DT_IDS, DTYPES, I64, both, case, data, i64, raises, run_jitort


# --- Reshape ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[6, 4], [-1], [0, -1], [2, 0, 4], [-1, 3, 2, 2], [24], [1, 2, 1, 12, 1],
                                   [0, 3, -1]])
@pytest.mark.parametrize("opset", [5, 13, 14, 21])
def test_reshape(shape: list[int], opset: int) -> None:
    both("Reshape", [("x", data([2, 3, 4])), ("s", i64(*shape))], ["s"], opset=opset)
    case("Reshape", [("x", data([2, 3, 4])), ("s", i64(*shape))], ["s"], opset=opset, sym=True)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_reshape_dtypes(dt: Any) -> None:
    both("Reshape", [("x", data([2, 3, 4], dt)), ("s", i64(4, -1))], ["s"])


@pytest.mark.parametrize("shape,x", [([0, 4], [0, 2, 2]), ([3, 0], [0, 5]), ([0], [2, 0])])
def test_reshape_allowzero(shape: list[int], x: list[int]) -> None:
    both("Reshape", [("x", data(x)), ("s", i64(*shape))], ["s"], opset=14, allowzero=1)


def test_reshape_0d() -> None:
    both("Reshape", [("x", data([1, 1])), ("s", np.zeros(0, np.int64))], ["s"])
    both("Reshape", [("x", data([])), ("s", i64(1, 1, -1))], ["s"])


def test_reshape_1_attr() -> None:
    x = data([2, 3, 4])
    case("Reshape", [("x", x)], opset=1, shape=[4, 0, -1], expect=[x.reshape(4, 3, 2)])
    case("Reshape", [("x", x)], opset=1, shape=[0, 0, 2, 2], sym=True, expect=[x.reshape(2, 3, 2, 2)])
    raises(InvalidArgument, "Reshape", [("x", data([6]))], "Reshape", opset=1, shape=[0, 0], sym=True)


@pytest.mark.parametrize("const", [True, False])
def test_reshape_bad(const: bool) -> None:
    raises(InvalidArgument, "Reshape", [("x", data([2, 3])), ("s", i64(4, 2))], "Reshape",
           const=["s"] if const else [])
    # a dimension below -1 (numpy would read it as -1; onnxruntime refuses it)
    raises(InvalidArgument, "Reshape", [("x", data([2, 3])), ("s", i64(-3))], "Reshape",
           const=["s"] if const else [])


# --- Transpose, Flatten, Squeeze, Unsqueeze, Identity -------------------------------------------

@pytest.mark.parametrize("shape,perm", [([1, 128, 12, 64], [0, 2, 1, 3]), ([2, 3, 4], None), ([2, 3], [1, 0]),
                                        ([2, 3, 4, 5, 6], [4, 0, 3, 1, 2]), ([5], [0]), ([], None),
                                        ([2, 1, 3], [1, 0, 2]), ([3, 0, 2], [2, 1, 0]), ([2, 3, 4], [0, 1, 2])])
def test_transpose(shape: list[int], perm: list[int] | None) -> None:
    kw = {} if perm is None else {"perm": perm}
    case("Transpose", [("x", data(shape))], **kw)
    case("Transpose", [("x", data(shape))], sym=True, **kw)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("opset", [1, 13, 21])
def test_transpose_dtypes(dt: Any, opset: int) -> None:
    x = data([2, 3, 4], dt)
    case("Transpose", [("x", x)], opset=opset, perm=[2, 0, 1], expect=[x.transpose(2, 0, 1)])


# The last axis moves (the tiled kernel): full 8x8 tiles, ragged edges, batch axes before, between
# and after the two tiled axes, size-1 axes and merged runs; channel shuffles keep the last axis.
TILED = [([1, 64, 56, 56], [0, 2, 3, 1]), ([1, 56, 56, 64], [0, 3, 1, 2]), ([37, 45], [1, 0]), ([8, 8], [1, 0]),
         ([2, 19, 3, 24], [0, 3, 1, 2]), ([2, 9, 3, 16], [3, 0, 2, 1]), ([3, 17, 1, 9, 13], [3, 2, 1, 4, 0]),
         ([2, 24, 3, 10], [3, 1, 0, 2]), ([1, 4, 34, 28, 28], [0, 2, 1, 3, 4]), ([2, 16, 12, 40], [0, 2, 3, 1])]


@pytest.mark.parametrize("shape,perm", TILED)
def test_transpose_tiled(shape: list[int], perm: list[int]) -> None:
    case("Transpose", [("x", data(shape))], perm=perm)


@pytest.mark.parametrize("dt", [np.float64, np.int8, np.float16, np.bool_, np.int32, np.uint64, object],
                         ids=["f64", "i8", "f16", "bool", "i32", "u64", "str"])
def test_transpose_tiled_dtypes(dt: Any) -> None:
    for shape, perm in (([3, 37, 41], [0, 2, 1]), ([2, 11, 5, 24], [0, 3, 1, 2])):
        x = data(shape, dt)
        case("Transpose", [("x", x)], perm=perm, expect=[x.transpose(perm)])


def test_transpose_complex_and_bad_perm() -> None:
    from jitort.kernels import layout as L
    for dt in (np.complex64, np.complex128):  # 8 bytes: tiled; 16: numpy
        x = (data([2, 11, 24]) + 1j * data([2, 11, 24], seed=1)).astype(dt)
        np.testing.assert_array_equal(L._transpose(x, (2, 0, 1)), x.transpose(2, 0, 1))
    for perm in ([0, 0, 1], [0, 1], [0, 1, 3]):
        raises(InvalidArgument, "Transpose", [("x", data([2, 3, 4]))], "not a permutation", perm=perm)


def test_transpose_batch_change_does_not_compile() -> None:
    from jitort.kernels import layout as L
    L._transpose(data([2, 16, 12]), (0, 2, 1))
    n = len(L._transpose_tiles.signatures)
    for shape, perm in (([5, 31, 9], (0, 2, 1)), ([3, 4, 17, 10], (3, 0, 2, 1)), ([64, 64], (1, 0))):
        x = data(shape)
        np.testing.assert_array_equal(L._transpose(x, perm), x.transpose(perm))
    assert len(L._transpose_tiles.signatures) == n


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
@pytest.mark.parametrize("opset", [9, 11, 13, 21])
def test_flatten(axis: int, opset: int) -> None:
    if axis < 0 and opset < 11:
        return
    case("Flatten", [("x", data([2, 3, 4]))], opset=opset, axis=axis)
    case("Flatten", [("x", data([2, 0, 4]))], opset=opset, axis=axis, sym=True)


def test_flatten_1_and_dtypes() -> None:
    x = data([2, 3, 4], np.int64)
    case("Flatten", [("x", x)], opset=1, expect=[x.reshape(2, 12)])
    for dt in DTYPES:
        case("Flatten", [("x", data([2, 3, 4], dt))], opset=13, axis=2)


@pytest.mark.parametrize("shape,axes", [([1, 3, 1, 2], [0]), ([1, 3, 1, 2], [0, 2]), ([1, 3, 1, 2], [-2]),
                                        ([1, 3, 1, 2], None), ([1, 1], [1, 0]), ([1], [0]), ([3, 2], None)])
@pytest.mark.parametrize("opset", [1, 11, 13, 21])
def test_squeeze(shape: list[int], axes: list[int] | None, opset: int) -> None:
    if axes is not None and min(axes) < 0 and opset < 11:
        return
    x = data(shape)
    if opset < 13:
        kw = {} if axes is None else {"axes": axes}
        case("Squeeze", [("x", x)], opset=opset, **kw)
        case("Squeeze", [("x", x)], opset=opset, sym=True, **kw)
    elif axes is None:  # onnxruntime fails ("Axes input is null"): the spec squeezes every 1
        case("Squeeze", [("x", x), ("a", None)], opset=opset, sym=True, expect=[x.squeeze()])
    else:
        both("Squeeze", [("x", x), ("a", i64(*axes))], ["a"], opset=opset)
        case("Squeeze", [("x", x), ("a", i64(*axes))], ["a"], opset=opset, sym=True)


@pytest.mark.parametrize("const", [True, False])
def test_squeeze_bad(const: bool) -> None:
    raises(InvalidArgument, "Squeeze", [("x", data([1, 3])), ("a", i64(1))], "Squeeze", opset=13,
           const=["a"] if const else [])


@pytest.mark.parametrize("shape,axes", [([3, 2], [0]), ([3, 2], [2]), ([3, 2], [-1]), ([3, 2], [3, 0]),
                                        ([3, 2], [-1, 1, 0]), ([], [0]), ([], [0, -1]), ([2, 0], [1])])
@pytest.mark.parametrize("opset", [1, 11, 13, 21])
def test_unsqueeze(shape: list[int], axes: list[int], opset: int) -> None:
    if min(axes) < 0 and opset < 11:
        return
    x = data(shape, np.int64)
    if opset < 13:
        case("Unsqueeze", [("x", x)], opset=opset, axes=axes)
        case("Unsqueeze", [("x", x)], opset=opset, axes=axes, sym=True)
    else:
        both("Unsqueeze", [("x", x), ("a", i64(*axes))], ["a"], opset=opset)
        case("Unsqueeze", [("x", x), ("a", i64(*axes))], ["a"], opset=opset, sym=True)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_squeeze_unsqueeze_identity_dtypes(dt: Any) -> None:
    x = data([1, 3, 1], dt)
    case("Squeeze", [("x", x), ("a", i64(0))], ["a"], opset=13)
    case("Unsqueeze", [("x", x), ("a", i64(1, -1))], ["a"], opset=13)
    case("Identity", [("x", x)])
    case("Identity", [("x", x)], opset=1)


def test_unsqueeze_bad() -> None:
    raises(InvalidArgument, "Unsqueeze", [("x", data([3])), ("a", i64(0, 0))], "Unsqueeze", opset=13)
    raises(InvalidArgument, "Unsqueeze", [("x", data([3])), ("a", i64(5))], "Unsqueeze", opset=13, sym=True)


# --- Concat, Split ------------------------------------------------------------------------------

@pytest.mark.parametrize("shapes,axis", [([[2, 3], [4, 3]], 0), ([[2, 3], [2, 1], [2, 0]], 1),
                                         ([[2, 3], [2, 3]], -1), ([[0], [3], [0]], 0), ([[2, 3, 4]], 1),
                                         ([[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3]], -2),
                                         ([[0, 3], [0, 3]], 0)])
@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_concat(shapes: list[list[int]], axis: int, dt: Any) -> None:
    ins = [(f"x{k}", data(s, dt, seed=k)) for k, s in enumerate(shapes)]
    case("Concat", ins, axis=axis, opset=13)


@pytest.mark.parametrize("opset", [4, 11])
def test_concat_opsets(opset: int) -> None:
    case("Concat", [("a", data([2, 3])), ("b", data([2, 2]))], axis=1, opset=opset)
    if opset >= 11:
        case("Concat", [("a", data([2, 3])), ("b", data([1, 3]))], axis=-2, opset=opset)


def test_concat_1_default_axis() -> None:
    a, b = data([2, 3]), data([2, 2])
    case("Concat", [("a", a), ("b", b)], opset=1, expect=[np.concatenate([a, b], 1)])


def test_concat_bad() -> None:
    raises(InvalidArgument, "Concat", [("a", data([2, 3])), ("b", data([3, 2]))], "Concat", axis=0, sym=True)


@pytest.mark.parametrize("split,axis,n", [([2, 4], 1, 2), ([1, 1, 4], -1, 3), ([0, 6], 1, 2), ([6], 1, 1),
                                          (None, 1, 3), (None, 0, 2), (None, -1, 6)])
@pytest.mark.parametrize("opset", [2, 11, 13, 18])
def test_split(split: list[int] | None, axis: int, n: int, opset: int) -> None:
    if (axis < 0 and opset < 11) or (split is None and opset >= 18):
        return  # Split-18 needs 'split' or num_outputs
    x = data([4, 6], np.float32)
    if opset < 13:
        kw = {} if split is None else {"split": split}
        case("Split", [("x", x)], n_out=n, opset=opset, axis=axis, **kw)
    else:
        both("Split", [("x", x), ("s", None if split is None else i64(*split))], ["s"], n_out=n, opset=opset,
             axis=axis)


@pytest.mark.parametrize("dim,n", [(7, 3), (6, 4), (5, 2), (4, 4), (10, 3), (1, 1)])
def test_split_num_outputs(dim: int, n: int) -> None:
    x = data([2, dim])
    chunk = -(-dim // n)
    sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
    expect = np.split(x, np.cumsum(sizes)[:-1], axis=1)
    case("Split", [("x", x)], n_out=n, opset=18, axis=-1, num_outputs=n, expect=expect)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_split_dtypes(dt: Any) -> None:
    both("Split", [("x", data([3, 5], dt)), ("s", i64(2, 3))], ["s"], n_out=2, opset=13, axis=1)


def test_split_1_and_bad() -> None:
    x = data([6, 2])
    case("Split", [("x", x)], n_out=2, opset=1, axis=0, split=[4, 2], expect=[x[:4], x[4:]])
    case("Split", [("x", x), ("s", i64(1, 5))], const=["s"], n_out=2, opset=1, axis=0, expect=[x[:1], x[1:]])
    case("Split", [("x", x)], n_out=3, opset=1, axis=0, expect=np.split(x, 3))
    raises(InvalidArgument, "Split", [("x", x), ("s", i64(1, 2))], "Split", n_out=2, opset=13)
    raises(InvalidArgument, "Split", [("x", data([5, 2]))], "Split", n_out=2, opset=13, sym=True)


# --- Slice --------------------------------------------------------------------------------------

SLICES = [
    ([0, 1], [2, 3], None, None),
    ([1], [-1], [1], None),
    ([-1], [-I64.max], [0], [-1]),          # reverse the whole axis with INT64-style extremes
    ([5], [I64.min], [0], [-1]),            # start past the end, negative step: clamps to dim-1
    ([-100], [I64.min], [0], [-1]),         # start below -dim with negative step: clamps to 0
    ([0], [I64.max], [-1], [2]),
    ([3, 0], [0, 5], [1, 2], [-1, 2]),
    ([1, 0, 0], [3, 10, 1000], [0, 1, 2], [1, 3, 4]),
    ([-3], [-1], [-2], None),
    ([2], [1], [0], None),                  # empty
    ([0], [-1], [0], [-1]),                 # empty: -1 end is the last element
    ([I64.min], [I64.max], [2], None),
    ([4], [-7], [2], [-2]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice(starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None) -> None:
    x = data([4, 5, 6])
    ins = [("x", x), ("s", i64(*starts)), ("e", i64(*ends)), ("a", None if axes is None else i64(*axes)),
           ("t", None if steps is None else i64(*steps))]
    both("Slice", ins, ["s", "e", "a", "t"], opset=13)
    case("Slice", ins, ["s", "e", "a", "t"], opset=13, sym=True)


@pytest.mark.parametrize("opset", [10, 11, 13])
@pytest.mark.parametrize("ind", [np.int32, np.int64])
def test_slice_opsets(opset: int, ind: Any) -> None:
    x = data([3, 4], np.int64)
    st, en, ax = np.array([-2], ind), np.array([100], ind), np.array([1], ind)
    both("Slice", [("x", x), ("s", st), ("e", en), ("a", ax)], ["s", "e", "a"], opset=opset)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_slice_dtypes(dt: Any) -> None:
    both("Slice", [("x", data([4, 5], dt)), ("s", i64(3, 1)), ("e", i64(0, 5)), ("a", i64(0, 1)),
                   ("t", i64(-1, 2))], ["s", "e", "a", "t"], opset=13)


def test_slice_1() -> None:
    x = data([4, 5, 6])
    case("Slice", [("x", x)], opset=1, starts=[1, -2], ends=[1000, -1], axes=[0, 2], expect=[x[1:, :, -2:-1]])
    case("Slice", [("x", x)], opset=1, starts=[0, 1], ends=[2, 3], expect=[x[0:2, 1:3]])


def test_slice_bad() -> None:
    x = data([4, 5])
    raises(InvalidArgument, "Slice", [("x", x), ("s", i64(0)), ("e", i64(2)), ("a", i64(0)), ("t", i64(0))],
           "Slice", opset=13)
    raises(InvalidArgument, "Slice", [("x", x), ("s", i64(0, 0)), ("e", i64(2, 2)), ("a", i64(0, -2))],
           "Slice", opset=13)


# --- Expand, Tile, Shape, Size, ConstantOfShape, Range, EyeLike ---------------------------------

@pytest.mark.parametrize("xs,shape", [([3, 1], [2, 1, 4]), ([3, 4], [4]), ([1], [2, 3]), ([2, 3], [2, 3]),
                                      ([], [2, 2]), ([3, 1], [1, 1]), ([2, 1, 1], [3, 0]), ([1, 4], [3, 1])])
@pytest.mark.parametrize("opset", [8, 13])
def test_expand(xs: list[int], shape: list[int], opset: int) -> None:
    both("Expand", [("x", data(xs)), ("s", i64(*shape))], ["s"], opset=opset)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_expand_tile_dtypes(dt: Any) -> None:
    both("Expand", [("x", data([2, 1], dt)), ("s", i64(2, 3))], ["s"])
    both("Tile", [("x", data([2, 1], dt)), ("r", i64(2, 3))], ["r"])


def test_expand_bad() -> None:
    raises(InvalidArgument, "Expand", [("x", data([3])), ("s", i64(2, 4))], "Expand")


@pytest.mark.parametrize("xs,reps", [([2, 3], [1, 1]), ([2, 3], [2, 3]), ([2, 3], [0, 2]), ([3], [4]),
                                     ([2, 1, 2], [1, 3, 2]), ([0, 2], [3, 1])])
@pytest.mark.parametrize("opset", [6, 13])
def test_tile(xs: list[int], reps: list[int], opset: int) -> None:
    both("Tile", [("x", data(xs, np.int64)), ("r", i64(*reps))], ["r"], opset=opset)


def test_tile_1_and_bad() -> None:
    x = data([2, 3])
    case("Tile", [("x", x), ("t", np.array(3, np.int64)), ("a", np.array(1, np.int64))], opset=1,
         expect=[np.tile(x, [1, 3])])
    raises(InvalidArgument, "Tile", [("x", x), ("r", i64(2))], "Tile", sym=True)


@pytest.mark.parametrize("start,end", [(0, None), (1, None), (-1, None), (0, 2), (1, -1), (-10, 10), (2, 1),
                                       (5, None), (None, -5)])
@pytest.mark.parametrize("opset", [15, 19, 21])
def test_shape(start: int | None, end: int | None, opset: int) -> None:
    kw = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    case("Shape", [("x", data([2, 3, 4]))], opset=opset, sym=True, **kw)
    case("Shape", [("x", data([2, 3, 4]))], opset=opset, **kw)  # folded at compile time


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("opset", [1, 13])
def test_shape_size_dtypes(dt: Any, opset: int) -> None:
    if opset == 1 and dt is np.float16:
        return  # onnxruntime's float16 fallback inserts a Cast invalid at opset 1
    for shape in ([2, 3], [], [0, 4]):
        case("Shape", [("x", data(shape, dt))], opset=opset, sym=True)
        case("Size", [("x", data(shape, dt))], opset=opset, sym=True)


@pytest.mark.parametrize("value", [None, np.array([7], np.int32), np.array([0.5], np.float16), np.array([True]),
                                   np.array([-3], np.int64), np.array([2.25], np.float64), np.array([0], np.uint8),
                                   np.array([0.0], np.float32), np.array([-0.0], np.float32)])
@pytest.mark.parametrize("shape", [[2, 3], [], [0, 2], [4]])
def test_constant_of_shape(value: np.ndarray | None, shape: list[int]) -> None:
    kw = {} if value is None else {"value": helper.make_tensor("v", helper.np_dtype_to_tensor_dtype(value.dtype),
                                                                [1], value.tolist())}
    case("ConstantOfShape", [("s", i64(*shape))], opset=9, **kw)
    (y,) = case("ConstantOfShape", [("s", i64(*shape))], opset=21, **kw)
    if value is not None and value.dtype.kind == "f":  # -0.0 keeps its sign
        assert (np.signbit(y) == np.signbit(value[0])).all()


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("sld", [(0, 10, 3), (10, 4, -2), (3, 3, 1), (5, 1, 1), (-2, 7, 2), (1, 2, 5)])
def test_range(dt: Any, sld: tuple[int, int, int]) -> None:
    ins = [(n, np.array(v, dt)) for n, v in zip("sld", sld)]
    case("Range", ins, opset=11)
    case("Range", ins, const=["s", "l", "d"], opset=11)


def test_range_fractional_and_new() -> None:
    ins = [("s", np.array(0.1, np.float32)), ("l", np.array(1.0, np.float32)), ("d", np.array(0.3, np.float32))]
    case("Range", ins, opset=11)
    ins = [("s", np.array(1, np.float16)), ("l", np.array(3, np.float16)), ("d", np.array(0.5, np.float16))]
    case("Range", ins, opset=27, expect=[np.array([1, 1.5, 2, 2.5], np.float16)])
    raises(InvalidArgument, "Range", [("s", i64(0)[0:1].reshape(())), ("l", np.array(3)), ("d", np.array(0))],
           "Range")


@pytest.mark.parametrize("shape,k,dtype", [([3, 3], 0, None), ([3, 5], 1, None), ([4, 2], -1, None),
                                           ([3, 3], 5, None), ([2, 4], 0, 7), ([3, 3], 0, 9), ([3, 2], -2, 10)])
@pytest.mark.parametrize("opset", [9, 22])
def test_eye_like(shape: list[int], k: int, dtype: int | None, opset: int) -> None:
    kw = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    # onnxruntime has no bool (9) or float16 (10) EyeLike
    expect = None if dtype in (None, 7) else [np.eye(*shape, k=k, dtype=helper.tensor_dtype_to_np_dtype(dtype))]
    case("EyeLike", [("x", data(shape, np.int32))], opset=opset, expect=expect, **kw)


# --- Dropout, Identity --------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [7, 10, 12, 13, 22])
@pytest.mark.parametrize("mask", [False, True])
def test_dropout(opset: int, mask: bool) -> None:
    x = data([2, 3])
    n = 2 if mask else 1
    if opset >= 12:
        ins = [("x", x), ("r", np.array(0.3, np.float32)), ("t", np.array(False))]
        both("Dropout", ins, ["r", "t"], opset=opset, n_out=n)
        case("Dropout", [("x", x)], opset=opset, n_out=n)
    else:
        expect = [x, np.ones(x.shape, np.bool_ if opset >= 10 else np.float32)][:n]
        case("Dropout", [("x", x)], opset=opset, n_out=n, ratio=0.2, expect=expect)


@pytest.mark.parametrize("const", [True, False])
def test_dropout_training_mode(const: bool) -> None:
    raises(OrtNotImplemented, "Dropout", [("x", data([2])), ("r", np.array(0.5, np.float32)), ("t", np.array(True))],
           "training_mode", opset=13, const=["r", "t"] if const else [])


def test_identity_in_graph_and_dropout_old() -> None:
    x = data([2, 2])
    nodes = [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Dropout", ["a"], ["b"]),
             helper.make_node("Identity", ["b"], ["y"])]
    m = make_model(nodes, {"x": (np.float32, [2, 2])}, ["y"], opset=6)
    assert_close(run_jitort(m, {"x": x}), [x], 0, 0)
    case("Dropout", [("x", x)], opset=6, n_out=2, is_test=1, expect=[x, np.ones_like(x)])


@pytest.mark.parametrize("read", [False, True])
def test_dropout_with_an_unread_mask_leaves_the_plan(read: bool) -> None:
    """Exporters of opset <= 9 name Dropout's mask output though nothing reads it (squeezenet, alexnet,
    vgg19): such a Dropout is removed like an Identity; a mask that is read (here, a graph output)
    keeps the node, whose mask is all ones."""
    from jitort.compiler import optimize
    from jitort.frontend.importer import import_model
    x = data([2, 3])
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"], ratio=0.5), helper.make_node("Relu", ["d"], ["y"])]
    outs = ["y", "mask"] if read else ["y"]
    m = make_model(nodes, {"x": (np.float32, [2, 3])}, outs, opset=9)
    g = optimize(import_model(m), ["CPUExecutionProvider"])
    assert any(n.op_type == "Dropout" for n in g.nodes) == read
    want = [np.maximum(x, 0)] + ([np.ones(x.shape, np.float32)] if read else [])
    assert_close(run_jitort(m, {"x": x}), want, 0, 0)


# --- Pad ----------------------------------------------------------------------------------------

PADS = [[1, 2, 0, 1], [0, 0, 0, 0], [2, 1, 2, 3], [-1, 0, 0, -2], [-1, 1, 2, -1], [0, 3, 0, 0]]


@pytest.mark.parametrize("pads", PADS)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad(pads: list[int], mode: str) -> None:
    x = data([4, 5])
    ins = [("x", x), ("p", i64(*pads)), ("v", np.array(2.5, np.float32) if mode == "constant" else None)]
    both("Pad", ins, ["p", "v"], mode=mode, opset=19)


@pytest.mark.parametrize("opset", [11, 13, 18, 21])
def test_pad_opsets(opset: int) -> None:
    x = data([2, 3, 4])
    case("Pad", [("x", x), ("p", i64(0, 1, 1, 0, 2, 0))], ["p"], opset=opset, mode="reflect")
    case("Pad", [("x", x), ("p", i64(0, 1, -1, 1, 2, 0))], opset=opset)
    if opset >= 18:
        ins = [("x", x), ("p", i64(1, 2, 3, 0)), ("v", np.array(-1.0, np.float32)), ("a", i64(-1, 0))]
        both("Pad", ins, ["p", "v", "a"], opset=opset)
        ins = [("x", x), ("p", i64(1, 2)), ("v", None), ("a", i64(1))]
        both("Pad", ins, ["p", "a"], opset=opset, mode="edge")


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_pad_dtypes(dt: Any) -> None:
    x = data([3, 2], dt)
    expect = [np.pad(x, [(1, 0), (0, 2)], constant_values="")] if dt is object else None  # no string Pad in ORT
    case("Pad", [("x", x), ("p", i64(1, 0, 0, 2))], ["p"], opset=13, expect=expect)
    if dt is not object:
        case("Pad", [("x", x), ("p", i64(1, 1, 1, 0))], ["p"], opset=13, mode="edge")
        v = np.array(1, dt)
        case("Pad", [("x", x), ("p", i64(0, 1, 2, 0)), ("v", v)], ["p"], opset=13)


def test_pad_2_attr() -> None:
    x = data([2, 3])
    case("Pad", [("x", x)], opset=2, pads=[1, 0, 0, 2], value=1.5,
         expect=[np.pad(x, [(1, 0), (0, 2)], constant_values=1.5)])
    case("Pad", [("x", x)], opset=2, pads=[0, 1, 0, 1], mode="reflect", expect=[np.pad(x, [(0, 0), (1, 1)], "reflect")])
    case("Pad", [("x", x)], opset=1, paddings=[0, 1, 0, 1], mode="edge", expect=[np.pad(x, [(0, 0), (1, 1)], "edge")])
