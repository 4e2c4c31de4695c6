"""Transformer graphs as torch exporters emit them match onnxruntime at two sequence lengths, and
the second length compiles nothing (kernels specialise on dtype and rank, never on shape)."""
from __future__ import annotations

import numpy as np
import pytest

import jitort
from jitort import cache, zoo
from oracle import assert_close, run_ort


def _feeds(model, batch, seq, seed):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in model.graph.input:
        if i.type.tensor_type.elem_type == 7:  # int64 attention mask: some padding at the end
            m = np.ones((batch, seq), np.int64)
            m[0, seq - 2:] = 0
            feeds[i.name] = m
        else:
            dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
            feeds[i.name] = rng.standard_normal((batch, seq, dims[2])).astype(np.float32)
    return feeds


@pytest.mark.parametrize("build", [zoo.bert_layer, zoo.gpt_block], ids=["bert", "gpt"])
def test_matches_ort_and_new_length_compiles_nothing(build):
    model = build()
    sess = jitort.InferenceSession(model.SerializeToString())
    first = _feeds(model, 2, 7, 0)
    assert_close(sess.run(None, first), run_ort(model, first), rtol=1e-3, atol=1e-4)
    mark = cache.compile_count()
    for batch, seq in ((2, 13), (3, 5)):
        feeds = _feeds(model, batch, seq, seq)
        assert_close(sess.run(None, feeds), run_ort(model, feeds), rtol=1e-3, atol=1e-4)
    assert cache.compiled_since(mark) == [], "a new batch/sequence length must not compile"


def test_bert_fuses_gelu_and_mask_chains():
    sess = jitort.InferenceSession(zoo.bert_layer().SerializeToString())
    g = sess.artifact.ir()
    # the FFN's GELU (Div, Erf, Add, Mul, Mul) is the first MatMul's epilogue (passes/gemm_epilogue.py)
    assert [n.attrs.get("_activation") for n in g.nodes if n.domain == "jitort" and n.op_type == "MatMul"].count(
        "Gelu") == 1, [(n.op_type, n.attrs.get("_activation")) for n in g.nodes]
    # no elementwise op is left outside a fused group
    assert not any(n.op_type in ("Add", "Mul", "Erf", "Div", "Sub", "Sqrt", "Pow", "Cast") for n in g.nodes)


def test_second_session_same_model_compiles_nothing():
    model = zoo.gpt_block(seed=1)
    feeds = _feeds(model, 1, 6, 3)
    a = jitort.InferenceSession(model.SerializeToString()).run(None, feeds)
    mark = cache.compile_count()
    s2 = jitort.InferenceSession(model.SerializeToString())
    b = s2.run(None, feeds)
    assert cache.compiled_since(mark) == []
    assert s2.compile_report["compiled"] == []
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
