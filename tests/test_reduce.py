"""Reductions and normalisations (kernels/reduce.py, cumulative.py, topk.py, softmax.py) against onnxruntime.

Reduce* run with ``axes`` as an attribute (old opsets), as a constant input (the ``lower=`` path that
bakes them into a tuple) and as a feed (the run-time path). Where onnxruntime has no kernel (a
dtype, or a semantics it leaves undefined: NaN in ReduceMax/Min, the order of TopK(sorted=0)) a
numpy formula of the spec is the oracle.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnxruntime
import pytest
from onnx import helper

import jitort
from oracle import assert_close, make_model, rand, run_ort

onnxruntime.set_default_logger_severity(3)  # opset < 7 models warn on every session

REDUCE = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]
NAN = np.nan


def model(op: str, ins: Sequence[tuple[str, np.ndarray | None]], const: Sequence[str] = (), n_out: int = 1,
          opset: int = 18, **attrs: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """One node; ``ins`` in input order (None: omitted); names in ``const`` become initializers."""
    names = [n if a is not None else "" for n, a in ins]
    feeds = {n: a for n, a in ins if a is not None and n not in const}
    inits = {n: a for n, a in ins if a is not None and n in const}
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    m = make_model([node], {n: (a.dtype, list(a.shape)) for n, a in feeds.items()}, outs, inits, opset)
    return m, feeds


def run_jitort(m: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return jitort.InferenceSession(m.SerializeToString()).run(None, feeds)


def both(m: Any, feeds: dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-6) -> list[np.ndarray]:
    got = run_jitort(m, feeds)
    assert_close(got, run_ort(m, feeds), rtol, atol)
    return got


def tol(dt: Any) -> dict[str, float]:
    dt = np.dtype(dt)
    if dt == np.float16:
        return {"rtol": 4e-3, "atol": 4e-3}
    if dt == np.float32:
        return {"rtol": 2e-5, "atol": 2e-5}
    return {"rtol": 1e-10, "atol": 1e-12}


def reduce_data(op: str, shape: Sequence[int], dt: Any = np.float32, seed: int = 0) -> np.ndarray:
    x = rand(shape, dt, seed)
    if op == "ReduceLogSum":
        x = np.abs(x) + (1 if np.dtype(dt).kind in "iu" else 0.1)
    if op == "ReduceProd" and np.dtype(dt).kind == "f":
        x = (rand(shape, dt, seed, 0.5, 1.5))
    if op == "ReduceProd" and np.dtype(dt).kind in "iu":
        x = rand(shape, dt, seed, -0.2, 0.3)  # small integers: no overflow
    return np.asarray(x, dt)


def reduce_model(op: str, x: np.ndarray, axes: Sequence[int] | None, opset: int, form: str, **attrs: Any
                 ) -> tuple[Any, dict[str, np.ndarray]]:
    """form: 'attr' (axes attribute), 'const' (axes initializer) or 'feed' (axes a graph input)."""
    if form == "attr":
        if axes is not None:
            attrs["axes"] = list(axes)
        return model(op, [("x", x)], opset=opset, **attrs)
    a = None if axes is None else np.array(axes, np.int64)
    return model(op, [("x", x), ("axes", a)], const=("axes",) if form == "const" else (), opset=opset, **attrs)


def input_opset(op: str) -> int:
    return 13 if op == "ReduceSum" else 18


# --- Reduce*: axes, keepdims, forms -------------------------------------------------------------------

AXES = [None, (-1,), (0,), (1,), (0, 2), (1, 2), (0, 1, 2), (-3, -1), (2, 0, 2)]


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("form", ["attr", "const", "feed"])
def test_reduce_axes(op: str, form: str) -> None:
    opset = (11 if op == "ReduceSum" else 13) if form == "attr" else input_opset(op)
    for k, axes in enumerate(AXES):
        x = reduce_data(op, (3, 5, 7), seed=k)
        both(*reduce_model(op, x, axes, opset, form, keepdims=k % 2), **tol(np.float32))


@pytest.mark.parametrize("op", REDUCE)
def test_reduce_rank4_and_size1(op: str) -> None:
    # non-contiguous axes (transposed copy), size-1 axes that make a set contiguous, odd sizes
    cases = [((2, 3, 4, 5), (1, 3)), ((2, 1, 4, 5), (0, 2)), ((2, 3, 1, 5), (1, 3)), ((4, 1, 1, 9), (1, 2)),
             ((6, 33), (0,)), ((2, 300), (1,)), ((1, 1), (0, 1)), ((3, 2, 4, 5), (0, 2, 3))]
    for k, (shape, axes) in enumerate(cases):
        x = reduce_data(op, shape, seed=k)
        both(*reduce_model(op, x, axes, input_opset(op), "const", keepdims=k % 2), **tol(np.float32))


@pytest.mark.parametrize("op", REDUCE)
def test_reduce_opset1(op: str) -> None:
    x = reduce_data(op, (2, 3, 4))
    both(*reduce_model(op, x, (1,), 1, "attr"), **tol(np.float32))
    both(*reduce_model(op, x, None, 1, "attr", keepdims=0), **tol(np.float32))


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("dt", [np.float64, np.float16, np.int32, np.int64], ids=["f64", "f16", "i32", "i64"])
def test_reduce_dtypes(op: str, dt: Any) -> None:
    for k, axes in enumerate([(-1,), (0,), None]):
        x = reduce_data(op, (4, 6), dt, seed=k)
        both(*reduce_model(op, x, axes, input_opset(op), "const", keepdims=k % 2), **tol(dt))


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("dt", [np.int8, np.uint8, np.bool_], ids=["i8", "u8", "bool"])
def test_reduce_minmax_small_types(op: str, dt: Any) -> None:
    opset = 20 if dt == np.bool_ else 18
    for k, axes in enumerate([(-1,), (0,), None]):
        x = rand((5, 7), dt, seed=k)
        both(*reduce_model(op, x, axes, opset, "const"))
    if dt != np.bool_:
        x = np.array([[np.iinfo(dt).min, np.iinfo(dt).max, 0]], dt)
        both(*reduce_model(op, x, (1,), opset, "const"))


@pytest.mark.parametrize("dt", [np.int32, np.int64], ids=["i32", "i64"])
def test_reduce_int_semantics(dt: Any) -> None:
    # onnxruntime: float64 accumulation, truncation toward zero, saturation (no wrap-around);
    # LogSum of a non-positive sum is the minimum; LogSumExp is max + log(count of the max)
    info = np.iinfo(np.int32)
    x = np.array([[100000, 100000, 0], [info.max, 1, 0], [info.min, -1, 0], [info.min, 0, 0], [-5, -5, -5],
                  [-1, -2, -6], [0, 0, 0], [-3, 1, 1], [3, 3, 3], [46341, 46341, 1]], dt)
    for op in REDUCE:
        for axes, xx in (((1,), x), ((0,), np.ascontiguousarray(x.T))):
            both(*reduce_model(op, xx, axes, input_opset(op), "const"))
        both(*reduce_model(op, x, (), input_opset(op), "const", noop_with_empty_axes=1))


@pytest.mark.parametrize("op", REDUCE)
def test_reduce_noop_with_empty_axes(op: str) -> None:
    x = reduce_data(op, (2, 3, 4))
    opset = input_opset(op)
    both(*reduce_model(op, x, None, opset, "const", noop_with_empty_axes=1), **tol(np.float32))
    both(*reduce_model(op, x, (), opset, "const", noop_with_empty_axes=1), **tol(np.float32))
    both(*reduce_model(op, x, (), opset, "feed", noop_with_empty_axes=1), **tol(np.float32))
    both(*reduce_model(op, x, (), opset, "const", noop_with_empty_axes=0, keepdims=0), **tol(np.float32))


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("dt", [np.float32, np.int32, np.int64], ids=["f32", "i32", "i64"])
def test_reduce_empty(op: str, dt: Any) -> None:
    # a zero-size reduced axis: Sum 0, Prod 1, Max lowest, Min highest, LogSum(Exp) -inf / INT_MIN
    opset = input_opset(op)
    both(*reduce_model(op, np.zeros((2, 0, 3), dt), (1,), opset, "const"))
    both(*reduce_model(op, np.zeros((2, 0), dt), (1,), opset, "const", keepdims=0))
    both(*reduce_model(op, np.zeros((0, 3), dt), None, opset, "const"))
    # a zero-size kept axis: an empty result
    both(*reduce_model(op, np.zeros((0, 3), dt), (1,), opset, "const"))


def test_reduce_empty_small_types() -> None:
    for op in ("ReduceMax", "ReduceMin"):
        for dt in (np.uint8, np.int8, np.float16):
            both(*reduce_model(op, np.zeros((2, 0), dt), (1,), 18, "const"))


@pytest.mark.parametrize("op", REDUCE)
def test_reduce_scalar(op: str) -> None:
    x = np.array(1.5, np.float32)
    both(*reduce_model(op, x, None, input_opset(op), "const"), **tol(np.float32))
    both(*reduce_model(op, x, (), input_opset(op), "const", keepdims=0), **tol(np.float32))


@pytest.mark.parametrize("op", REDUCE)
def test_reduce_nan_inf(op: str) -> None:
    x = np.array([[1, NAN, 3], [NAN, -np.inf, 2], [np.inf, -np.inf, 0], [np.inf, 1, 2], [-np.inf, -np.inf, 1],
                  [1e30, 1e30, 1], [1000, 1000, 999]], np.float32)
    if op == "ReduceLogSum":
        x = np.abs(x)
    opset = input_opset(op)
    got = run_jitort(*reduce_model(op, x, (1,), opset, "const"))[0]
    got_t = run_jitort(*reduce_model(op, np.ascontiguousarray(x.T), (0,), opset, "const"))[0]
    np.testing.assert_array_equal(got.ravel(), got_t.ravel())  # row and column kernels agree
    if op in ("ReduceMax", "ReduceMin"):
        # onnxruntime's vectorised kernel propagates NaN only sometimes; jitort always does, like numpy
        ref = (np.max if op == "ReduceMax" else np.min)(x, axis=1, keepdims=True)
        np.testing.assert_array_equal(got, ref)
        # long rows: NaN anywhere, the column path included
        long = rand((5, 100), np.float32)
        long[1, 37] = NAN
        long[3, 99] = NAN
        for axes, xx in (((1,), long), ((0,), np.ascontiguousarray(long.T))):
            g = run_jitort(*reduce_model(op, xx, axes, opset, "const", keepdims=0))[0]
            np.testing.assert_array_equal(np.isnan(g), [False, True, False, True, False])
    else:
        with np.errstate(all="ignore"):
            assert_close([got], run_ort(*reduce_model(op, x, (1,), opset, "const")), rtol=1e-5, atol=0)


def test_reduce_long_rows_accuracy() -> None:
    # vectorised (reassociated) float32 sums stay close to onnxruntime's
    x = rand((8, 4099), np.float32, 3)
    for op in ("ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceMax"):
        both(*reduce_model(op, x, (1,), input_opset(op), "const"), rtol=1e-4, atol=1e-3)
        both(*reduce_model(op, x, (0,), input_opset(op), "const"), rtol=1e-4, atol=1e-3)


def test_reduce_errors() -> None:
    x = rand((2, 3), np.float32)
    m, feeds = reduce_model("ReduceSum", x, (2,), 13, "feed")
    with pytest.raises(Exception, match="out of range"):
        run_jitort(m, feeds)


def test_reduce_batch_changes() -> None:
    # one session, several shapes through the run-time path
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"])
    m = make_model([node], {"x": (np.float32, ["a", "b", "c"]), "axes": (np.int64, ["n"])}, ["y"], opset=18)
    sess = jitort.InferenceSession(m.SerializeToString())
    for shape in ((2, 3, 4), (5, 3, 4)):
        xx = rand(shape, np.float32, 1)
        for axes in ([-1], [0, 2], [1]):
            a = np.array(axes, np.int64)
            np.testing.assert_allclose(sess.run(None, {"x": xx, "axes": a})[0],
                                       xx.mean(axis=tuple(axes), keepdims=True), rtol=1e-5, atol=1e-6)



# --- integer reductions in one pass (float64 accumulation, truncation, saturation) and the lowered path

INT_OPS = ["ReduceSum", "ReduceMean", "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum"]


def _int_oracle(op: str, x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """onnxruntime's integer semantics as a numpy formula: the reduction in float64, truncated toward
    zero, saturated at the dtype's limits (NaN: the minimum)."""
    v = x.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = {"ReduceSum": lambda: v.sum(axes, keepdims=True), "ReduceMean": lambda: v.mean(axes, keepdims=True),
             "ReduceProd": lambda: v.prod(axes, keepdims=True),
             "ReduceSumSquare": lambda: (v * v).sum(axes, keepdims=True),
             "ReduceL1": lambda: np.abs(v).sum(axes, keepdims=True),
             "ReduceL2": lambda: np.sqrt((v * v).sum(axes, keepdims=True)),
             "ReduceLogSum": lambda: np.log(v.sum(axes, keepdims=True))}[op]()
        info = np.iinfo(x.dtype)
        inside = (r > float(info.min)) & (r < float(info.max))
        t = np.trunc(np.where(inside, r, 0)).astype(x.dtype)
    return np.where(inside, t, np.where(r >= float(info.max), info.max, info.min)).astype(x.dtype)


