"""Start-up without onnx and ml_dtypes (issue 19): ``import jitort`` and a session on the AOT artifact
of a float32 model, in a fresh process with an empty cache (a Ray worker's start), import neither;
they load when a model needs them, and then the types are onnx's and ml_dtypes' own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from jitort import aot

def _child(code: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last."""
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                       timeout=600, env={**os.environ, **(env or {})})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _float32_model(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Relu(x @ W + b), x: float32 [batch, 8]; returns (W, b) for the numpy oracle."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["s"]),
         helper.make_node("Relu", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return w, b


def test_import_jitort_imports_neither_onnx_nor_ml_dtypes() -> None:
    got = _child("""
        import json, sys, jitort
        print(json.dumps([m for m in ("onnx", "ml_dtypes") if m in sys.modules]))
    """)
    assert got == []


def test_artifact_session_of_a_float32_model_imports_neither(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("JITORT_CACHE_DIR", str(tmp_path / "compile-cache"))
    w, b = _float32_model(tmp_path / "m.onnx")
    aot.compile_artifact(str(tmp_path / "m.onnx"), str(tmp_path / "art"), input_shapes={"x": [2, 8]}, quiet=True)
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    got = _child("""
        import json, sys, numpy as np, jitort
        s = jitort.InferenceSession(sys.argv[1])
        y = s.run(None, {"x": np.load(sys.argv[2])})[0]
        print(json.dumps({"heavy": [m for m in ("onnx", "ml_dtypes") if m in sys.modules], "y": y.tolist(),
                          "compiled": s.compile_report["compiled"], "loaded_from": s.compile_report["loaded_from"],
                          "inputs": [(i.name, i.type, i.shape) for i in s.get_inputs()]}))
    """, str(tmp_path / "art"), str(tmp_path / "x.npy"), env={"JITORT_CACHE_DIR": str(tmp_path / "empty-cache")})
    assert got["heavy"] == []
    assert got["compiled"] == [] and got["loaded_from"] == str(tmp_path / "art")
    assert got["inputs"] == [["x", "tensor(float)", ["batch", 8]]]
    np.testing.assert_allclose(np.array(got["y"], np.float32), np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("onnx_first", [False, True])
def test_onnx_proto_classes_are_onnxs_own(onnx_first: bool) -> None:
    got = _child("""
        import json, sys
        if sys.argv[1] == "1":
            import onnx
        from jitort.onnx_proto import messages
        m = messages()
        alone = "onnx" not in sys.modules
        import onnx
        same = all(getattr(m, n) is getattr(onnx, n) for n in ("ModelProto", "TensorProto", "TypeProto", "GraphProto"))
        p = m.ModelProto()
        p.graph.name = "g"
        print(json.dumps({"alone": alone, "same": same, "isinstance": isinstance(p, onnx.ModelProto),
                          "round_trip": onnx.ModelProto.FromString(p.SerializeToString()).graph.name}))
    """, "1" if onnx_first else "0")
    assert got == {"alone": not onnx_first, "same": True, "isinstance": True, "round_trip": "g"}


def test_ml_dtypes_entries_load_on_first_need() -> None:
    got = _child("""
        import json, sys
        import numpy as np
        from jitort import dtypes
        from jitort.kernels import registry
        before = "ml_dtypes" in sys.modules
        f32 = [dtypes.np_dtype(1) == np.float32, dtypes.onnx_elem_type(np.float32) == 1,
               registry.FLOAT(np.float32, "X") == np.float32, registry.compute_dtype(np.float16) == np.float32]
        still = "ml_dtypes" in sys.modules
        bf16 = dtypes.np_dtype(16)
        import ml_dtypes
        print(json.dumps({"before": before, "still": still, "f32": f32,
                          "bf16": bf16 == np.dtype(ml_dtypes.bfloat16),
                          "back": dtypes.onnx_elem_type(ml_dtypes.float8_e5m2),
                          "by_name": str(dtypes.resolve_element_type("float8_e4m3fn")),
                          "policy": str(registry.FLOAT(np.dtype(ml_dtypes.bfloat16), "X")),
                          "compute": str(registry.compute_dtype(np.dtype(ml_dtypes.bfloat16))),
                          "in_table": 17 in dtypes.NP_FROM_ONNX and len(dtypes.NP_FROM_ONNX) == 20}))
    """)
    assert got == {"before": False, "still": False, "f32": [True] * 4, "bf16": True, "back": 19,
                   "by_name": "float8_e4m3fn", "policy": "float32", "compute": "float32", "in_table": True}


def test_ml_dtypes_table_when_first_touched_by_iteration() -> None:
    got = _child("""
        import json
        from jitort import dtypes
        print(json.dumps(sorted(dtypes.NP_FROM_ONNX)))
    """)
    assert got == list(range(1, 21))
