"""Import-time work of jitort.functions / rewrites / refine: schema-function expansion (plain and
context-dependent, recursive, renamed uniquely), model-local functions, type refinement, CastLike ->
Cast, Cast/Equal on types Numba cannot compute with, and opset < 7 broadcasting — against
onnxruntime or the spec."""
from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

import jitort
import jitort.backend as backend
from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.frontend.functions import expand_functions, function_of
from jitort.frontend.importer import import_model
from oracle import ORT_MAX_IR, check, make_model, node_model, rand, run_jitort

F = TP.FLOAT


def _model(nodes: list, inputs: dict, outputs: list, opset: int, inits: dict | None = None,
           functions: list | None = None, extra: dict | None = None) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(d)), s)
           for n, (d, s) in inputs.items()]
    outs = [helper.make_value_info(o, onnx.TypeProto()) for o in outputs]
    g = helper.make_graph(nodes, "f", ins, outs,
                          [onnx.numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra or {}).items()]
    m = helper.make_model(g, opset_imports=opsets, functions=functions or [])
    m.ir_version = ORT_MAX_IR
    return m


@pytest.mark.parametrize("axis,eps", [(-1, 1e-5), (1, 1e-3), (0, 1e-5)])
def test_rms_normalization_expands(axis: int, eps: float) -> None:
    x = rand([2, 3, 4], seed=1)
    scale = rand([2, 3, 4][axis:] if axis >= 0 else [4], seed=2)
    m = node_model("RMSNormalization", {"x": x}, opset=23, initializers={"s": scale}, axis=axis, epsilon=eps)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal", [0, 1])
def test_attention_expands(causal: int) -> None:
    q, k, v = rand([2, 3, 4, 8], seed=3), rand([2, 3, 6, 8], seed=4), rand([2, 3, 6, 8], seed=5)
    m = node_model("Attention", {"q": q, "k": k, "v": v}, opset=23, is_causal=causal)
    check(m, {"q": q, "k": k, "v": v}, rtol=1e-4, atol=1e-5)


