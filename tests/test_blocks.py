"""A ResNet bottleneck and a MobileNetV2 inverted-residual block match onnxruntime, and every
Conv+BatchNormalization(+residual Add)(+activation) runs as one conv call (BN folded, residual and
activation in the epilogue: jitort's FusedConv)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort
from oracle import check, make_model


def _conv_bn(nodes, inits, rng, x, cin, cout, k, name, group=1, act=None):
    w = (rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(np.float32)
    inits[f"{name}.w"] = w
    nodes.append(helper.make_node("Conv", [x, f"{name}.w"], [f"{name}.c"], name=f"{name}_conv",
                                  kernel_shape=[k, k], pads=[k // 2] * 4, group=group))
    for p, v in (("s", 1 + 0.1 * rng.standard_normal(cout)), ("b", 0.1 * rng.standard_normal(cout)),
                 ("m", 0.1 * rng.standard_normal(cout)), ("v", 0.5 + rng.random(cout))):
        inits[f"{name}.{p}"] = v.astype(np.float32)
    nodes.append(helper.make_node("BatchNormalization", [f"{name}.c"] + [f"{name}.{p}" for p in "sbmv"],
                                  [f"{name}.bn"], name=f"{name}_bn", epsilon=1e-5))
    if act == "relu":
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.out"], name=f"{name}_relu"))
    elif act == "relu6":
        inits[f"{name}.lo"], inits[f"{name}.hi"] = np.array(0, np.float32), np.array(6, np.float32)
        nodes.append(helper.make_node("Clip", [f"{name}.bn", f"{name}.lo", f"{name}.hi"], [f"{name}.out"],
                                      name=f"{name}_clip"))
    else:
        return f"{name}.bn"
    return f"{name}.out"


def bottleneck():
    rng, nodes, inits = np.random.default_rng(0), [], {}
    h = _conv_bn(nodes, inits, rng, "x", 64, 16, 1, "a", act="relu")
    h = _conv_bn(nodes, inits, rng, h, 16, 16, 3, "b", act="relu")
    h = _conv_bn(nodes, inits, rng, h, 16, 64, 1, "c")
    nodes += [helper.make_node("Add", [h, "x"], ["sum"]), helper.make_node("Relu", ["sum"], ["y"])]
    return make_model(nodes, {"x": (np.float32, ["N", 64, 14, 14])}, ["y"], inits, opset=13)


def inverted_residual():
    rng, nodes, inits = np.random.default_rng(1), [], {}
    h = _conv_bn(nodes, inits, rng, "x", 16, 96, 1, "expand", act="relu6")
    h = _conv_bn(nodes, inits, rng, h, 96, 96, 3, "dw", group=96, act="relu6")
    h = _conv_bn(nodes, inits, rng, h, 96, 16, 1, "project")
    nodes.append(helper.make_node("Add", [h, "x"], ["y"]))
    return make_model(nodes, {"x": (np.float32, ["N", 16, 14, 14])}, ["y"], inits, opset=13)


@pytest.mark.parametrize("build,acts", [(bottleneck, 3), (inverted_residual, 2)], ids=["bottleneck", "inverted"])
def test_block_matches_ort_with_conv_bn_act_as_one_kernel(build, acts):
    m = build()
    sess = jitort.InferenceSession(m.SerializeToString())
    g = sess.artifact.ir()
    ops = [n.op_type for n in g.nodes]
    assert ops == ["FusedConv"] * 3, ops  # the residual Add (and its Relu) too
    assert sum(1 for n in g.nodes if n.attrs.get("activation")) == acts
    assert g.nodes[-1].inputs[3] == "x"
    assert sum("conv epilogue" in note for note in g.notes) == 3, g.notes
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, m.graph.input[0].type.tensor_type.shape.dim[1].dim_value,
                                                           14, 14)).astype(np.float32)
        check(m, {"x": x}, rtol=1e-3, atol=1e-4)
