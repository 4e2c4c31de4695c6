"""jitort.backend: the ONNX backend API (prepare / run / run_model / run_node / supports_device)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.backend.base import Device, DeviceType

import jitort.backend as backend
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from oracle import make_model


def _add_model() -> onnx.ModelProto:
    return make_model([helper.make_node("Add", ["a", "b"], ["c"])],
                      {"a": (np.float32, [2, 3]), "b": (np.float32, [2, 3])}, ["c"])


def test_prepare_run_list_dict_and_single() -> None:
    a, b = np.ones((2, 3), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    rep = backend.prepare(_add_model(), "CPU")
    np.testing.assert_array_equal(rep.run([a, b])[0], a + b)
    np.testing.assert_array_equal(rep.run({"a": a, "b": b})[0], a + b)
    one = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (np.float32, [3])}, ["y"])
    np.testing.assert_array_equal(backend.prepare(one).run(np.array([-1, 0, 2], np.float32))[0], [0, 0, 2])


def test_prepare_accepts_bytes_and_path(tmp_path) -> None:
    m = _add_model()
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    a = np.ones((2, 3), np.float32)
    for src in (m.SerializeToString(), str(p), p):
        np.testing.assert_array_equal(backend.prepare(src).run([a, a])[0], 2 * a)
    assert backend.prepare(backend.prepare(m)) is not None


def test_run_model_and_module_aliases() -> None:
    a = np.full((2, 3), 2, np.float32)
    out = backend.run_model(_add_model(), [a, a])
    np.testing.assert_array_equal(out[0], 2 * a)
    np.testing.assert_array_equal(backend.run(_add_model(), [a, a])[0], 2 * a)


def test_devices() -> None:
    assert backend.supports_device("CPU")
    assert not backend.supports_device("CUDA")
    assert backend.supports_device(Device("CPU"))
    assert not backend.supports_device(Device("CUDA:0"))
    assert backend.is_compatible(_add_model(), "CPU")
    assert not backend.is_compatible(_add_model(), "CUDA")
    assert Device("CPU").type == DeviceType.CPU
    with pytest.raises(RuntimeError):
        backend.prepare(_add_model(), "CUDA")


def test_wrong_inputs_raise_jitort_errors() -> None:
    rep = backend.prepare(_add_model())
    with pytest.raises(InvalidArgument):
        rep.run([np.ones((2, 3), np.float32)])
    with pytest.raises(InvalidArgument):
        rep.run([np.ones((2, 3), np.float64), np.ones((2, 3), np.float64)])


def test_unsupported_op_is_not_implemented() -> None:
    m = make_model([helper.make_node("ImageDecoder", ["x"], ["y"])], {"x": (np.uint8, [10])},
                   {"y": (np.uint8, None)}, opset=20)
    with pytest.raises(OrtNotImplemented, match="ImageDecoder"):
        backend.prepare(m)


def test_run_node_simple_and_attributes() -> None:
    x = np.array([[1, -2], [3, -4]], np.float32)
    node = helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.5)
    np.testing.assert_allclose(backend.run_node(node, [x])[0], np.where(x > 0, x, 0.5 * x))
    node = helper.make_node("Transpose", ["x"], ["y"])
    np.testing.assert_array_equal(backend.run_node(node, {"x": x})[0], x.T)


def test_run_node_optional_inputs_and_outputs() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    # Clip with min omitted ("") and max given
    node = helper.make_node("Clip", ["x", "", "hi"], ["y"])
    out = backend.run_node(node, [x, np.array(5, np.float32)])
    np.testing.assert_array_equal(out[0], np.minimum(x, 5))
    # Unique with its optional middle outputs omitted (TopK's indices are not optional: onnx's checker
    # and onnxruntime refuse a TopK whose second output is "", and so does jitort)
    node = helper.make_node("Unique", ["v"], ["uniq", "", "", "counts"], sorted=1)
    v = np.array([3, 1, 3, 2, 1, 3], np.int64)
    out = backend.run_node(node, [v])
    assert len(out) == 2
    np.testing.assert_array_equal(out[0], [1, 2, 3])
    np.testing.assert_array_equal(out[1], [2, 1, 3])


def test_run_node_opset_version_and_outputs_info() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    node = helper.make_node("ReduceSum", ["x"], ["y"], axes=[1], keepdims=0)
    out = backend.run_node(node, [x], opset_version=11, outputs_info=[(np.float32, [2])])
    np.testing.assert_array_equal(out[0], [3, 7])


def test_run_node_sequence_input() -> None:
    seq = [np.ones((2,), np.float32), np.zeros((3,), np.float32)]
    node = helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)
    np.testing.assert_array_equal(backend.run_node(node, [seq])[0], [1, 1, 0, 0, 0])


def test_sequence_and_optional_graph_inputs() -> None:
    seq_t = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    opt_t = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    g = helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"]), helper.make_node("OptionalHasElement", ["o"], ["h"])],
        "g", [helper.make_value_info("s", seq_t), helper.make_value_info("o", opt_t)],
        [helper.make_tensor_value_info("n", TensorProto.INT64, []),
         helper.make_tensor_value_info("h", TensorProto.BOOL, [])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    rep = backend.prepare(m)
    n, h = rep.run([[np.ones(2, np.float32)] * 3, None])
    assert int(n) == 3 and not bool(h)
    n, h = rep.run([[], np.ones(2, np.float32)])
    assert int(n) == 0 and bool(h)
    with pytest.raises(InvalidArgument):
        rep.run([np.ones(2, np.float32), None])