def _int_cases(dt: Any) -> list[tuple[np.ndarray, tuple[int, ...]]]:
    """Rows ([O, R]), columns ([O, R, I]) and transposed reductions, with rows that overflow the
    dtype (both signs) and rows that stay inside it."""
    info = np.iinfo(dt)
    big = np.array([info.max, info.max // 2, info.max // 3, 1, 0, 2], dt)
    low = np.array([info.min, info.min // 2, 1, 0, 3, 1], dt) if info.min else np.array([0, 1, 2, 3, 4, 5], dt)
    small = (np.arange(6) % 5 + (1 if info.min == 0 else -2)).astype(dt)
    x = np.stack([big, low, small, small[::-1], np.full(6, info.max, dt), np.full(6, 3, dt)])  # [6, 6]
    x3 = np.stack([x, x[::-1], np.roll(x, 1, axis=1)])  # [3, 6, 6]
    return [(x, (1,)), (x, (0,)), (x3, (1,)), (x3, (0, 2)), (x3, (0, 1)), (x3, (0, 1, 2))]


@pytest.mark.parametrize("dt", [np.int32, np.int64], ids=["i32", "i64"])
def test_reduce_int_overflow(dt: Any) -> None:
    """int32/int64 (onnxruntime's integer kernels): overflowing sums, squares and products saturate
    (no wrap-around), on the row, column and transposed layouts; R = 300 runs the vectorised loops."""
    long = np.tile(np.array([[7, -3, 11, 0, 2]], dt), (4, 60))
    long[1, 7] = np.iinfo(dt).max
    for op in INT_OPS:
        for x, axes in _int_cases(dt) + [(long, (1,)), (np.ascontiguousarray(long.T), (0,))]:
            if op == "ReduceLogSum":  # a non-positive sum is the minimum
                x = np.abs(x // 2)
            m, feeds = reduce_model(op, x, axes, input_opset(op), "const")
            got = run_jitort(m, feeds)[0]
            np.testing.assert_array_equal(got, run_ort(m, feeds)[0], err_msg=f"{op} {x.shape} {axes}")
            np.testing.assert_array_equal(got, _int_oracle(op, x, axes))


@pytest.mark.parametrize("dt", [np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.uint64])
def test_reduce_int_small_types(dt: Any) -> None:
    """Integer dtypes onnxruntime has no Reduce kernel for: the same semantics (float64, truncated,
    saturated), the numpy formula as the oracle."""
    for op in INT_OPS:
        for x, axes in _int_cases(dt):
            got = run_jitort(*reduce_model(op, x, axes, input_opset(op), "const"))[0]
            np.testing.assert_array_equal(got, _int_oracle(op, x, axes), err_msg=f"{op} {dt} {x.shape} {axes}")


@pytest.mark.parametrize("form", ["attr", "const"])
def test_reduce_planned_shapes(form: str) -> None:
    """Fixed axes lower to reduce_planned: each run's shape gets its own remembered layout (rows,
    columns, transposed, empty), in one session, matching onnxruntime."""
    op = "ReduceSum"
    opset = 11 if form == "attr" else 13
    x0 = rand((2, 3, 4), np.float32, 0)
    m, _ = reduce_model(op, x0, (1,), opset, form, keepdims=0)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "a"
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "c"
    sess = jitort.InferenceSession(m.SerializeToString())
    assert "reduce.reduce_planned(" in sess.artifact.plan_source
    for shape in ((2, 3, 4), (5, 3, 1), (1, 3, 7), (0, 3, 2), (2, 3, 4)):
        for dt in (np.float32,):
            xx = rand(shape, dt, 1)
            want = run_ort(m, {"x": xx})[0]
            np.testing.assert_allclose(sess.run(None, {"x": xx})[0], want, rtol=1e-6, atol=1e-6)


# --- ArgMax / ArgMin ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("opset", [1, 11, 13])
def test_arg(op: str, opset: int) -> None:
    for k, (shape, axis) in enumerate([((3, 5, 7), 0), ((3, 5, 7), 1), ((3, 5, 7), -1), ((6,), 0),
                                       ((2, 9), 1), ((4, 1, 3), 1)]):
        x = rand(shape, np.int32, k, -0.3, 0.3)  # small integers: many ties
        for sli in ((0, 1) if opset >= 12 else (None,)):
            attrs: dict[str, Any] = {"axis": axis, "keepdims": k % 2}
            if sli is not None:
                attrs["select_last_index"] = sli
            both(*model(op, [("x", x if k % 3 == 0 else x.astype(np.float32))], opset=opset, **attrs))


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("dt", [np.float64, np.float16, np.int64, np.uint8, np.int8],
                         ids=["f64", "f16", "i64", "u8", "i8"])
def test_arg_dtypes(op: str, dt: Any) -> None:
    x = rand((4, 6, 5), dt, 1)
    for axis in (1, -1):
        both(*model(op, [("x", x)], opset=13, axis=axis, select_last_index=1))
        both(*model(op, [("x", x)], opset=13, axis=axis))


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_nan(op: str) -> None:
    x = np.array([[1, NAN, 3, 3], [NAN, 1, 2, NAN], [3, 3, 1, NAN], [-np.inf, -np.inf, NAN, NAN],
                  [NAN, NAN, NAN, NAN], [2, 2, 2, 2], [np.inf, 1, np.inf, -np.inf]], np.float32)
    for sli in (0, 1):
        both(*model(op, [("x", x)], opset=13, axis=1, select_last_index=sli))
        both(*model(op, [("x", np.ascontiguousarray(x.T))], opset=13, axis=0, select_last_index=sli))


# --- Softmax / LogSoftmax / Hardmax ------------------------------------------------------------------

SOFT_CASES = [((2, 3, 4), -1), ((2, 3, 4), 1), ((2, 3, 4), 0), ((3, 5, 7, 2), 2), ((37, 100), 1), ((3, 3000), -1),
              ((1, 1), 0), ((5, 1), 1)]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset", [1, 11, 13])
def test_softmax(op: str, opset: int) -> None:
    for k, (shape, axis) in enumerate(SOFT_CASES):
        x = rand(shape, np.float32, k, -8, 8)
        both(*model(op, [("x", x)], opset=opset, axis=axis), rtol=2e-6, atol=2e-6)
    x = rand((4, 5, 6), np.float32, 9)
    both(*model(op, [("x", x)], opset=opset), rtol=2e-6, atol=2e-6)  # default axis


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("dt", [np.float64, np.float16], ids=["f64", "f16"])
def test_softmax_dtypes(op: str, dt: Any) -> None:
    for k, (shape, axis) in enumerate([((2, 3, 40), -1), ((2, 3, 4), 1)]):
        x = rand(shape, dt, k)
        both(*model(op, [("x", x)], opset=13, axis=axis), **tol(dt))
    both(*model(op, [("x", rand((3, 4, 5), dt))], opset=11, axis=1), **tol(dt))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_nan_inf(op: str) -> None:
    x = np.array([[1, NAN, 3, 3], [NAN, 1, 2, NAN], [3, 3, 1, NAN], [-np.inf, -np.inf, NAN, NAN],
                  [2, 2, 2, 2], [np.inf, 1, 2, 3], [-np.inf, -np.inf, 1, 2], [-np.inf] * 4, [1e30, -1e30, 0, 88]],
                 np.float32)
    both(*model(op, [("x", x)], opset=13, axis=1))
    both(*model(op, [("x", np.ascontiguousarray(x.T))], opset=13, axis=0))


@pytest.mark.parametrize("opset", [1, 11, 13])
def test_hardmax(opset: int) -> None:
    for k, (shape, axis) in enumerate(SOFT_CASES[:6]):
        x = rand(shape, np.int32, k, -0.3, 0.3).astype(np.float32)  # ties: the first one wins
        both(*model("Hardmax", [("x", x)], opset=opset, axis=axis))
    if opset > 1:
        both(*model("Hardmax", [("x", rand((3, 4, 5), np.float16))], opset=opset, axis=1))


def test_hardmax_float64() -> None:
    # onnxruntime has no float64 Hardmax: the spec as oracle
    x = rand((3, 4, 5), np.int32, 2, -0.3, 0.3).astype(np.float64)
    got = run_jitort(*model("Hardmax", [("x", x)], opset=13, axis=1))[0]
    ref = np.zeros_like(x)
    np.put_along_axis(ref, np.argmax(x, axis=1)[:, None], 1, axis=1)
    np.testing.assert_array_equal(got, ref)


# --- LayerNormalization --------------------------------------------------------------------------

@pytest.mark.parametrize("dt", [np.float32, np.float64, np.float16], ids=["f32", "f64", "f16"])
def test_layernorm(dt: Any) -> None:
    for k, (shape, axis) in enumerate([((2, 5, 16), -1), ((2, 5, 16), 1), ((3, 768), -1), ((4, 3, 2, 5), 2),
                                       ((7,), 0)]):
        x = rand(shape, dt, k) + np.asarray(3, dt)  # an offset: E[x^2] - E[x]^2 would lose digits
        a = axis + len(shape) if axis < 0 else axis
        s, b = rand(shape[a:], dt, k + 10), rand(shape[a:], dt, k + 20)
        t = tol(dt) if dt != np.float32 else {"rtol": 1e-4, "atol": 1e-4}
        for n_out in (1, 3):
            if dt == np.float16 and n_out == 3:
                t = {"rtol": 1e-2, "atol": 1e-2}  # onnxruntime rounds Mean/InvStdDev through float16
            attrs = {"n_out": n_out, "opset": 17, "axis": axis, "epsilon": 1e-3 if k % 2 else 1e-5}
            m, feeds = model("LayerNormalization", [("x", x), ("s", s), ("b", b)], const=("s", "b"), **attrs)
            both(m, feeds, **t)
            # B omitted: onnxruntime 1.31 crashes on that model, so its oracle gets B = 0 explicitly
            m, feeds = model("LayerNormalization", [("x", x), ("s", s), ("b", None)], const=("s",), **attrs)
            m0, _ = model("LayerNormalization", [("x", x), ("s", s), ("b", np.zeros_like(b))], const=("s", "b"),
                          **attrs)
            assert_close(run_jitort(m, feeds), run_ort(m0, feeds), **t)


def test_layernorm_two_outputs_and_feeds() -> None:
    x = rand((2, 3, 8), np.float32)
    s, b = rand((8,), np.float32, 1), rand((8,), np.float32, 2)
    m, feeds = model("LayerNormalization", [("x", x), ("s", s), ("b", b)], n_out=2, opset=17)
    both(m, feeds, rtol=1e-5, atol=1e-5)


# --- CumSum ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset, dt", [(11, np.float32), (14, np.float32), (14, np.float64), (11, np.int32),
                                       (14, np.int64)], ids=["11-f32", "14-f32", "14-f64", "11-i32", "14-i64"])
def test_cumsum(opset: int, dt: Any) -> None:
    for k, (shape, axis) in enumerate([((3, 4, 5), 0), ((3, 4, 5), 1), ((3, 4, 5), -1), ((7,), 0), ((2, 1, 3), 1)]):
        x = rand(shape, dt, k)
        adt = np.int32 if k % 2 else np.int64
        a = np.array(axis, adt) if k % 3 else np.array([axis], adt)
        for exclusive in (0, 1):
            for reverse in (0, 1):
                const = ("axis",) if (k + exclusive + reverse) % 2 else ()
                m, feeds = model("CumSum", [("x", x), ("axis", a)], const=const, opset=opset,
                                 exclusive=exclusive, reverse=reverse)
                both(m, feeds, **tol(dt))


def test_cumsum_float16() -> None:
    # onnxruntime accumulates float16 in float32 and rounds once: bit-exact
    x = rand((3, 50, 2), np.float16, 4)
    for exclusive in (0, 1):
        for reverse in (0, 1):
            m, feeds = model("CumSum", [("x", x), ("axis", np.array(1, np.int64))], const=("axis",), opset=14,
                             exclusive=exclusive, reverse=reverse)
            both(m, feeds, rtol=0, atol=0)


def test_cumsum_empty_and_errors() -> None:
    both(*model("CumSum", [("x", np.zeros((0, 3), np.float32)), ("axis", np.array(1, np.int64))],
                const=("axis",), opset=14))
    m, feeds = model("CumSum", [("x", rand((2, 3), np.float32)), ("axis", np.array(2, np.int64))], opset=14)
    with pytest.raises(Exception, match="out of range"):
        run_jitort(m, feeds)


# --- TopK --------------------------------------------------------------------------------------------

def topk_model(x: np.ndarray, k: int, opset: int, const: bool = True, **attrs: Any) -> tuple[Any, dict]:
    if opset < 10:
        return model("TopK", [("x", x)], n_out=2, opset=opset, k=k, **attrs)
    return model("TopK", [("x", x), ("k", np.array([k], np.int64))], const=("k",) if const else (), n_out=2,
                 opset=opset, **attrs)


@pytest.mark.parametrize("opset", [1, 10, 11])
def test_topk(opset: int) -> None:
    for j, (shape, axis) in enumerate([((3, 20), -1), ((3, 20), 0), ((2, 9, 4), 1), ((50,), 0)]):
        n = shape[axis]
        x = rand(shape, np.int32, j, -0.5, 0.5).astype(np.float32)  # many ties: the lower index first
        for k in sorted({1, 2, 3, 4, n // 2, n} & set(range(1, n + 1))):
            both(*topk_model(x, k, opset, const=bool(k % 2), axis=axis))
            if opset >= 11:
                both(*topk_model(x, k, opset, axis=axis, largest=0))


@pytest.mark.parametrize("dt", [np.float64, np.float16, np.int32, np.int64, np.uint8, np.int8],
                         ids=["f64", "f16", "i32", "i64", "u8", "i8"])
def test_topk_dtypes(dt: Any) -> None:
    x = rand((4, 30), dt, 5)
    for k in (1, 3, 25):
        for largest in (0, 1):
            both(*topk_model(x, k, 11, axis=1, largest=largest))
    if np.dtype(dt).kind in "iu":
        info = np.iinfo(dt)
        x = np.array([[info.min, info.max, 0, info.min, info.max, 1]], dt)
        for k in (2, 6):
            for largest in (0, 1):
                both(*topk_model(x, k, 11, axis=1, largest=largest))


def test_topk_unsorted() -> None:
    x = rand((3, 40), np.int32, 6, -1, 1).astype(np.float32)
    for k in (1, 3, 30):
        got_v, got_i = run_jitort(*topk_model(x, k, 11, axis=1, sorted=0))
        ref_v, ref_i = run_ort(*topk_model(x, k, 11, axis=1, sorted=0))
        if k < 4:  # onnxruntime's heap order, reproduced exactly
            np.testing.assert_array_equal(got_i, ref_i)
        # the order is unspecified: compare the selected sets
        np.testing.assert_array_equal(np.sort(got_i, axis=1), np.sort(ref_i, axis=1))
        np.testing.assert_array_equal(np.take_along_axis(x, got_i, axis=1), got_v)


def test_topk_nan() -> None:
    x = np.array([[1, NAN, 3, 3, 0], [NAN, 1, 2, NAN, 5], [3, 3, 1, NAN, NAN], [-np.inf, -np.inf, NAN, NAN, 1],
                  [NAN, NAN, NAN, NAN, NAN], [2, 2, 2, 2, 2]], np.float32)
    # the scan and heap paths follow onnxruntime's algorithm, NaN included (as 1.32 orders it: NaN
    # above every number); the sort path (k near the axis length) matches it when sorted=1
    for k, orders in ((1, (0, 1)), (2, (0, 1)), (3, (0, 1)), (4, (1,)), (5, (1,))):
        for largest in (0, 1):
            for s in orders:
                both(*topk_model(x, k, 11, axis=1, largest=largest, sorted=s))
                both(*topk_model(np.ascontiguousarray(x.T), k, 11, axis=0, largest=largest, sorted=s))


def test_topk_edge() -> None:
    x = rand((3, 5), np.float32)
    got = run_jitort(*topk_model(x, 0, 11, axis=1))
    assert got[0].shape == (3, 0) and got[1].dtype == np.int64
    m, feeds = topk_model(x, 6, 11, const=False, axis=1)
    with pytest.raises(Exception, match="should not be greater"):
        run_jitort(m, feeds)
