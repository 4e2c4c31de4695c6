"""Declared graph output types never override what the graph computes (issue 20, item 4).

onnxruntime is the oracle: a declared element type that contradicts the graph is an error at
session creation (its class and the output's name); a declared shape that contradicts it is a
stale hint: a warning, and the computed shape is returned.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from oracle import assert_close, make_model, run_ort

import jitort


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cached plan skips import, so every case here compiles from an empty cache.
    monkeypatch.setenv("JITORT_CACHE_DIR", str(tmp_path / "cache"))


def _ort_error(model: onnx.ModelProto) -> Exception:
    import onnxruntime
    with pytest.raises(Exception) as info:
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return info.value


def test_relu_declared_int64_is_a_type_error_like_onnxruntime() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (np.float32, [3])},
                       {"y": (np.int64, [3])})
    ort_error = _ort_error(model)
    with pytest.raises(Exception) as info:
        jitort.InferenceSession(model.SerializeToString()).run(None, {"x": np.array([0.5, 2.5, -1], np.float32)})
    assert type(info.value).__name__ == type(ort_error).__name__
    assert isinstance(info.value, jitort.capi.onnxruntime_pybind11_state.Fail)
    message = str(info.value)
    assert "'y'" in message and "int64" in message and "float" in message


def test_cast_output_declared_float_is_a_type_error_like_onnxruntime() -> None:
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=onnx.TensorProto.INT32)]
    model = make_model(nodes, {"x": (np.float32, [2, 3])}, {"y": (np.float32, [2, 3])})
    ort_error = _ort_error(model)
    with pytest.raises(Exception) as info:
        jitort.InferenceSession(model.SerializeToString())
    assert type(info.value).__name__ == type(ort_error).__name__
    assert "'y'" in str(info.value) and "int32" in str(info.value)


def _run_warned(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = jitort.InferenceSession(model.SerializeToString()).run(None, feeds)
    return got, [str(w.message) for w in caught]


def test_stale_declared_shape_warns_and_returns_the_computed_shape() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (np.float32, [1, 4])},
                       {"y": (np.float32, [3, 4])})
    feeds = {"x": np.array([[1, -2, 3, -4]], np.float32)}
    got, messages = _run_warned(model, feeds)
    want = run_ort(model, feeds)
    assert want[0].shape == (1, 4)
    assert_close(got, want)
    assert any("'y'" in m and "[3, 4]" in m and "[1, 4]" in m for m in messages), messages


def test_stale_declared_rank_warns_and_returns_the_computed_shape() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (np.float32, [1, 4])},
                       {"y": (np.float32, [4])})
    feeds = {"x": np.array([[1, -2, 3, -4]], np.float32)}
    got, messages = _run_warned(model, feeds)
    assert_close(got, run_ort(model, feeds))
    assert any("'y'" in m for m in messages), messages


def test_stale_shape_of_an_output_also_read_inside_the_graph() -> None:
    """``y`` is a graph output and the operand of a fused consumer: both keep the computed shape."""
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Add", ["y", "b"], ["z"])]
    model = make_model(nodes, {"x": (np.float32, [1, 4]), "b": (np.float32, [2, 1, 4])},
                       {"y": (np.float32, [3, 4]), "z": (np.float32, [2, 3, 4])})
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((1, 4)).astype(np.float32),
             "b": rng.standard_normal((2, 1, 4)).astype(np.float32)}
    got, messages = _run_warned(model, feeds)
    assert_close(got, run_ort(model, feeds))
    assert any("'y'" in m for m in messages) and any("'z'" in m for m in messages), messages


def test_consistent_symbolic_declaration_does_not_warn() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (np.float32, ["N", 4])},
                       {"y": (np.float32, ["N", 4])})
    feeds = {"x": np.array([[1, -2, 3, -4], [5, 6, -7, 8]], np.float32)}
    got, messages = _run_warned(model, feeds)
    assert_close(got, run_ort(model, feeds))
    assert not [m for m in messages if "declared" in m], messages


def test_undeclared_output_type_still_comes_from_inference() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (np.float32, [2, 2])}, ["y"])
    feeds = {"x": np.array([[1, -2], [3, -4]], np.float32)}
    got, messages = _run_warned(model, feeds)
    assert_close(got, run_ort(model, feeds))
    assert not [m for m in messages if "declared" in m], messages
