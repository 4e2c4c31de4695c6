"""The plan emitter's pieces: the IndentedBuffer API (indent, splice, origins), and the generated-line ->
ONNX-node map that names the failing node when a run fails (outer plans and If branches)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import jitort as ort
from jitort import errors
from jitort.codegen.linemap import NodeLines, build_line_map, line_map_source, node_at, parse_line_map
from jitort.codegen.source import IndentedBuffer
from oracle import make_model

F = np.float32


def test_buffer_indent_splice_and_origins() -> None:
    inner = IndentedBuffer()
    inner.writeline("a = 1")
    with inner.origin("step"):
        inner.writeline("if a:")
        with inner.indent():
            inner.writeline("b = 2")
    inner.writeline("")
    outer = IndentedBuffer()
    outer.writeline("def f():")
    with outer.indent(), outer.origin("outer"):
        outer.splice(inner)
        outer.writeline("return b")
    assert outer.getvalue() == "def f():\n    a = 1\n    if a:\n        b = 2\n\n    return b\n"
    # spliced lines keep their own origin; those without one take the splice's
    assert outer.origins() == [None, "outer", "step", "step", "outer", "outer"]
    assert outer.lines()[2] == "    if a:" and len(outer) == 6
    outer.lines().clear()  # a copy: the buffer is unchanged
    assert len(outer) == 6


def test_buffer_counts_physical_lines() -> None:
    buf = IndentedBuffer(1)
    buf.writeline("x = (1,\n     2)")
    assert buf.lines() == ["    x = (1,", "         2)"]


def test_line_map_round_trip() -> None:
    origins = [None, 0, 0, None, 1, 1, 1, None, 1]
    entries = build_line_map(origins, [("Relu", "r"), ("fused elementwise", "a, b")])
    assert entries == (NodeLines(2, 3, "Relu", "r"), NodeLines(5, 9, "fused elementwise", "a, b"))
    namespace: dict = {}
    exec("\n".join(line_map_source(entries)), namespace)  # noqa: S102 - jitort's own generated text
    assert node_at(namespace, 3) == ("Relu", "r") and node_at(namespace, 7) == ("fused elementwise", "a, b")
    assert node_at(namespace, 4) is None and node_at(namespace, 1) is None and node_at({}, 3) is None
    assert parse_line_map("x = 1\n" + "\n".join(line_map_source(entries))) == entries
    assert parse_line_map("x = 1\n") == ()


def _middle_failure() -> bytes:
    """Relu -> Reshape (to a shape fed at run time) -> Neg: three plan steps; the middle one can fail."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
             helper.make_node("Reshape", ["r", "s"], ["m"], name="middle_reshape"),
             helper.make_node("Neg", ["m"], ["y"], name="last_neg")]
    return make_model(nodes, {"x": (F, [6]), "s": (np.int64, [2])}, {"y": (F, None)}).SerializeToString()


def test_a_failing_middle_step_names_its_node() -> None:
    sess = ort.InferenceSession(_middle_failure())
    x = np.arange(6, dtype=F)
    np.testing.assert_array_equal(sess.run(None, {"x": x, "s": np.array([2, 3], np.int64)})[0], -x.reshape(2, 3))
    with pytest.raises(errors.ALL_ERRORS, match="running Reshape node. Name:'middle_reshape'") as e:
        sess.run(None, {"x": x, "s": np.array([4, 4], np.int64)})
    assert "first_relu" not in str(e.value) and "last_neg" not in str(e.value)


def test_a_failing_step_in_an_if_branch_names_both_nodes() -> None:
    vi = helper.make_tensor_value_info
    then = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["t"], name="inner_reshape")], "then", [],
                             [vi("t", TensorProto.FLOAT, None)])
    els = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="inner_neg")], "else", [],
                            [vi("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("If", ["c"], ["y"], name="the_if", then_branch=then, else_branch=els)]
    model = make_model(nodes, {"c": (np.bool_, []), "x": (F, [6]), "s": (np.int64, [2])}, {"y": (F, None)})
    sess = ort.InferenceSession(model.SerializeToString())
    feeds = {"c": np.array(True), "x": np.arange(6, dtype=F), "s": np.array([4, 4], np.int64)}
    with pytest.raises(errors.ALL_ERRORS) as e:
        sess.run(None, feeds)
    msg = str(e.value)
    outer, inner = msg.find("running If node. Name:'the_if'"), msg.find("running Reshape node. Name:'inner_reshape'")
    assert 0 <= outer < inner, msg
