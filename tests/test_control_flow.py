"""If / Loop / Scan (subgraphs with outer-scope values, carried state, scan outputs) and the
sequence / optional ops, against onnxruntime."""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

import jitort.backend as backend
from jitort.errors import InvalidArgument
from oracle import ORT_MAX_IR, assert_close, check

F = TP.FLOAT


def _model(nodes: list, inputs: list, outputs: list, opset: int = 17, inits: list | None = None) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "cf", inputs, outputs, inits or [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ORT_MAX_IR
    return m


def _t(name: str, elem: int = F, shape: Any = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _seq(name: str, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_value_info(name, helper.make_sequence_type_proto(helper.make_tensor_type_proto(elem, None)))


def _ort(m: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime
    return onnxruntime.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _both(m: onnx.ModelProto, feeds: dict) -> list:
    """jitort through the backend (sequence inputs included) vs onnxruntime."""
    got = backend.prepare(m).run([feeds[i.name] for i in m.graph.input])
    want = _ort(m, feeds)
    for g, w in zip(got, want):
        if isinstance(w, list):
            assert isinstance(g, list) and len(g) == len(w)
            assert_close(g, w)
        else:
            assert_close([g], [w])
    return got


# --- If ------------------------------------------------------------------------------------------

def _if_model(nested: bool = False) -> onnx.ModelProto:
    c = helper.make_tensor("c", F, [3], [2.0, 3.0, 4.0])
    then_nodes = [helper.make_node("Add", ["x", "y"], ["t"])]
    if nested:
        inner_then = helper.make_graph([helper.make_node("Neg", ["t"], ["u"])], "it", [], [_t("u", F, [3])])
        inner_else = helper.make_graph([helper.make_node("Mul", ["t", "c"], ["u2"])], "ie", [], [_t("u2", F, [3])])
        then_nodes.append(helper.make_node("If", ["c2"], ["tt"], then_branch=inner_then, else_branch=inner_else))
        then_out = _t("tt", F, [3])
    else:
        then_out = _t("t", F, [3])
    then_g = helper.make_graph(then_nodes, "then", [], [then_out])
    else_g = helper.make_graph([helper.make_node("Mul", ["x", "c"], ["e"])], "else", [], [_t("e", F, [3])])
    nodes = [helper.make_node("Relu", ["x0"], ["x"]),
             helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g)]
    inputs = [_t("cond", TP.BOOL, []), _t("x0", F, [3]), _t("y", F, [3])]
    if nested:
        inputs.append(_t("c2", TP.BOOL, []))
    return _model(nodes, inputs, [_t("out", F, [3])], inits=[c])


@pytest.mark.parametrize("cond", [True, False])
@pytest.mark.parametrize("nested", [False, True])
def test_if_outer_scope(cond: bool, nested: bool) -> None:
    x = np.array([-1.0, 2.0, 3.0], np.float32)
    y = np.array([10.0, 20.0, 30.0], np.float32)
    feeds = {"cond": np.array(cond), "x0": x, "y": y}
    for c2 in ([True, False] if nested else [None]):
        if c2 is not None:
            feeds["c2"] = np.array(c2)
        check(_if_model(nested), feeds)


def test_if_branch_returns_outer_value_and_sequences() -> None:
    then_g = helper.make_graph([helper.make_node("SequenceConstruct", ["x", "x"], ["s"])], "t", [], [_seq("s")])
    else_g = helper.make_graph([helper.make_node("SplitToSequence", ["x"], ["s2"], axis=0)], "e", [], [_seq("s2")])
    m = _model([helper.make_node("If", ["cond"], ["seq"], then_branch=then_g, else_branch=else_g),
                helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=0)],
               [_t("cond", TP.BOOL, []), _t("x", F, [3])], [_t("y", F, None)], opset=13)
    for cond in (True, False):
        check(m, {"cond": np.array(cond), "x": np.array([1, 2, 3], np.float32)})


# --- Loop ----------------------------------------------------------------------------------------

def _loop_model(with_m: bool, with_cond: bool) -> onnx.ModelProto:
    """Loop carrying a running sum, scanning each step's value; the body reads outer ``w``."""
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["fi"], to=F),
         helper.make_node("Mul", ["fi", "w"], ["step"]),
         helper.make_node("Add", ["acc_in", "step"], ["acc_out"]),
         helper.make_node("Identity", ["step"], ["scan_out"]),
         helper.make_node("ReduceSum", ["acc_out"], ["total"], keepdims=0),
         helper.make_node("Less", ["total", "limit_s"], ["cond_out"])],
        "body", [_t("i", TP.INT64, []), _t("cond_in", TP.BOOL, []), _t("acc_in", F, [2])],
        [_t("cond_out", TP.BOOL, []), _t("acc_out", F, [2]), _t("scan_out", F, [2])])
    m_in = "M" if with_m else ""
    c_in = "cond" if with_cond else ""
    inputs = [_t("acc0", F, [2]), _t("w", F, [2])]
    if with_m:
        inputs.append(_t("M", TP.INT64, []))
    if with_cond:
        inputs.append(_t("cond", TP.BOOL, []))
    limit_s = helper.make_tensor("limit_s", F, [], [40.0])
    return _model([helper.make_node("Loop", [m_in, c_in, "acc0"], ["acc", "scans"], body=body)], inputs,
                  [_t("acc", F, [2]), _t("scans", F, None)], opset=13, inits=[limit_s])