def test_rotary_embedding_expands() -> None:
    x = rand([2, 4, 3, 8], seed=6)
    cos, sin = rand([50, 4], seed=7, low=-1, high=1), rand([50, 4], seed=8, low=-1, high=1)
    pos = np.array([[0, 1, 2], [5, 9, 49]], np.int64)
    m = node_model("RotaryEmbedding", {"x": x, "cos": cos, "sin": sin, "pos": pos}, opset=23)
    check(m, {"x": x, "cos": cos, "sin": sin, "pos": pos}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_context_dependent(reduction: str) -> None:
    x = rand([3, 5, 2], seed=9)
    t = np.array([[0, 4], [2, 1], [3, 3]], np.int64)
    w = rand([5], seed=10, low=0.1, high=1)
    m = node_model("NegativeLogLikelihoodLoss", {"x": x, "t": t}, opset=22, initializers={"w": w},
                   reduction=reduction)
    check(m, {"x": x, "t": t}, rtol=1e-5, atol=1e-6)


def test_swish_and_softmax_cross_entropy() -> None:
    x = rand([2, 5], seed=11)
    check(node_model("Swish", {"x": x}, opset=24, alpha=0.7), {"x": x}, rtol=1e-5, atol=1e-6)
    t = np.array([1, 4], np.int64)
    check(node_model("SoftmaxCrossEntropyLoss", {"x": x, "t": t}, opset=13, n_outputs=2), {"x": x, "t": t},
          rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_window_functions_expand(op: str, periodic: int) -> None:
    n = np.array(10, np.int64)
    m = node_model(op, {}, opset=17, initializers={"n": n}, periodic=periodic)
    got = run_jitort(m, {})[0]
    k = np.arange(10) / (10 if periodic else 9)
    a0, a1, a2 = {"HannWindow": (0.5, 0.5, 0), "HammingWindow": (25 / 46, 21 / 46, 0),
                  "BlackmanWindow": (0.42, 0.5, 0.08)}[op]
    want = a0 - a1 * np.cos(2 * np.pi * k) + a2 * np.cos(4 * np.pi * k)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_expansion_names_are_unique_and_versions_kept() -> None:
    x = rand([2, 4], seed=12)
    nodes = [helper.make_node("RMSNormalization", ["x", "s"], ["y1"]),
             helper.make_node("RMSNormalization", ["y1", "s"], ["y2"], epsilon=0.1)]
    m = _model(nodes, {"x": (np.float32, [2, 4])}, ["y2"], 23, {"s": rand([4], seed=13)})
    g = import_model(m)
    outs = [o for n in g.nodes for o in n.outputs if o]
    assert len(outs) == len(set(outs))
    assert {n.op_type for n in g.nodes} >= {"ReduceMean", "Sqrt"}
    check(m, {"x": x}, rtol=1e-5, atol=1e-6)


def test_function_of_context_dependent_and_plain() -> None:
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"])
    assert function_of(node, 13, [helper.make_tensor_type_proto(F, [2, 3])]) is not None
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"])
    assert function_of(node, 11, [helper.make_tensor_type_proto(F, [2])] * 2) is None


def _local_functions() -> list[onnx.FunctionProto]:
    # inner(a) = a * alpha (attribute reference); outer(a, b) = inner(a) + b, calling inner with alpha=2
    inner = helper.make_function(
        "custom", "Scale", ["a"], ["out"],
        [helper.make_node("Constant", [], ["c"], value_float=1.0),
         helper.make_node("CastLike", ["c", "a"], ["one"]),
         helper.make_node("Mul", ["a", "one"], ["a1"]),
         helper.make_node("LeakyRelu", ["a1"], ["out"])],
        opset_imports=[helper.make_opsetid("", 17)], attributes=["alpha"])
    inner.node[3].attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="alpha",
                                                       type=onnx.AttributeProto.FLOAT))
    outer = helper.make_function(
        "custom", "ScaleAdd", ["a", "b"], ["out"],
        [helper.make_node("Scale", ["a"], ["s"], domain="custom", alpha=0.25),
         helper.make_node("Add", ["s", "b"], ["out"])],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    return [inner, outer]


def test_model_local_functions_nested_with_attribute_refs() -> None:
    a, b = rand([3, 4], seed=14), rand([3, 4], seed=15)
    m = _model([helper.make_node("ScaleAdd", ["a", "b"], ["y"], domain="custom")],
               {"a": (np.float32, [3, 4]), "b": (np.float32, [3, 4])}, ["y"], 17,
               functions=_local_functions(), extra={"custom": 1})
    got = check(m, {"a": a, "b": b})[0]
    np.testing.assert_allclose(got, np.where(a > 0, a, 0.25 * a) + b, rtol=1e-6)


def test_reduce_with_runtime_axes_gets_a_rank() -> None:
    """ReduceSum whose axes arrive at run time: onnx's inference gives no rank; keepdims keeps it."""
    x = rand([3, 2, 2], seed=16)
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
             helper.make_node("Sqrt", ["s"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=TP.DOUBLE)]
    m = _model(nodes, {"x": (np.float32, [3, 2, 2]), "axes": (np.int64, [1])}, ["y"], 18)
    for axes in ([1], [-1], [0]):
        check(m, {"x": np.abs(x), "axes": np.array(axes, np.int64)})


def test_shape_arithmetic_is_refined() -> None:
    """Axes computed with Range/Size (beyond onnx's data propagation) still type the reduction."""
    x = rand([2, 3, 4], seed=17)
    nodes = [helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Size", ["sh"], ["rank"]),
             helper.make_node("Range", ["one", "rank", "one"], ["axes"]),
             helper.make_node("ReduceMean", ["x", "axes"], ["m"]),
             helper.make_node("Sub", ["x", "m"], ["y"])]
    m = _model(nodes, {"x": (np.float32, [2, 3, 4])}, ["y"], 18, {"one": np.array(1, np.int64)})
    check(m, {"x": x}, rtol=1e-5, atol=1e-6)


def test_castlike_does_not_broadcast_like() -> None:
    x = rand([3, 1], seed=18)
    like = np.zeros((3, 4), np.float64)
    m = make_model([helper.make_node("CastLike", ["x", "like"], ["y"])],
                   {"x": (np.float32, [3, 1]), "like": (np.float64, [3, 4])}, ["y"], opset=15)
    got = check(m, {"x": x, "like": like})[0]
    assert got.shape == (3, 1) and got.dtype == np.float64


@pytest.mark.parametrize("to,src", [(TP.FLOAT8E4M3FN, np.float32), (TP.FLOAT8E5M2, np.float16),
                                    (TP.INT4, np.float32), (TP.UINT4, np.float32), (TP.FLOAT4E2M1, np.float32)])
@pytest.mark.parametrize("saturate", [1, 0])
def test_cast_to_low_bit_types(to: int, src: Any, saturate: int) -> None:
    x = np.array([0.4, -1.6, 7.0, 1000.0, -3.3, 0.0, 15.0, -9.0], src)
    m = node_model("Cast", {"x": x}, opset=21, to=to, saturate=saturate)
    got = run_jitort(m, {"x": x})[0]
    dt = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    want = x
    if saturate and dt.name.startswith("float8"):
        fmax = float(ml_dtypes.finfo(dt).max)
        want = np.clip(x, -fmax, fmax)
    assert got.dtype == dt
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(dt).astype(np.float32))
    back = node_model("Cast", {"q": got}, opset=21, to=TP.FLOAT)
    np.testing.assert_array_equal(run_jitort(back, {"q": got})[0], got.astype(np.float32))


