"""External data: valid files next to the model load (initializers and Constant attributes alike);
a location that escapes the model's directory, is absolute or is missing is refused with
onnxruntime's class (Fail), as onnxruntime refuses it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

import jitort as ort
from jitort import errors
from oracle import ORT_MAX_IR

W = np.arange(6, dtype=np.float32) - 2.5


def _model(dir_: Path, location: str, constant: bool) -> str:
    t = onnx.TensorProto()
    t.name, t.data_type, t.data_location = "w", TP.FLOAT, onnx.TensorProto.EXTERNAL
    t.dims.extend([6])
    entry = t.external_data.add()
    entry.key, entry.value = "location", location
    relu = helper.make_node("Relu", ["w"], ["y"])
    out = [helper.make_tensor_value_info("y", TP.FLOAT, None)]
    if constant:
        g = helper.make_graph([helper.make_node("Constant", [], ["w"], value=t), relu], "g", [], out)
    else:
        g = helper.make_graph([relu], "g", [], out, [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = ORT_MAX_IR
    path = dir_ / "model" / "model.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(m.SerializeToString())
    return str(path)


@pytest.mark.parametrize("constant", [False, True], ids=["initializer", "Constant"])
def test_valid_external_data_loads(tmp_path: Path, constant: bool) -> None:
    path = _model(tmp_path, "w.bin", constant)
    (tmp_path / "model" / "w.bin").write_bytes(W.tobytes())
    np.testing.assert_array_equal(ort.InferenceSession(path).run(None, {})[0], np.maximum(W, 0))


@pytest.mark.parametrize("constant", [False, True], ids=["initializer", "Constant"])
@pytest.mark.parametrize("where", ["../secret.bin", "ABSOLUTE", "missing.bin"])
def test_external_data_outside_the_model_directory_is_refused(tmp_path: Path, where: str, constant: bool) -> None:
    import onnxruntime
    secret = tmp_path / "secret.bin"
    secret.write_bytes(W.tobytes())
    path = _model(tmp_path, str(secret) if where == "ABSOLUTE" else where, constant)
    with pytest.raises(errors.Fail, match="External data path validation failed"):
        ort.InferenceSession(path)
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.Fail):
        onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
