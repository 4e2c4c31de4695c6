"""Models onnxruntime refuses at load are refused by jitort too, with onnxruntime's exception class
and the culprit named (item 8 of the reliability issue: jitort used to run them)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

import jitort as ort
from jitort import errors
from oracle import ORT_MAX_IR

X = helper.make_tensor_value_info("x", TP.FLOAT, [3])
Y = helper.make_tensor_value_info("y", TP.FLOAT, [3])


def _model(nodes: list, ins: list, outs: list, opset: int = 17) -> bytes:
    g = helper.make_graph(nodes, "g", ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ORT_MAX_IR
    return m.SerializeToString()


CASES = {
    "opset-999": (_model([helper.make_node("Relu", ["x"], ["y"])], [X], [Y], opset=999), "Opset 999"),
    "unknown-attribute": (_model([helper.make_node("Relu", ["x"], ["y"], name="r", foo=3)], [X], [Y]),
                          "Unrecognized attribute: foo"),
    "mistyped-attribute": (_model([helper.make_node("Softmax", ["x"], ["y"], name="s", axis="s")], [X], [Y]),
                           "Mismatched attribute type"),
    "missing-required-attribute": (_model([helper.make_node("Cast", ["x"], ["y"], name="c")], [X], [Y]),
                                   "Required attribute 'to'"),
    "too-many-inputs": (_model([helper.make_node("Relu", ["x", "x"], ["y"], name="r")], [X], [Y]), "input size 2"),
    "graph-input-twice": (_model([helper.make_node("Relu", ["x"], ["y"])], [X, X], [Y]), "Duplicate definition-site"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_at_load_like_onnxruntime(case: str) -> None:
    import onnxruntime
    data, pattern = CASES[case]
    with pytest.raises(errors.ALL_ERRORS, match=pattern) as got:
        ort.InferenceSession(data)
    with pytest.raises(Exception) as want:  # noqa: B017 - the oracle's class is compared below
        onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert type(got.value).__name__ == type(want.value).__name__, (str(got.value), str(want.value))


def test_a_model_without_outputs_refuses_every_run() -> None:
    import onnxruntime
    data = _model([helper.make_node("Relu", ["x"], ["y"])], [X], [])
    feeds = {"x": np.ones(3, np.float32)}
    sess, theirs = ort.InferenceSession(data), onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    with pytest.raises(errors.InvalidArgument, match="At least one output should be requested"):
        sess.run(None, feeds)
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument):
        theirs.run(None, feeds)


def test_non_utf8_and_nul_names_run() -> None:
    """onnxruntime runs a model whose node and value names are not valid UTF-8 or hold NUL; so does jitort."""
    node = helper.make_node("Relu", ["x"], ["QQ"], name="NODEXX")
    g = helper.make_graph([node], "g", [X], [helper.make_tensor_value_info("QQ", TP.FLOAT, [3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = ORT_MAX_IR
    data = m.SerializeToString().replace(b"NODEXX", b"N\x00\xff\xfeXX").replace(b"QQ", b"Q\xff")
    sess = ort.InferenceSession(data)
    got = sess.run(None, {"x": np.array([1, -1, 2], np.float32)})[0]
    np.testing.assert_array_equal(got, [1, 0, 2])
    assert sess.get_outputs()[0].name == "Q\\xff"
    onnx.load_from_string(data)  # the bytes are still a valid protobuf