@pytest.mark.parametrize("with_m,with_cond,trips", [(True, True, 6), (True, False, 4), (False, True, None),
                                                   (True, True, 0), (True, False, 0)])
def test_loop_carried_and_scan_outputs(with_m: bool, with_cond: bool, trips: int | None) -> None:
    feeds = {"acc0": np.array([0.5, 1.0], np.float32), "w": np.array([1.0, 2.0], np.float32)}
    if with_m:
        feeds["M"] = np.array(trips, np.int64)
    if with_cond:
        feeds["cond"] = np.array(True)
    check(_loop_model(with_m, with_cond), feeds)


def test_loop_false_initial_condition() -> None:
    feeds = {"acc0": np.array([0.5, 1.0], np.float32), "w": np.array([1.0, 2.0], np.float32),
             "M": np.array(5, np.int64), "cond": np.array(False)}
    check(_loop_model(True, True), feeds)


def test_loop_sequence_state() -> None:
    """Loop-13: a sequence carried through iterations (SequenceInsert), concatenated afterwards."""
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["i", "zero"], ["i1"]),
         helper.make_node("Cast", ["i1"], ["fi"], to=F),
         helper.make_node("Add", ["fi", "x"], ["v"]),
         helper.make_node("SequenceInsert", ["seq_in", "v"], ["seq_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [_t("i", TP.INT64, []), _t("cond_in", TP.BOOL, []), _seq("seq_in")],
        [_t("cond_out", TP.BOOL, []), _seq("seq_out")])
    zero = helper.make_tensor("zero", TP.INT64, [1], [0])
    m = _model([helper.make_node("SequenceEmpty", [], ["s0"], dtype=F),
                helper.make_node("Loop", ["M", "", "s0"], ["s"], body=body),
                helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0),
                helper.make_node("SequenceLength", ["s"], ["n"])],
               [_t("M", TP.INT64, []), _t("x", F, [1])], [_t("y", F, None), _t("n", TP.INT64, [])],
               opset=13, inits=[zero])
    check(m, {"M": np.array(4, np.int64), "x": np.array([0.25], np.float32)})


# --- Scan ----------------------------------------------------------------------------------------

