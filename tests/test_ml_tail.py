"""The ml_tail pass (jitort/passes/ml_tail.py): converters' no-op Cast / Mul-by-one / Div-by-one steps after
ai.onnx.ml nodes are dropped, what is not a no-op is kept, and results still match onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from jitort.compiler import optimize
from jitort.frontend.importer import import_model
from ml_compare import compare

ML = "ai.onnx.ml"
F = 4


def _tree_classifier() -> onnx.NodeProto:
    """One stump per class id 0/1 on feature 0 (a binary classifier with two weight columns)."""
    return helper.make_node(
        "TreeEnsembleClassifier", ["X"], ["label0", "prob0"], domain=ML, name="trees",
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[0, 0, 0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_values=[0.25, 0.0, 0.0],
        nodes_truenodeids=[1, 0, 0], nodes_falsenodeids=[2, 0, 0],
        class_treeids=[0, 0, 0, 0], class_nodeids=[1, 1, 2, 2], class_ids=[0, 1, 0, 1],
        class_weights=[0.8, 0.2, 0.3, 0.7], classlabels_int64s=[3, 7], post_transform="NONE")


def _model(tail: list[onnx.NodeProto], outputs: list[tuple[str, int]], one: float = 1.0,
           one_shape: tuple[int, ...] = ()) -> onnx.ModelProto:
    g = helper.make_graph(
        [_tree_classifier(), *tail], "g", [helper.make_tensor_value_info("X", TP.FLOAT, [None, F])],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        [numpy_helper.from_array(np.full(one_shape, one, np.float32), "one")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 3)])
    m.ir_version = 10
    return m


def _ops(m: onnx.ModelProto) -> list[str]:
    """The op types after the passes (elementwise fusion off, so kept steps keep their names)."""
    return [n.op_type for n in optimize(import_model(m), ["CPUExecutionProvider"], check=True, fuse=False).nodes]


def _feeds(n: int) -> dict[str, np.ndarray]:
    return {"X": np.random.default_rng(n).normal(size=(n, F)).astype(np.float32)}


CONVERTER_TAIL = [helper.make_node("Cast", ["label0"], ["label"], to=TP.INT64),
                  helper.make_node("Mul", ["prob0", "one"], ["probabilities"])]


def test_converter_tail_is_dropped_and_matches() -> None:
    """onnxmltools' LightGBM/XGBoost tail: Cast(label, int64) and Mul(probabilities, 1), both graph outputs."""
    m = _model(CONVERTER_TAIL, [("label", TP.INT64), ("probabilities", TP.FLOAT)])
    assert _ops(m) == ["TreeEnsembleClassifier"]
    compare(m, _feeds, batches=(1, 5))


# case -> (tail, outputs, the constant's value and shape, the ops left after the ensemble)
_OUTS = [("label", TP.INT64), ("probabilities", TP.FLOAT)]
CASES = {
    # not a no-op: the Mul stays, the Cast goes
    "mul_two": (CONVERTER_TAIL, _OUTS, 2.0, (), ["Mul"]),
    # a Cast to another type stays
    "cast_changes_type": ([helper.make_node("Cast", ["label0"], ["label"], to=TP.INT32), CONVERTER_TAIL[1]],
                          [("label", TP.INT32), ("probabilities", TP.FLOAT)], 1.0, (), ["Cast"]),
    # a [1, 1, 1] one makes the [N, 2] scores [1, N, 2]: not a no-op
    "broadcasting_one": (CONVERTER_TAIL, _OUTS, 1.0, (1, 1, 1), ["Mul"]),
    # prob0 must still be written under its own name: the Mul stays
    "x_is_also_an_output": (CONVERTER_TAIL, _OUTS + [("prob0", TP.FLOAT)], 1.0, (), ["Mul"]),
    # Div(prob0, 1) read by a Relu: the Div goes, the Relu reads prob0
    "intermediate_div": ([CONVERTER_TAIL[0], helper.make_node("Div", ["prob0", "one"], ["p1"]),
                          helper.make_node("Relu", ["p1"], ["probabilities"])], _OUTS, 1.0, (), ["Relu"]),
    # prob0 also read by a Relu and the Mul's output a graph output: the Mul stays
    "input_read_twice": (CONVERTER_TAIL + [helper.make_node("Relu", ["prob0"], ["r"])],
                         _OUTS + [("r", TP.FLOAT)], 1.0, (), ["Mul", "Relu"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_what_stays_and_what_goes(case: str) -> None:
    tail, outs, one, shape, left = CASES[case]
    m = _model(tail, outs, one, shape)
    ops = _ops(m)
    assert ops[0] == "TreeEnsembleClassifier"
    assert sorted(ops[1:]) == sorted(left)
    compare(m, _feeds, batches=(1, 5))
