"""Shape and data-movement ops (kernels/shape.py, kernels/layout.py, kernels/gather.py) against onnxruntime.

Each case runs twice where it matters: with the shape/axes/indices inputs as initializers (the
compile-time ``lower=`` path that bakes them into tuples) and as feeds (the run-time path). Where
onnxruntime has no kernel (old opsets, opsets past its newest, some dtypes) a numpy formula of the
spec is the oracle.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pytest
from onnx import helper

import jitort
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from oracle import assert_close, make_model, rand, run_ort

I64 = np.iinfo(np.int64)
DTYPES = [np.float32, np.int64, np.bool_, np.float16, np.uint8, object]
DT_IDS = ["f32", "i64", "bool", "f16", "u8", "str"]


def data(shape: Sequence[int], dt: Any = np.float32, seed: int = 0) -> np.ndarray:
    if dt is object:
        rng = np.random.default_rng(seed)
        vals = [f"s{v}" for v in rng.integers(0, 50, size=math.prod(shape))]
        return np.array(vals + [""], dtype=object)[:-1].reshape(shape)
    return np.asarray(rand(shape, dt, seed))


def run_jitort(m: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = jitort.InferenceSession(m.SerializeToString())
    return sess.run(None, feeds)


def i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def model(op: str, ins: Sequence[tuple[str, np.ndarray | None]], const: Sequence[str] = (), n_out: int = 1,
          opset: int = 17, sym: bool = False, **attrs: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """One node; ``ins`` in input order (None: omitted input); names in ``const`` become initializers;
    ``sym`` gives every feed symbolic dims (nothing is folded from static shapes)."""
    names = [n if a is not None else "" for n, a in ins]
    feeds = {n: a for n, a in ins if a is not None and n not in const}
    inits = {n: a for n, a in ins if a is not None and n in const}
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    decl = {n: (a.dtype, [f"{n}_{k}" for k in range(a.ndim)] if sym else list(a.shape)) for n, a in feeds.items()}
    return make_model([node], decl, outs, inits, opset), feeds


def case(op: str, ins: Sequence[tuple[str, np.ndarray | None]], const: Sequence[str] = (), n_out: int = 1,
         opset: int = 17, sym: bool = False, expect: Sequence[np.ndarray] | None = None,
         **attrs: Any) -> list[np.ndarray]:
    m, feeds = model(op, ins, const, n_out, opset, sym, **attrs)
    got = run_jitort(m, feeds)
    assert_close(got, run_ort(m, feeds) if expect is None else [np.asarray(e) for e in expect], 0, 0)
    for g in got:
        assert g.flags.c_contiguous, "outputs must be C-contiguous"
    return got


def both(op: str, ins: Sequence[tuple[str, np.ndarray | None]], params: Sequence[str], **kw: Any) -> None:
    """The case with the ``params`` inputs as initializers, then as feeds."""
    case(op, ins, const=params, **kw)
    case(op, ins, const=(), **kw)


def raises(exc: type, op: str, ins: Sequence[tuple[str, np.ndarray | None]], match: str = "", **kw: Any) -> None:
    m, feeds = model(op, ins, **kw)
    with pytest.raises(exc, match=match):
        run_jitort(m, feeds)


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


# --- Gather family ------------------------------------------------------------------------------

@pytest.mark.parametrize("ind", [np.array(1), np.array(-1), np.array([0, 2, -1, 2]), np.array([[1, 0], [-2, 2]]),
                                 np.zeros(0, np.int64)])
@pytest.mark.parametrize("axis", [0, 1, -1, 2])
@pytest.mark.parametrize("idt", [np.int32, np.int64])
def test_gather(ind: np.ndarray, axis: int, idt: Any) -> None:
    both("Gather", [("x", data([3, 4, 3])), ("i", ind.astype(idt))], ["i"], axis=axis, opset=13)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_gather_dtypes(dt: Any) -> None:
    x = data([5, 2], dt)
    # onnxruntime 1.31 copies only the first string of each gathered row: numpy is the oracle there.
    both("Gather", [("x", x), ("i", i64(4, 0, -5))], ["i"], axis=0,
         expect=[x[[4, 0, -5]]] if dt is object else None)
    both("Gather", [("x", data([5], dt)), ("i", np.array(-2))], ["i"], axis=0)
    case("Gather", [("x", data([5, 2], dt)), ("i", np.array(1))], ["i"], axis=1, sym=True)


def test_gather_shape_scalar_chain() -> None:
    # Shape -> Gather(scalar) -> Unsqueeze, the transformer shape idiom, at run time.
    x = data([2, 7, 3])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i"], ["g"], axis=0),
             helper.make_node("Unsqueeze", ["g", "a"], ["y"])]
    m = make_model(nodes, {"x": (np.float32, ["b", "t", 3])}, ["y", "g"],
                   {"i": np.array(1, np.int64), "a": i64(0)}, opset=13)
    assert_close(run_jitort(m, {"x": x}), [i64(7), np.array(7)], 0, 0)


@pytest.mark.parametrize("opset", [1, 11])
def test_gather_opsets(opset: int) -> None:
    ind = i64(1, 0) if opset < 11 else i64(-1, 0)
    both("Gather", [("x", data([3, 4])), ("i", ind)], ["i"], axis=1, opset=opset)


@pytest.mark.parametrize("ind", [i64(3), i64(0, -4), np.array(5)])
@pytest.mark.parametrize("const", [True, False])
def test_gather_out_of_range(ind: np.ndarray, const: bool) -> None:
    raises(InvalidArgument, "Gather", [("x", data([3, 2])), ("i", ind)], "Gather.*out of data bounds",
           const=["i"] if const else [], axis=0)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("idt", [np.int32, np.int64])
def test_gather_elements(axis: int, idt: Any) -> None:
    x = data([3, 4])
    ind = rand([2, 4] if axis == 0 else [3, 3], np.int64, seed=axis + 1) % 3 - 1
    both("GatherElements", [("x", x), ("i", ind.astype(idt))], ["i"], axis=axis, opset=13)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_gather_elements_dtypes_and_bad(dt: Any) -> None:
    x = data([2, 3, 2], dt)
    case("GatherElements", [("x", x), ("i", i64(0, 2, -1, 1).reshape(1, 2, 2))], axis=1, opset=11)
    if dt is np.float32:
        raises(InvalidArgument, "GatherElements", [("x", x), ("i", i64(3).reshape(1, 1, 1))], "GatherElements",
               axis=1)


@pytest.mark.parametrize("dshape,ind,b", [
    ([2, 3], [[0, 1], [1, 2]], 0), ([2, 3], [[1], [0]], 0), ([2, 3, 4], [[[0, 1]], [[1, -1]]], 0),
    ([2, 3, 4], [[1], [2]], 1), ([2, 3, 4], [[[1, 0], [2, 3]], [[0, 0], [1, 1]]], 1),
    ([2, 2, 3, 2], [[[1], [2]], [[0], [1]]], 2), ([3, 2], [[-1, -2]], 0), ([2, 3], [[]], 0)])
@pytest.mark.parametrize("opset", [12, 13])
def test_gather_nd(dshape: list[int], ind: list, b: int, opset: int) -> None:
    i = np.array(ind, np.int64).reshape(np.array(ind).shape)
    both("GatherND", [("x", data(dshape)), ("i", i)], ["i"], batch_dims=b, opset=opset)


@pytest.mark.parametrize("dt", DTYPES, ids=DT_IDS)
def test_gather_nd_dtypes(dt: Any) -> None:
    case("GatherND", [("x", data([3, 2], dt)), ("i", i64(2, 0, 1).reshape(3, 1))], opset=11)
    if dt is np.float32:
        raises(InvalidArgument, "GatherND", [("x", data([3, 2])), ("i", i64(3, 0).reshape(1, 2))], "GatherND")


# --- Scatter family -----------------------------------------------------------------------------

@pytest.mark.parametrize("reduction,opset", [("none", 11), ("none", 13), ("add", 16), ("mul", 16), ("max", 18),
                                             ("min", 18), ("none", 18)])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements(reduction: str, opset: int, axis: int) -> None:
    x = data([3, 4])
    ind = i64(0, 2, -1, 1, 0, -3).reshape(2, 3) if axis == 0 else i64(3, 0, -1, 1, 2, -4).reshape(2, 3)
    if reduction == "none":  # duplicates are undefined without a reduction
        ind = i64(0, 2, 1, 1, 0, 2).reshape(2, 3) if axis == 0 else i64(3, 0, 1, 1, 2, 0).reshape(2, 3)
    kw = {} if opset < 16 else {"reduction": reduction}
    both("ScatterElements", [("x", x), ("i", ind), ("u", data([2, 3], seed=1))], ["i"], axis=axis, opset=opset,
         **kw)


@pytest.mark.parametrize("dt", [np.float32, np.int64, np.bool_, np.float16, np.uint8], ids=DT_IDS[:5])
def test_scatter_dtypes(dt: Any) -> None:
    case("ScatterElements", [("x", data([4], dt)), ("i", i64(1, -1)), ("u", data([2], dt, seed=3))], opset=13)
    case("ScatterND", [("x", data([4, 2], dt)), ("i", i64(3, 0).reshape(2, 1)), ("u", data([2, 2], dt, seed=3))],
         opset=13)


def test_scatter_strings_and_bad() -> None:
    x, u = data([4], object), data([2], object, seed=5)
    expect = x.copy()
    expect[[1, 3]] = u
    case("ScatterElements", [("x", x), ("i", i64(1, -1)), ("u", u)], opset=13, expect=[expect])
    raises(InvalidArgument, "ScatterElements", [("x", data([4])), ("i", i64(4)), ("u", data([1]))],
           "ScatterElements.*out of data bounds")
    raises(InvalidArgument, "ScatterND", [("x", data([4])), ("i", i64(-5).reshape(1, 1)), ("u", data([1]))],
           "ScatterND.*out of data bounds")


@pytest.mark.parametrize("opset", [9, 11])
def test_scatter_deprecated(opset: int) -> None:
    x, u = data([3, 3]), data([1, 2], seed=2)
    ind = i64(2, 0).reshape(1, 2)
    expect = x.copy()
    expect[0, 2], expect[0, 0] = u[0, 0], u[0, 1]
    case("Scatter", [("x", x), ("i", ind), ("u", u)], axis=1, opset=opset, expect=[expect])


@pytest.mark.parametrize("reduction,opset", [("none", 11), ("none", 13), ("add", 16), ("mul", 16), ("max", 18),
                                             ("min", 18)])
@pytest.mark.parametrize("ishape,ind", [([2, 1], [[1], [-1]]), ([2, 2], [[0, 1], [2, -3]]), ([1, 2, 1], [[[2], [0]]])])
def test_scatter_nd(reduction: str, opset: int, ishape: list[int], ind: list) -> None:
    x = data([3, 4])
    i = np.array(ind, np.int64).reshape(ishape)
    u = data(list(i.shape[:-1]) + [4] * (2 - i.shape[-1]), seed=4)
    kw = {} if opset < 16 else {"reduction": reduction}
    if reduction != "none":  # add duplicates, which the reductions combine
        i = np.concatenate([i, i], axis=0)
        u = np.concatenate([u, u * 2], axis=0)
    both("ScatterND", [("x", x), ("i", i), ("u", u)], ["i"], opset=opset, **kw)


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
