"""The plan emitter's pieces: the IndentedBuffer API (indent, splice, origins), the generated-line ->
ONNX-node map that names the failing node when a run fails (outer plans and If branches), and fused
steps whose broadcast is resolved at run time (``jitort.codegen.broadcast``)."""
from __future__ import annotations

import itertools

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper

import jitort as ort
from jitort import errors
from jitort.codegen.broadcast import broadcast_shape, expand_to
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


def test_broadcast_shape_is_numpys() -> None:
    shapes = [(), (1,), (3,), (2, 1), (2, 3), (1, 3), (4, 1, 3), (0,), (1, 0), (2, 0)]
    for k in (1, 2, 3):
        for case in itertools.product(shapes, repeat=k):
            try:
                want = np.broadcast_shapes(*case)
            except ValueError as e:
                with pytest.raises(ValueError, match=str(e).split(".")[0]):
                    broadcast_shape(*case)
                continue
            assert broadcast_shape(*case) == want, case
    x = np.ones((2, 1), F)
    assert expand_to(x, (2, 1)) is x
    rng = np.random.default_rng(0)
    for xs, to in [((2, 1), (3, 2, 4)), ((), (2, 3)), ((1,), (5,)), ((3, 1, 2), (4, 3, 5, 2)), ((0, 1), (0, 3)),
                   ((2, 1), (2, 0))]:
        for x in (rng.standard_normal(xs).astype(F), rng.standard_normal(xs + (2,)).astype(F)[..., 0]):
            v = expand_to(x, to)  # C-contiguous and strided operands
            assert v.shape == to and not v.flags.writeable
            np.testing.assert_array_equal(v, np.broadcast_to(x, to))
    for xs, to in [((2, 3), (3, 3)), ((2, 3), (3,))]:
        with pytest.raises(ValueError):
            expand_to(np.ones(xs, F), to)


def test_steps_broadcast_at_run_time_match_onnxruntime() -> None:
    """x has no shape: the fused steps after it broadcast at run time ("strided" kernels; the
    constant scalar is passed as it is). Every broadcast case agrees with onnxruntime; shapes that
    do not broadcast fail naming the node."""
    nodes = [helper.make_node("Relu", ["x"], ["m"], name="relu"),
             helper.make_node("Sub", ["m", "y"], ["z"], name="sub"),
             helper.make_node("Mul", ["m", "k"], ["w"], name="scale")]
    model = make_model(nodes, {"x": (F, None), "y": (F, ["C", "D"])}, {"z": (F, ["A", "B"]), "w": (F, ["A", "B"])},
                       {"k": np.array(3, F)})
    sess = ort.InferenceSession(model.SerializeToString())
    ref = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for xs, ys in [((2, 3), (2, 3)), ((2, 1), (1, 4)), ((1, 3), (5, 3)), ((2, 3), (1, 1)), ((0, 3), (1, 3))]:
        feeds = {"x": rng.standard_normal(xs).astype(F), "y": rng.standard_normal(ys).astype(F)}
        for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
            assert got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    with pytest.raises(errors.ALL_ERRORS, match="Name:'sub'"):
        sess.run(None, {"x": np.ones((2, 3), F), "y": np.ones((2, 4), F)})


# --- Concat outputs written in place by their producers (codegen.plan.concat_in_place) ----------------