def _scan_model(in_dir: int, out_dir: int, in_axis: int, out_axis: int) -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Mul", ["s_out", "k"], ["y_t"])],
        "body", [_t("s_in", F, [3]), _t("x_t", F, [3])], [_t("s_out", F, [3]), _t("y_t", F, [3])])
    node = helper.make_node("Scan", ["s0", "x"], ["s", "y"], body=body, num_scan_inputs=1,
                            scan_input_directions=[in_dir], scan_output_directions=[out_dir],
                            scan_input_axes=[in_axis], scan_output_axes=[out_axis])
    k = helper.make_tensor("k", F, [], [0.5])
    x_shape = [4, 3] if in_axis == 0 else [3, 4]
    return _model([node], [_t("s0", F, [3]), _t("x", F, x_shape)], [_t("s", F, [3]), _t("y", F, None)],
                  opset=16, inits=[k])


@pytest.mark.parametrize("in_dir,out_dir,in_axis,out_axis", [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 1),
                                                             (1, 1, 1, 0), (0, 0, 1, 1)])
def test_scan(in_dir: int, out_dir: int, in_axis: int, out_axis: int) -> None:
    x = np.arange(12, dtype=np.float32).reshape([4, 3] if in_axis == 0 else [3, 4])
    check(_scan_model(in_dir, out_dir, in_axis, out_axis), {"s0": np.ones(3, np.float32), "x": x})


def test_scan8_batched_with_lengths() -> None:
    body = helper.make_graph([helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
                              helper.make_node("Identity", ["s_out"], ["y_t"])],
                             "body", [_t("s_in", F, [2]), _t("x_t", F, [2])], [_t("s_out", F, [2]), _t("y_t", F, [2])])
    m = _model([helper.make_node("Scan", ["", "s0", "x"], ["s", "y"], body=body, num_scan_inputs=1)],
               [_t("s0", F, [3, 2]), _t("x", F, [3, 4, 2])], [_t("s", F, [3, 2]), _t("y", F, [3, 4, 2])], opset=8)
    check(m, {"s0": np.zeros((3, 2), np.float32), "x": np.arange(24, dtype=np.float32).reshape(3, 4, 2)})


# --- sequences and optionals ---------------------------------------------------------------------

def test_sequence_ops_chain() -> None:
    nodes = [helper.make_node("SequenceConstruct", ["a", "b", "c"], ["s1"]),
             helper.make_node("SequenceInsert", ["s1", "b", "pos"], ["s2"]),
             helper.make_node("SequenceErase", ["s2", "neg"], ["s3"]),
             helper.make_node("SequenceAt", ["s3", "neg"], ["last"]),
             helper.make_node("SequenceLength", ["s3"], ["n"]),
             helper.make_node("ConcatFromSequence", ["s3"], ["cat"], axis=1),
             helper.make_node("ConcatFromSequence", ["s3"], ["stk"], axis=-1, new_axis=1)]
    inits = [helper.make_tensor("pos", TP.INT64, [], [1]), helper.make_tensor("neg", TP.INT64, [], [-1])]
    m = _model(nodes, [_t(n, F, [2, 3]) for n in "abc"],
               [_t("last", F, None), _t("n", TP.INT64, []), _t("cat", F, None), _t("stk", F, None)], opset=13,
               inits=inits)
    check(m, {n: np.full((2, 3), k, np.float32) + np.arange(3, dtype=np.float32) for k, n in enumerate("abc")})


@pytest.mark.parametrize("split,axis,keepdims", [(None, 0, 1), (None, 1, 0), ([1, 3], 1, 1), (2, 1, 1), (3, 1, 1)])
def test_split_to_sequence(split: Any, axis: int, keepdims: int) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inputs = ["x"]
    inits = []
    if split is not None:
        inputs.append("split")
        inits.append(helper.make_tensor("split", TP.INT64, [len(split)] if isinstance(split, list) else [],
                                        split if isinstance(split, list) else [split]))
    m = _model([helper.make_node("SplitToSequence", inputs, ["s"], axis=axis, keepdims=keepdims)],
               [_t("x", F, [2, 4])], [_seq("s")], opset=13, inits=inits)
    _both(m, {"x": x})


