"""FusedConv, FusedGemm, FusedMatMul (com.microsoft) vs onnxruntime over their activations and
attributes, and an unsupported activation raising NotImplemented naming op, domain and opset."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from jitort.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented
from oracle import assert_close, make_model, rand, run_ort

F = np.float32
MS = {"com.microsoft": 1}
ACTS = [("", []), ("Relu", []), ("Tanh", []), ("Sigmoid", []), ("LeakyRelu", [0.2]), ("HardSigmoid", [0.3, 0.4]),
        ("Clip", [-0.5, 0.75])]


def _run(node, feeds, inits, rtol=1e-4, atol=1e-4):
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, list(node.output), inits,
                   extra_opsets=MS)
    got = ort.InferenceSession(m.SerializeToString()).run(None, feeds)
    assert_close(got, run_ort(m, feeds), rtol, atol)


def _act_attrs(name, params):
    attrs = {"activation": name} if name else {}
    if params:
        attrs["activation_params"] = params
    return attrs


@pytest.mark.parametrize("act,params", ACTS, ids=[a or "none" for a, _ in ACTS])
def test_fused_conv_activations(act, params):
    x = rand((1, 3, 9, 9), seed=1)
    inits = {"w": rand((4, 3, 3, 3), seed=2, low=-0.5, high=0.5), "b": rand((4,), seed=3)}
    node = helper.make_node("FusedConv", ["x", "w", "b"], ["y"], domain="com.microsoft", pads=[1, 1, 1, 1],
                            **_act_attrs(act, params))
    _run(node, {"x": x}, inits)


@pytest.mark.parametrize("case", ["z_relu", "z_none", "strided_group", "no_bias", "z_tanh_dynamic_w"])
def test_fused_conv_variants(case):
    x = rand((2, 4, 8, 8), seed=4)
    w = rand((4, 4, 3, 3), seed=5, low=-0.5, high=0.5)
    b = rand((4,), seed=6)
    feeds, inits, attrs = {"x": x}, {"w": w, "b": b}, {"pads": [1, 1, 1, 1]}
    ins = ["x", "w", "b"]
    if case.startswith("z"):
        feeds["z"] = rand((2, 4, 8, 8), seed=7)
        ins.append("z")
        attrs.update(_act_attrs({"z_relu": "Relu", "z_none": "", "z_tanh_dynamic_w": "Tanh"}[case], []))
    if case == "strided_group":
        inits["w"] = w[:, :2]
        attrs.update(group=2, strides=[2, 2], dilations=[1, 1], **_act_attrs("Relu", []))
    if case == "no_bias":
        ins = ["x", "w"]
        del inits["b"]
        attrs.update(_act_attrs("LeakyRelu", [0.1]))
    if case == "z_tanh_dynamic_w":
        feeds["w"] = inits.pop("w")
    _run(helper.make_node("FusedConv", ins, ["y"], domain="com.microsoft", **attrs), feeds, inits)


def test_fused_conv_unsupported_activation():
    node = helper.make_node("FusedConv", ["x", "w"], ["y"], domain="com.microsoft", activation="Softsign",
                            name="fc")
    m = make_model([node], {"x": (F, [1, 1, 4, 4])}, ["y"], {"w": rand((1, 1, 3, 3))}, extra_opsets=MS)
    with pytest.raises(OrtNotImplemented, match=r"FusedConv.*com\.microsoft.*opset 1.*Softsign"):
        ort.InferenceSession(m.SerializeToString())


GEMM_ACTS = [("Relu", {}), ("Tanh", {}), ("Sigmoid", {}), ("LeakyRelu", {"activation_alpha": 0.3}),
             ("HardSigmoid", {"activation_alpha": 0.3, "activation_beta": 0.6}),
             ("Elu", {"activation_alpha": 0.5}),
             ("Selu", {"activation_alpha": 1.2, "activation_gamma": 0.9}), ("Softplus", {}), ("Softsign", {}),
             ("ThresholdedRelu", {"activation_alpha": 0.4}), ("ScaledTanh", {"activation_alpha": 1.5, "activation_beta": 0.5}),
             ("ParametricSoftplus", {"activation_alpha": 1.5, "activation_beta": 0.5})]


@pytest.mark.parametrize("act,extra", GEMM_ACTS, ids=[f"{a}-{len(e)}" for a, e in GEMM_ACTS])
@pytest.mark.parametrize("trans", [(0, 0), (1, 1)])
def test_fused_gemm(act, extra, trans):
    ta, tb = trans
    a = rand((5, 6) if not ta else (6, 5), seed=8)
    inits = {"b": rand((6, 7) if not tb else (7, 6), seed=9), "c": rand((7,), seed=10)}
    attrs = dict(alpha=0.5, beta=2.0, transA=ta, transB=tb, activation=act, **extra)
    _run(helper.make_node("FusedGemm", ["a", "b", "c"], ["y"], domain="com.microsoft", **attrs), {"a": a}, inits)


MATMUL_GRID = [
    # (A shape, B shape, transA, transB, transBatchA, transBatchB, alpha)
    ((3, 4), (4, 5), 0, 0, 0, 0, 1.0),
    ((4, 3), (5, 4), 1, 1, 0, 0, 0.125),
    ((2, 3, 4), (2, 4, 5), 0, 0, 0, 0, 2.0),
    ((2, 4, 3), (4, 5), 1, 0, 0, 0, 1.0),
    ((3, 2, 4), (2, 4, 5), 0, 0, 1, 0, 1.0),
    ((4, 2, 3), (5, 2, 4), 1, 1, 1, 1, 0.5),
    ((3, 2, 2, 4), (2, 2, 5, 4), 0, 1, 1, 0, 1.0),
    ((2, 1, 3, 4), (5, 4), 0, 1, 0, 0, 1.0),
    ((4,), (4, 5), 0, 0, 0, 0, 3.0),
]


@pytest.mark.parametrize("sa,sb,ta,tb,tba,tbb,alpha", MATMUL_GRID)
def test_fused_matmul(sa, sb, ta, tb, tba, tbb, alpha):
    feeds = {"a": rand(sa, seed=11), "b": rand(sb, seed=12)}
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], domain="com.microsoft", alpha=alpha, transA=ta,
                            transB=tb, transBatchA=tba, transBatchB=tbb)
    _run(node, feeds, {})


@pytest.mark.parametrize("attrs", [{}, {"activation": "Clip"}, {"activation": "LeakyRelu"},
                                   {"activation": "Selu", "activation_alpha": 1.5}])
def test_fused_gemm_refused_activation(attrs):
    """No activation, or one onnxruntime's FusedGemm lacks: refused at session creation ('unknown
    kernel type'), Fail naming the node."""
    from jitort.capi.onnxruntime_pybind11_state import Fail
    m = make_model([helper.make_node("FusedGemm", ["a", "b"], ["y"], domain="com.microsoft", name="fg", **attrs)],
                   {"a": (F, [2, 3])}, ["y"], {"b": rand((3, 4))}, extra_opsets=MS)
    with pytest.raises(Fail, match="fg"):
        ort.InferenceSession(m.SerializeToString())
    with pytest.raises(Exception, match="unknown kernel type|No attribute"):
        run_ort(m, {"a": rand((2, 3))})