def test_equal_on_strings() -> None:
    a = np.array(["a", "bc", ""], object)
    b = np.array(["a", "b", ""], object)
    check(make_model([helper.make_node("Equal", ["a", "b"], ["y"])],
                     {"a": (object, [3]), "b": (object, [3])}, ["y"], opset=19), {"a": a, "b": b})


def _legacy_model(op: str, a_shape: list, b: np.ndarray, **attrs: Any) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"], **attrs)], "legacy",
                          [helper.make_tensor_value_info("a", F, a_shape)],
                          [helper.make_tensor_value_info("y", F, a_shape)], [onnx.numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 6)])


@pytest.mark.parametrize("op,fn", [("Add", np.add), ("Mul", np.multiply), ("Sub", np.subtract),
                                   ("Div", np.divide)])
def test_opset6_broadcast_attribute(op: str, fn: Any) -> None:
    a = rand([2, 3, 4], seed=19)
    b = rand([3], seed=20, low=1, high=2)
    out = backend.prepare(_legacy_model(op, [2, 3, 4], b, broadcast=1, axis=1)).run([a])[0]
    np.testing.assert_allclose(out, fn(a, b.reshape(3, 1)), rtol=1e-6)
    b2 = rand([4], seed=21, low=1, high=2)
    out = backend.prepare(_legacy_model(op, [2, 3, 4], b2, broadcast=1)).run([a])[0]
    np.testing.assert_allclose(out, fn(a, b2), rtol=1e-6)


def test_opset6_prelu_slope_per_channel() -> None:
    a = rand([2, 3, 4], seed=22)
    slope = np.array([0.1, 0.2, 0.3], np.float32)
    out = backend.prepare(_legacy_model("PRelu", [2, 3, 4], slope)).run([a])[0]
    np.testing.assert_allclose(out, np.where(a > 0, a, a * slope.reshape(3, 1)), rtol=1e-6)


def test_unknown_op_without_function_is_not_implemented() -> None:
    m = make_model([helper.make_node("Frobnicate", ["x"], ["y"], domain="acme")], {"x": (np.float32, [2])},
                   {"y": (np.float32, [2])}, extra_opsets={"acme": 1})
    with pytest.raises(OrtNotImplemented, match="Frobnicate.*acme"):
        jitort.InferenceSession(m.SerializeToString())


def test_expand_functions_yields_versions() -> None:
    m = node_model("Swish", {"x": rand([3])}, opset=24)
    from jitort.frontend.importer import infer, opsets_of
    g = infer(m).graph
    values: dict = {}
    out = list(expand_functions(g, opsets_of(m), values))
    assert all(isinstance(v, int) for _, v in out)
    assert "Swish" not in {n.op_type for n, _ in out}
