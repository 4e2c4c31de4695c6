"""The Gather and Scatter families (kernels/gather.py) against onnxruntime, with the indices as
initializers and as feeds (helpers: tests/shape_cases.py)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

import jitort
from jitort.errors import InvalidArgument
from oracle import assert_close, make_model, rand
from shape_cases import DT_IDS, DTYPES, both, case, data, i64, raises, run_jitort


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


def test_gather_one_row_copies() -> None:
    """One index on axis 0 (a decode step's token embedding, [batch, seq] = [1, 1]) takes a lean path;
    its output is a copy: writing into it leaves the table alone."""
    table = data([6, 4])
    for ind in (np.array([[3]]), np.array([[-6]]), np.array([5], np.int32)):
        both("Gather", [("x", table), ("i", ind)], ["x"], axis=0)
    m = make_model([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)], {"i": (np.int64, [1, 1])}, ["y"],
                   {"x": table}, opset=13)
    sess = jitort.InferenceSession(m.SerializeToString())
    y = sess.run(None, {"i": np.array([[2]])})[0]
    y[...] = 0
    assert_close(sess.run(None, {"i": np.array([[2]])}), [table[[[2]]]], 0, 0)


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
