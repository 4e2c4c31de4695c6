"""Symbolic dim names are hints, not constraints (issue 18): an input declared ``[-1, 3, "?", "?"]``
takes a 48x192 image, inputs sharing a name may differ there, and nothing downstream computes a
wrong answer from reading equal names as equal sizes: each case is compared with onnxruntime,
which runs what broadcasts and fails (``Fail``, naming the node) what does not."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from jitort.capi.onnxruntime_pybind11_state import Fail
from oracle import assert_close, make_model, rand, run_ort

F = np.float32


def _both(model, feeds):
    """jitort's outputs and onnxruntime's, or the exception classes each raised."""
    sess = ort.InferenceSession(model.SerializeToString())
    try:
        got = sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - compared with onnxruntime's class below
        got = e
    try:
        want = run_ort(model, feeds)
    except Exception as e:  # noqa: BLE001
        want = e
    return sess, got, want


def _same(got, want, rtol=1e-5, atol=1e-5):
    if isinstance(want, Exception):
        assert isinstance(got, Exception), "onnxruntime raised, jitort returned a result"
        assert type(got).__name__ == type(want).__name__, (got, want)
    else:
        assert not isinstance(got, Exception), got
        assert_close(got, want, rtol, atol)


def test_ocr_input_takes_a_non_square_image():
    """The OCR model's input: batch -1, height and width both named '?'."""
    w = rand((4, 3, 3, 3), seed=1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Mul", ["r", "r"], ["m"]),
             helper.make_node("ReduceMean", ["m"], ["y"], axes=[2], keepdims=0)]
    m = make_model(nodes, {"x": (F, [-1, 3, "?", "?"])}, {"y": (F, [-1, 4, "?"])}, {"w": w}, opset=17)
    sess = ort.InferenceSession(m.SerializeToString())
    for shape in [(1, 3, 48, 192), (2, 3, 32, 32), (1, 3, 48, 100)]:
        x = rand(shape, seed=2)
        assert_close(sess.run(None, {"x": x}), run_ort(m, {"x": x}), 1e-4, 1e-4)


@pytest.mark.parametrize("shape", [(3, 3), (3, 5)])
def test_same_name_within_one_input(shape):
    """x[?, ?] + x^T: square runs; non-square fails in both runtimes (never a wrong answer). The
    declared output re-uses the name; Relu(x) on a non-square x runs."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Add", ["x", "t"], ["y"], name="add_xt"),
             helper.make_node("Relu", ["x"], ["r"])]
    m = make_model(nodes, {"x": (F, ["?", "?"])}, {"y": (F, ["?", "?"]), "r": (F, ["?", "?"])})
    x = rand(shape, seed=3)
    _, got, want = _both(m, {"x": x})
    _same(got, want)
    if isinstance(want, Exception):
        assert "add_xt" in str(got)
    m2 = make_model(nodes[2:], {"x": (F, ["?", "?"])}, {"r": (F, ["?", "?"])})
    _, got, want = _both(m2, {"x": x})
    _same(got, want)


def test_declared_intermediates_do_not_reassert_the_name():
    """value_info declaring both t = x^T and u = Relu(x) as [?, ?]: their sum broadcasts only when
    x is square, whatever the declaration says."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Relu", ["x"], ["u"]),
             helper.make_node("Add", ["t", "u"], ["y"])]
    m = make_model(nodes, {"x": (F, ["?", "?"])}, {"y": (F, ["?", "?"])})
    m.graph.value_info.extend([helper.make_tensor_value_info(n, 1, ["?", "?"]) for n in ("t", "u")])
    for shape in [(4, 4), (2, 6)]:
        _, got, want = _both(m, {"x": rand(shape, seed=4)})
        _same(got, want)


def test_names_shared_across_inputs():
    """x[N, 4] and y[N, 4]: equal N runs on the plan compiled for it; different N runs where the
    graph allows it (separate paths) and fails where it does not (their sum), as onnxruntime does;
    the session keeps serving both kinds of feed."""
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["y"], ["b"])]
    m = make_model(nodes, {"x": (F, ["N", 4]), "y": (F, ["N", 4])}, {"a": (F, ["N", 4]), "b": (F, ["N", 4])})
    sess = ort.InferenceSession(m.SerializeToString())
    for nx, ny in [(2, 2), (2, 5), (3, 3), (1, 7)]:
        feeds = {"x": rand((nx, 4), seed=nx), "y": rand((ny, 4), seed=ny)}
        assert_close(sess.run(None, feeds), run_ort(m, feeds))
    add = make_model([helper.make_node("Add", ["x", "y"], ["z"], name="sum_xy"), helper.make_node("Relu", ["z"], ["r"])],
                     {"x": (F, ["N", 4]), "y": (F, ["N", 4])}, {"r": (F, ["N", 4])})
    sess, got, want = _both(add, {"x": rand((2, 4)), "y": rand((3, 4))})
    assert isinstance(want, Exception) and isinstance(got, Fail), got
    assert "sum_xy" in str(got)
    feeds = {"x": rand((2, 4)), "y": rand((1, 4))}  # broadcasts: onnxruntime runs it
    assert_close(sess.run(None, feeds), run_ort(add, feeds))
    feeds = {"x": rand((3, 4)), "y": rand((3, 4), seed=9)}
    assert_close(sess.run(None, feeds), run_ort(add, feeds))
