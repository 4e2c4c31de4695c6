"""End to end: models derived at test time by onnxruntime's own tools run on jitort as on onnxruntime
(rtol 1e-3). onnxruntime's offline optimiser (``optimized_model_filepath``, ORT_ENABLE_EXTENDED)
writes FusedMatMul, BiasGelu, FastGelu, FusedConv and LayerNormalization; the transformers optimiser
(``onnxruntime.transformers.optimizer``, shape inference off: it needs sympy) writes
SkipLayerNormalization, BiasGelu, FastGelu. Small models from jitort.zoo; nothing is downloaded."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime
import pytest

import jitort as ort
from jitort import zoo
from oracle import ORT_MAX_IR, assert_close, rand, run_ort


def _models():
    return {"bert": (zoo.bert_layer, {"FusedMatMul", "BiasGelu"}),
            "gpt": (zoo.gpt_block, {"FusedMatMul", "FastGelu"}),
            "conv": (lambda: zoo.conv_block(channels=8, size=12), {"FusedConv"})}


def _feeds(name):
    if name == "conv":
        return None
    x = rand((2, 5, 64), seed=1)
    if name == "bert":
        return {"hidden_states": x, "attention_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], np.int64)}
    return {"input_embeds": x}


def _feeds_for(model, name):
    feeds = _feeds(name)
    if feeds is None:
        i = model.graph.input[0]
        shape = [d.dim_value or 2 for d in i.type.tensor_type.shape.dim]
        feeds = {i.name: rand(shape, seed=1)}
    return feeds


def _contrib_ops(model):
    return collections.Counter(n.op_type for n in model.graph.node if n.domain == "com.microsoft")


def _compare(model, feeds):
    got = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert_close(got, run_ort(model, feeds), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["bert", "gpt", "conv"])
def test_offline_optimised_model(tmp_path, name):
    build, expect = _models()[name]
    m = build()
    m.ir_version = min(m.ir_version, ORT_MAX_IR)
    src, dst = tmp_path / "model.onnx", tmp_path / "optimised.onnx"
    onnx.save(m, str(src))
    so = onnxruntime.SessionOptions()
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    onnxruntime.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(dst))
    assert expect <= set(_contrib_ops(opt)), _contrib_ops(opt)
    _compare(opt, _feeds_for(opt, name))


@pytest.mark.parametrize("name,model_type", [("bert", "bert"), ("gpt", "gpt2")])
def test_transformers_optimised_model(name, model_type):
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model
    m = _models()[name][0]()
    m.ir_version = min(m.ir_version, ORT_MAX_IR)
    m.producer_name = "pytorch"  # the optimiser's fusions look for a torch export
    options = FusionOptions(model_type)
    options.enable_shape_inference = False
    opt = optimize_model(m, model_type=model_type, num_heads=4, hidden_size=64, opt_level=0,
                         optimization_options=options).model
    assert {"SkipLayerNormalization"} <= set(_contrib_ops(opt)), _contrib_ops(opt)
    _compare(opt, _feeds(name))
