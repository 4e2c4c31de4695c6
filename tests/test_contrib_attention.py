"""Attention and MultiHeadAttention (com.microsoft) vs onnxruntime over masks (key lengths, start/end,
raw 2-D/3-D, Megatron 4-D), causal, past/present, attention_bias, qkv_hidden_sizes, head counts,
packed QKV/KV and per-head K/V, and the options jitort refuses (NotImplemented naming op and domain)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from jitort.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented
from oracle import assert_close, make_model, rand, run_ort

F, I = np.float32, np.int32
MS = {"com.microsoft": 1}
B, S, D = 2, 4, 8


def _run(node, feeds, inits, rtol=1e-4, atol=1e-5):
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()},
                   [o for o in node.output if o], inits, extra_opsets=MS)
    got = ort.InferenceSession(m.SerializeToString()).run(None, feeds)
    assert_close(got, run_ort(m, feeds), rtol, atol)


def _mask(case, P=0):
    T = P + S
    return {"lengths": np.array([3, T], I), "start_end": np.array([T, 3, 0, 1], I),
            "raw2d": np.array([[1] * (T - 1) + [0], [1, 0] + [1] * (T - 2)], I),
            "raw3d": (rand((B, S, T), seed=3) > 0).astype(I)}[case]


ATTN_GRID = [
    # (heads, mask, unidirectional, past P, attention_bias, qkv_hidden_sizes, extra attrs, with bias)
    (2, None, 0, 0, False, None, {}, True),
    (1, None, 0, 0, False, None, {}, False),
    (4, "lengths", 0, 0, False, None, {}, True),
    (2, "start_end", 0, 0, False, None, {}, True),
    (2, "raw2d", 0, 0, False, None, {"mask_filter_value": -1e4}, True),
    (2, "raw3d", 0, 0, False, None, {}, True),
    (2, None, 1, 0, False, None, {}, True),
    (2, "raw2d", 1, 3, False, None, {}, True),
    (2, None, 0, 3, False, None, {}, True),
    (2, None, 0, 0, True, None, {"scale": 0.3}, True),
    (2, None, 0, 0, False, [8, 8, 4], {}, True),
]


@pytest.mark.parametrize("N,mask,uni,P,abias,qkv,extra,with_bias", ATTN_GRID)
def test_attention(N, mask, uni, P, abias, qkv, extra, with_bias):
    W = sum(qkv) if qkv else 3 * D
    feeds = {"x": rand((B, S, D), seed=1)}
    inits = {"w": rand((D, W), seed=2, low=-0.5, high=0.5), "b": rand((W,), seed=4, low=-0.5, high=0.5)}
    ins = ["x", "w", "b" if with_bias else "", "", "", ""]
    if mask:
        feeds["m"] = _mask(mask, P)
        ins[3] = "m"
    if P:
        feeds["past"] = rand((2, B, N, P, D // N), seed=5)
        ins[4] = "past"
    if abias:
        feeds["ab"] = rand((1, N, S, S + P), seed=6)
        ins[5] = "ab"
    attrs = dict(num_heads=N, unidirectional=uni, **extra)
    if qkv:
        attrs["qkv_hidden_sizes"] = qkv
    while not ins[-1]:
        ins.pop()
    outs = ["y", "present"] if P else ["y"]
    _run(helper.make_node("Attention", ins, outs, domain="com.microsoft", **attrs), feeds,
         {k: v for k, v in inits.items() if k in ins})


MHA_GRID = ["qkv_bias", "qkv", "cross", "per_head_kv", "mask2d", "lengths", "past",
            "causal_past", "attention_bias"]


@pytest.mark.parametrize("case", MHA_GRID)
def test_multi_head_attention(case):
    N, H, L = 2, 4, S
    if case == "cross":
        L = 6
    feeds = {"q": rand((B, S, N * H), seed=1), "k": rand((B, L, N * H), seed=2), "v": rand((B, L, N * H), seed=3)}
    inits = {"bias": rand((3 * N * H,), seed=4, low=-0.5, high=0.5)}
    ins = ["q", "k", "v", "", "", "", "", ""]
    outs = ["y"]
    attrs = {"num_heads": N}
    if case in ("qkv_bias", "cross", "past", "mask2d"):
        ins[3] = "bias"
    if case == "per_head_kv":
        feeds["k"], feeds["v"] = rand((B, N, L, H), seed=2), rand((B, N, L, H), seed=3)
        ins[3] = "bias"
    if case == "mask2d":
        feeds["m"] = np.array([[1, 1, 1, 0], [1, 0, 1, 1]], I)
        ins[4] = "m"
    if case == "lengths":
        feeds["m"] = np.array([2, 4], I)
        ins[4] = "m"
    if case in ("past", "causal_past"):
        feeds["pk"], feeds["pv"] = rand((B, N, 3, H), seed=5), rand((B, N, 3, H), seed=6)
        ins[6], ins[7] = "pk", "pv"
        outs = ["y", "present_k", "present_v"]
        if case == "causal_past":
            attrs["unidirectional"] = 1
    if case == "attention_bias":
        feeds["ab"] = rand((B, 1, S, L), seed=7)
        ins[5] = "ab"
        attrs["scale"] = 0.5
    while not ins[-1]:
        ins.pop()
    _run(helper.make_node("MultiHeadAttention", ins, outs, domain="com.microsoft", **attrs), feeds,
         {k: v for k, v in inits.items() if k in ins})


def _same_as(node, feeds, ref_node, ref_feeds, inits):
    """jitort on ``node`` vs onnxruntime on ``ref_node``: a form onnxruntime's CPU provider lacks,
    against the form it defines it by."""
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y"], inits, extra_opsets=MS)
    ref = make_model([ref_node], {k: (v.dtype, list(v.shape)) for k, v in ref_feeds.items()}, ["y"], inits,
                     extra_opsets=MS)
    assert_close(ort.InferenceSession(m.SerializeToString()).run(None, feeds), run_ort(ref, ref_feeds), 1e-4, 1e-5)


def test_attention_megatron_mask():
    """A [B, 1, M, M] mask (onnxruntime: CUDA only) is its [B, S, T] window at the past length."""
    feeds = {"x": rand((B, S, D), seed=1), "m": (rand((B, 1, 6, 6), seed=3) > -1).astype(I)}
    inits = {"w": rand((D, 3 * D), seed=2, low=-0.5, high=0.5)}
    node = helper.make_node("Attention", ["x", "w", "", "m"], ["y"], domain="com.microsoft", num_heads=2)
    ref_feeds = {"x": feeds["x"], "m": np.ascontiguousarray(feeds["m"][:, 0, :S, :S])}
    _same_as(node, feeds, node, ref_feeds, inits)


@pytest.mark.parametrize("packed", ["qkv", "kv"])
def test_multi_head_attention_packed(packed):
    """Packed QKV [B, S, N, 3, H] and KV [B, L, N, 2, H] (onnxruntime: CUDA only) are their parts."""
    N, H = 2, 4
    bias = rand((3 * N * H,), seed=4, low=-0.5, high=0.5)
    q, k, v = (rand((B, S, N, H), seed=k) for k in (1, 2, 3))
    flat = {"q": q.reshape(B, S, N * H), "k": k.reshape(B, S, N * H), "v": v.reshape(B, S, N * H)}
    ref = helper.make_node("MultiHeadAttention", ["q", "k", "v", "bias"], ["y"], domain="com.microsoft", num_heads=N)
    if packed == "qkv":
        feeds = {"q": np.stack([q, k, v], axis=3)}
        node = helper.make_node("MultiHeadAttention", ["q", "", "", "bias"], ["y"], domain="com.microsoft",
                                num_heads=N)
    else:
        feeds = {"q": flat["q"], "k": np.stack([k, v], axis=3)}
        node = helper.make_node("MultiHeadAttention", ["q", "k", "", "bias"], ["y"], domain="com.microsoft",
                                num_heads=N)
    _same_as(node, feeds, ref, flat, {"bias": bias})


def test_attention_float16():
    feeds = {"x": rand((B, S, D), np.float16, seed=1), "m": np.array([3, 4], I)}
    inits = {"w": rand((D, 3 * D), np.float16, seed=2, low=-0.5, high=0.5), "b": rand((3 * D,), np.float16, seed=4)}
    node = helper.make_node("Attention", ["x", "w", "b", "m"], ["y"], domain="com.microsoft", num_heads=2)
    _run(node, feeds, inits, rtol=1e-2, atol=1e-2)


def test_attention_rotary_not_implemented():
    node = helper.make_node("Attention", ["x", "w", "b"], ["y"], domain="com.microsoft", num_heads=2, do_rotary=1,
                            name="att")
    m = make_model([node], {"x": (F, [B, S, D])}, ["y"], {"w": rand((D, 3 * D)), "b": rand((3 * D,))},
                   extra_opsets=MS)
    sess = ort.InferenceSession(m.SerializeToString())
    with pytest.raises(OrtNotImplemented, match=r"Attention.*com\.microsoft.*do_rotary"):
        sess.run(None, {"x": rand((B, S, D))})
