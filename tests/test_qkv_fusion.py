"""passes/qkv_fusion.py: GroupQueryAttention's Q, K and V projections packed into one product.

Checked against onnxruntime running the unfused model: the decoders of test_llm_decode (MatMul and
int4 MatMulNBits) take the packed form, a prompt and a decode step match; MatMulNBits with a bias and
float zero points packs too; projections whose output something else reads, and uint8 zero points,
are left alone (the graph notes say which were packed)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import jitort as ort
from oracle import ORT_MAX_IR
from test_llm_decode import Decoder, _ort_session, empty_cache, llama_decoder

MS = "com.microsoft"


def _gqa(sess: ort.InferenceSession) -> list:
    return [n for n in sess.artifact.ir().nodes if n.op_type == "GroupQueryAttention"]


def _projections(sess: ort.InferenceSession) -> int:
    return sum(n.op_type in ("MatMul", "MatMulNBits") for n in sess.artifact.ir().nodes)


@pytest.mark.parametrize("int4", [False, True])
def test_decoder_projections_packed(int4):
    model = llama_decoder(int4=int4)
    sess = ort.InferenceSession(model.SerializeToString())
    gqa = _gqa(sess)
    assert len(gqa) == 2 and all(n.inputs[1:3] == ["", ""] for n in gqa)
    # per layer q/k/v/o/gate/up/down (7) + lm head -> 5 per layer + lm head
    assert _projections(sess) == 2 * 5 + 1
    assert sum("packed into one" in n for n in sess.artifact.ir().notes) == 2
    prompt = np.random.default_rng(3).integers(0, 64, (1, 5)).astype(np.int64)
    mine, ref = Decoder(sess, model, prompt), Decoder(_ort_session(model), model, prompt)
    for step in range(3):
        got, tok = mine.step()
        want, want_tok = ref.step()
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4, err_msg=f"step {step}")
        for n, a in mine.past.items():
            np.testing.assert_allclose(a, ref.past[n], rtol=1e-3, atol=1e-4, err_msg=f"step {step} {n}")


def test_projection_read_elsewhere_not_packed():
    """Layer 0's K projection is also a graph output: that layer keeps its three products."""
    model = llama_decoder()
    k_out = next(o for n in model.graph.node if n.name == "layers.0.attn.k_proj" for o in n.output)
    model.graph.output.append(helper.make_tensor_value_info(k_out, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString())
    packed = [n.inputs[1:3] == ["", ""] for n in _gqa(sess)]
    assert packed == [False, True]
    prompt = np.random.default_rng(4).integers(0, 64, (1, 6)).astype(np.int64)
    feeds = {"input_ids": prompt, "attention_mask": np.ones((1, 6), np.int64), **empty_cache(model, 1)}
    for got, want in zip(sess.run(None, feeds), _ort_session(model).run(None, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def _nbits_attention(zero_points: str, bias: bool, heads: int = 4, kv_heads: int = 2, H: int = 16,
                     K: int = 64) -> onnx.ModelProto:
    """x [1, S, K] -> q/k/v MatMulNBits (4-bit, block 16; ``zero_points``: "", "float" or "uint8";
    ``bias``) -> GroupQueryAttention with a past cache -> y."""
    rng = np.random.default_rng(7)
    block, blocks = 16, K // 16
    inits, nodes = [], []
    outs = []
    for name, N in (("q", heads * H), ("k", kv_heads * H), ("v", kv_heads * H)):
        w = rng.integers(0, 256, (N, blocks, block // 2), dtype=np.uint8)
        s = rng.uniform(0.02, 0.06, (N, blocks)).astype(np.float32)
        ins = [f"{name}.w", f"{name}.s"]
        inits += [numpy_helper.from_array(w, ins[0]), numpy_helper.from_array(s, ins[1])]
        if zero_points == "float":
            inits.append(numpy_helper.from_array(rng.uniform(6, 10, (N, blocks)).astype(np.float32), f"{name}.z"))
        elif zero_points == "uint8":
            inits.append(numpy_helper.from_array(rng.integers(0, 256, (N, (blocks + 1) // 2), dtype=np.uint8),
                                                 f"{name}.z"))
        ins.append(f"{name}.z" if zero_points else "")
        ins.append("")  # g_idx
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), f"{name}.b"))
            ins.append(f"{name}.b")
        while not ins[-1]:
            ins.pop()
        nodes.append(helper.make_node("MatMulNBits", ["x"] + ins, [f"{name}/out"], name=f"{name}_proj", domain=MS,
                                      K=K, N=N, bits=4, block_size=block))
        outs.append(f"{name}/out")
    nodes.append(helper.make_node("GroupQueryAttention", outs + ["past_k", "past_v", "seqlens_k", "total"],
                                  ["y", "present_k", "present_v"], domain=MS, num_heads=heads, kv_num_heads=kv_heads))
    graph = helper.make_graph(
        nodes, "nbits_gqa",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "S", K]),
         helper.make_tensor_value_info("past_k", TensorProto.FLOAT, [1, kv_heads, "P", H]),
         helper.make_tensor_value_info("past_v", TensorProto.FLOAT, [1, kv_heads, "P", H]),
         helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
         helper.make_tensor_value_info("total", TensorProto.INT32, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("present_k", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("present_v", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = min(ORT_MAX_IR, 10)
    return model


@pytest.mark.parametrize("zero_points,bias,packs", [("", False, True), ("float", True, True), ("", True, True),
                                                     ("uint8", False, False)])
def test_nbits_variants(zero_points, bias, packs):
    model = _nbits_attention(zero_points, bias)
    sess = ort.InferenceSession(model.SerializeToString())
    assert (_gqa(sess)[0].inputs[1:3] == ["", ""]) == packs
    ref = _ort_session(model)
    rng = np.random.default_rng(11)
    for S, P in ((5, 0), (1, 9)):  # a prompt, a decode step
        feeds = {"x": rng.standard_normal((1, S, 64)).astype(np.float32),
                 "past_k": rng.standard_normal((1, 2, P, 16)).astype(np.float32),
                 "past_v": rng.standard_normal((1, 2, P, 16)).astype(np.float32),
                 "seqlens_k": np.array([P + S - 1], np.int32), "total": np.array(P + S, np.int32)}
        for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