def _fire(batch: int = 1, extra_use: bool = False, pool_branch: bool = False,  # type: ignore[no-untyped-def]
          as_output: bool = False):
    """squeezenet's fire module shape: a 1x1 and a 3x3 Conv (+Relu) of one input, concatenated on the
    channels; optionally a MaxPool branch, a second consumer of one Conv's output, and that output a
    graph output too."""
    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((5, 4, 1, 1)).astype(F), "w3": rng.standard_normal((6, 4, 3, 3)).astype(F),
             "b3": rng.standard_normal(6).astype(F)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="e1x1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["x", "w3", "b3"], ["c3"], name="e3x3", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c3"], ["r3"])]
    cat = ["r1", "r3"]
    if pool_branch:
        nodes.append(helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        cat.insert(1, "p")
    nodes.append(helper.make_node("Concat", cat, ["y"], name="cat", axis=1))
    outs = {"y": (F, None)}
    if extra_use:
        nodes.append(helper.make_node("Neg", ["r3"], ["n"]))
        outs["n"] = (F, None)
    if as_output:
        outs["r3"] = (F, None)
    return make_model(nodes, {"x": (F, [batch, 4, 7, 9])}, outs, inits)


@pytest.mark.parametrize("case", ["fire", "pool_branch", "extra_use", "as_output", "batch2"])
def test_concat_inputs_written_in_place_match_onnxruntime(case: str) -> None:
    model = _fire(batch=2 if case == "batch2" else 1, extra_use=case in ("extra_use", "as_output"),
                  pool_branch=case == "pool_branch", as_output=case == "as_output")
    sess = ort.InferenceSession(model.SerializeToString())
    src = sess.artifact.plan_source
    into = [line for line in src.splitlines() if "out=" in line]
    lines = src.splitlines()
    if case == "batch2":  # a channel slice of a batch of 2 is not contiguous: the Concat copies
        assert not into and "movement.Concat(" in src
    elif case == "as_output":  # r3 is a graph output too: the Concat copies it
        assert len(into) == 1 and "out=_cat0[:, 0:5])" in into[0] and "movement.Concat(" not in src
        assert any(line.strip().startswith("_cat0[:, 5:11] = ") for line in lines)
    elif case == "extra_use":  # r3 feeds Neg too: Neg reads its range of the Concat's output
        assert len(into) == 2 and not any(line.strip().startswith("_cat0[:") for line in lines)
    elif case == "pool_branch":  # the MaxPool writes its range between the two Conv ranges too
        assert sorted(line.split("out=")[1] for line in into) == ["_cat0[:, 0:5])", "_cat0[:, 5:9])", "_cat0[:, 9:15])"]
        assert not any(line.strip().startswith("_cat0[:") for line in lines)
    else:
        assert len(into) == 2 and not any(line.strip().startswith("_cat0[:") for line in lines)
    ref = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": np.random.default_rng(1).standard_normal(model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
                                                            * 4 * 7 * 9).astype(F).reshape(-1, 4, 7, 9)}
    for _ in range(2):  # a second run into fresh buffers gives the same
        for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_refuses_an_out_array_of_another_shape() -> None:
    from jitort.kernels import conv as K
    x = np.ones((1, 4, 7, 9), F)
    w = np.ones((5, 4, 1, 1), F)
    kw = dict(w_shape=w.shape, auto_pad="NOTSET", group=1, strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), act=0)
    args = (x, K.pack_conv_weights(w, 1, np.dtype(F)), np.zeros(5, F), K.epilogue_params(np.dtype(F), 0.0, 0.0))
    buf = np.zeros((1, 8, 7, 9), F)
    got = K.conv_packed(*args, **kw, out=buf[:, 1:6])
    assert got.base is buf and (buf[:, 1:6] == 4).all() and (buf[:, 0] == 0).all() and (buf[:, 6:] == 0).all()
    with pytest.raises(errors.ALL_ERRORS, match="cannot write an output of shape"):
        K.conv_packed(*args, **kw, out=buf[:, 0:4])


@pytest.mark.parametrize("fork", [False, True])
def test_concat_chains_share_one_buffer(fork: bool) -> None:
    """densenet's dense block: each layer's Concat extends the previous Concat's output, whose
    channels are then the prefix of one buffer; the block's first input (a MaxPool) and every layer's
    Conv write their ranges, so nothing is copied. With ``fork`` a second Concat also starts from the
    first one's output: it copies it into a buffer of its own (one extension per output)."""
    rng = np.random.default_rng(2)
    pool = helper.make_node("MaxPool", ["x"], ["cat0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    inits, nodes, prev, c = {}, [pool], "cat0", 4
    for layer in range(1, 4):
        inits[f"w{layer}"] = rng.standard_normal((3, c, 3, 3)).astype(F)
        nodes += [helper.make_node("Relu", [prev], [f"a{layer}"]),
                  helper.make_node("Conv", [f"a{layer}", f"w{layer}"], [f"c{layer}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Concat", [prev, f"c{layer}"], [f"cat{layer}"], axis=1)]
        prev, c = f"cat{layer}", c + 3
    outs = {"cat3": (F, None)}
    if fork:
        inits["wf"] = rng.standard_normal((2, 7, 1, 1)).astype(F)
        nodes += [helper.make_node("Conv", ["cat1", "wf"], ["cf"]),
                  helper.make_node("Concat", ["cat1", "cf"], ["fork"], axis=1)]
        outs["fork"] = (F, None)
    model = make_model(nodes, {"x": (F, [1, 4, 6, 5])}, outs, inits)
    sess = ort.InferenceSession(model.SerializeToString())
    src = sess.artifact.plan_source
    lines = [line.strip() for line in src.splitlines()]
    assert "_cat0 = np.empty((1, 13, 6, 5), np.float32)" in lines and "movement.Concat(" not in src
    copies = [line.split(" = ")[0] for line in lines if line.startswith("_cat") and "] = " in line]
    # the block's first input (a MaxPool) writes its range too; with the fork, cat1 is copied into a second buffer
    assert copies == (["_cat1[:, 0:7]"] if fork else []), copies
    assert sum("out=_cat0[" in line for line in lines) == 4
    ref = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": rng.standard_normal((1, 4, 6, 5)).astype(F)}
    for _ in range(2):
        for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