def test_sequence_input_and_map() -> None:
    body = helper.make_graph([helper.make_node("Mul", ["e", "w"], ["o"]),
                              helper.make_node("Shape", ["e"], ["sh"])],
                             "map", [_t("e", F, None), _t("w", F, [])], [_t("o", F, None), _t("sh", TP.INT64, [1])])
    m = _model([helper.make_node("SequenceMap", ["s", "w"], ["o", "sh"], body=body)],
               [_seq("s"), _t("w", F, [])], [_seq("o"), _seq("sh", TP.INT64)], opset=17)
    _both(m, {"s": [np.arange(k + 1, dtype=np.float32) for k in range(3)], "w": np.array(2.0, np.float32)})


def test_sequence_errors() -> None:
    m = _model([helper.make_node("SequenceAt", ["s", "p"], ["y"])], [_seq("s"), _t("p", TP.INT64, [])],
               [_t("y", F, None)], opset=13)
    rep = backend.prepare(m)
    with pytest.raises(InvalidArgument, match="out of range"):
        rep.run([[np.ones(2, np.float32)], np.array(3, np.int64)])


@pytest.mark.parametrize("present", [True, False])
def test_optional_ops(present: bool) -> None:
    opt_t = helper.make_optional_type_proto(helper.make_tensor_type_proto(F, [2]))
    nodes = [helper.make_node("OptionalHasElement", ["o"], ["h"])]
    outs = [_t("h", TP.BOOL, [])]
    if present:
        nodes.append(helper.make_node("OptionalGetElement", ["o"], ["v"]))
        outs.append(_t("v", F, [2]))
    m = _model(nodes, [helper.make_value_info("o", opt_t)], outs, opset=18)
    x = np.array([1.5, 2.5], np.float32) if present else None
    got = backend.prepare(m).run([x])
    assert bool(got[0]) == present
    if present:
        np.testing.assert_array_equal(got[1], x)


def test_optional_construct_and_empty() -> None:
    nodes = [helper.make_node("Optional", ["x"], ["o"]),
             helper.make_node("OptionalHasElement", ["o"], ["h"]),
             helper.make_node("OptionalGetElement", ["o"], ["v"]),
             helper.make_node("Optional", [], ["e"], type=helper.make_tensor_type_proto(F, [])),
             helper.make_node("OptionalHasElement", ["e"], ["he"])]
    m = _model(nodes, [_t("x", F, [2])], [_t("h", TP.BOOL, []), _t("v", F, [2]), _t("he", TP.BOOL, [])], opset=18)
    check(m, {"x": np.array([3.0, 4.0], np.float32)})


def test_compiled_subgraphs_survive_the_model_cache(tmp_path) -> None:
    """A model with If/Loop/Scan is stored in, and reloaded from, the compiled-model cache."""
    import jitort
    so = jitort.SessionOptions()
    so.add_session_config_entry("session.jitort.cache_dir", str(tmp_path))
    model = _loop_model(True, True)
    # A graph name of its own: a plan already imported by another test would not be rewritten under
    # this cache root (jitort.cache.load_source_module returns the module it has).
    model.graph.name = f"cache_test_{tmp_path.name}"
    m = model.SerializeToString()
    feeds = {"acc0": np.array([0.5, 1.0], np.float32), "w": np.array([1.0, 2.0], np.float32),
             "M": np.array(5, np.int64), "cond": np.array(True)}
    first = jitort.InferenceSession(m, so)
    second = jitort.InferenceSession(m, so)
    assert second.compile_report["loaded_from"], second.compile_report["cache_notes"]
    for a, b in zip(first.run(None, feeds), second.run(None, feeds)):
        np.testing.assert_array_equal(a, b)
