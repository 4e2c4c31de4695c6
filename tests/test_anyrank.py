"""Elementwise nodes whose rank is only known at run time (passes/shapes.py -> kernels/anyrank.py),
against onnxruntime: one session serves calls whose intermediate ranks differ."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort
from jitort.compiler import compile_graph
from jitort.frontend.importer import import_model
from oracle import assert_close, make_model, run_ort


def _ops(model: object) -> list[str]:
    return [n.op_type for n in compile_graph(import_model(model), ["CPUExecutionProvider"]).graph.nodes]


def _squeeze_chain(dtype: type) -> object:
    """y = Cast(Squeeze(Reshape(x, s)) * 2 + b, float32): Squeeze without axes of a shape that comes
    from the input ``s``, so the chain's rank depends on data (as in AffineGrid's function body)."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("Squeeze", ["r"], ["q"]),
             helper.make_node("Mul", ["q", "two"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Cast", ["a"], ["y"], to=helper.np_dtype_to_tensor_dtype(np.dtype(np.float32))),
             helper.make_node("Equal", ["a", "a"], ["e"])]
    return make_model(nodes, {"x": (dtype, [6]), "s": (np.int64, [3]), "b": (dtype, [])}, ["y", "e"],
                      {"two": np.array(2, dtype)}, opset=17)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_data_dependent_rank(dtype: type) -> None:
    m = _squeeze_chain(dtype)
    assert "ElementwiseAnyRank" in _ops(m)
    sess = jitort.InferenceSession(m.SerializeToString())
    x = np.arange(6).astype(dtype)
    b = np.array(1, dtype)
    for s in ([2, 1, 3], [1, 6, 1], [1, 1, 6], [3, 2, 1]):  # squeezed ranks 2, 1, 1, 2
        feeds = {"x": x, "s": np.array(s, np.int64), "b": b}
        assert_close(sess.run(None, feeds), run_ort(m, feeds))

