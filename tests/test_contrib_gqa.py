"""GroupQueryAttention (com.microsoft) vs onnxruntime: packed and separate QKV, first prompt (right
padded), prompt into a static (max-length) cache, token decode (growing cache, ragged batch),
subsequent prompt chunks, head sharing (N/Nkv = 1, 2, 4), rotary (interleaved or not, partial,
position_ids), local window, softcap, scale, smooth softmax, head_sink, attention_bias, float16;
and the options jitort refuses (NotImplemented naming op and domain)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from jitort.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented
from oracle import assert_close, make_model, rand, run_ort

F, I32 = np.float32, np.int32
MS = {"com.microsoft": 1}
INPUTS = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "cos_cache",
          "sin_cache", "position_ids", "attention_bias", "head_sink"]


def _caches(max_pos, half, seed=9):
    ang = rand((max_pos, half), seed=seed, low=0, high=6.28)
    return np.cos(ang).astype(F), np.sin(ang).astype(F)


def _build(N, kvN, H, B, S, *, packed=False, P=None, seqlens=None, total=None, rotary=None, pos=False,
           bias=None, sink=False, dtype=F, **attrs):
    """feeds and the node's input names. P: past length (None: no past inputs); seqlens: per-batch
    total lengths (default: all equal to ``total``); total: total_sequence_length (default P + S,
    or S on a first prompt)."""
    total = (S if P is None else P + S) if total is None else total
    seqlens = [total] * B if seqlens is None else seqlens
    feeds = {}
    if packed:
        feeds["query"] = rand((B, S, (N + 2 * kvN) * H), dtype, seed=1)
    else:
        feeds.update(query=rand((B, S, N * H), dtype, seed=1), key=rand((B, S, kvN * H), dtype, seed=2),
                     value=rand((B, S, kvN * H), dtype, seed=3))
    if P is not None:
        feeds.update(past_key=rand((B, kvN, P, H), dtype, seed=4), past_value=rand((B, kvN, P, H), dtype, seed=5))
    feeds["seqlens_k"] = np.array(seqlens, I32) - 1
    feeds["total_sequence_length"] = np.array(total, I32)
    if rotary is not None:
        cos, sin = _caches(max(total, 16) + 4, rotary)
        feeds.update(cos_cache=cos.astype(dtype), sin_cache=sin.astype(dtype))
        attrs["do_rotary"] = 1
    if pos:
        feeds["position_ids"] = (np.array(seqlens).reshape(B, 1) - S + np.arange(S)).astype(np.int64)
    if bias is not None:
        feeds["attention_bias"] = rand((B if bias == "batch" else 1, N if bias == "head" else 1, S, total), dtype,
                                       seed=6, low=-2, high=2)
    if sink:
        feeds["head_sink"] = rand((N,), dtype, seed=7, low=-1, high=1)
    names = [n if n in feeds else "" for n in INPUTS]
    while not names[-1]:
        names.pop()
    return feeds, names, dict(num_heads=N, kv_num_heads=kvN, **attrs)


def _check(feeds, names, attrs, rtol=1e-4, atol=1e-5, outs=("y", "present_key", "present_value")):
    node = helper.make_node("GroupQueryAttention", names, list(outs), domain="com.microsoft", **attrs)
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, list(outs), {},
                   extra_opsets=MS)
    want = run_ort(m, feeds)
    got = ort.InferenceSession(m.SerializeToString()).run(None, feeds)
    assert_close(got, want, rtol, atol)


GRID = {
    # name: (N, kvN, H, B, S, options)
    "prompt": (4, 2, 16, 2, 5, {}),
    "prompt_padded": (4, 2, 16, 2, 5, dict(seqlens=[5, 3])),
    "prompt_packed": (4, 2, 16, 2, 5, dict(packed=True)),
    "prompt_mqa": (4, 1, 16, 1, 6, {}),
    "prompt_mha": (2, 2, 16, 2, 3, {}),
    "prompt_static_cache": (4, 2, 16, 2, 5, dict(P=9, seqlens=[5, 4], total=5)),
    "prompt_empty_past": (4, 2, 16, 1, 4, dict(P=0)),
    "decode": (4, 2, 16, 2, 1, dict(P=6)),
    "decode_ragged": (4, 2, 16, 2, 1, dict(P=6, seqlens=[7, 4])),
    "decode_packed": (4, 2, 16, 2, 1, dict(P=6, packed=True)),
    "decode_static_cache": (4, 2, 16, 2, 1, dict(P=12, seqlens=[7, 5], total=7)),
    "subsequent_prompt": (4, 2, 16, 1, 3, dict(P=4)),
    "rotary": (4, 2, 16, 2, 5, dict(rotary=8)),
    "rotary_interleaved": (4, 2, 16, 2, 5, dict(rotary=8, rotary_interleaved=1)),
    "rotary_partial": (2, 1, 32, 1, 4, dict(rotary=8)),
    "rotary_packed_decode": (4, 2, 16, 2, 1, dict(P=6, seqlens=[7, 5], rotary=8, packed=True)),
    "rotary_interleaved_decode": (4, 2, 16, 2, 1, dict(P=6, seqlens=[7, 5], rotary=8, rotary_interleaved=1)),
    "rotary_position_ids": (4, 2, 16, 2, 1, dict(P=6, seqlens=[7, 5], rotary=8, pos=True)),
    "rotary_subsequent": (4, 2, 16, 1, 3, dict(P=4, rotary=8)),
    "local_window_prompt": (4, 2, 16, 1, 7, dict(local_window_size=3)),
    "local_window_decode": (4, 2, 16, 2, 1, dict(P=8, seqlens=[9, 3], local_window_size=4)),
    "softcap": (4, 2, 16, 2, 5, dict(softcap=2.0)),
    "scale": (4, 2, 16, 2, 1, dict(P=3, scale=0.3)),
    "smooth_softmax": (4, 2, 16, 2, 5, dict(smooth_softmax=1)),
    "head_sink": (4, 2, 16, 2, 1, dict(P=5, sink=True)),
    "bias_head": (4, 2, 16, 2, 5, dict(bias="head")),
    "bias_batch_decode": (4, 2, 16, 2, 1, dict(P=5, bias="batch")),
    "non_causal": (4, 2, 16, 2, 4, dict(causal=0, seqlens=[4, 3])),
    "non_causal_decode": (4, 2, 16, 2, 1, dict(P=5, seqlens=[6, 4], causal=0)),
    "all_options": (4, 2, 16, 1, 6, dict(rotary=8, local_window_size=3, softcap=3.0, bias="head", sink=True)),
}


@pytest.mark.parametrize("name", list(GRID))
def test_group_query_attention(name):
    N, kvN, H, B, S, opts = GRID[name]
    _check(*_build(N, kvN, H, B, S, **opts))


def test_float16():
    feeds, names, attrs = _build(4, 2, 16, 2, 1, P=5, rotary=8, dtype=np.float16)
    _check(feeds, names, attrs, rtol=1e-2, atol=1e-2)


def test_output_only():
    _check(*_build(4, 2, 16, 2, 5), outs=("y",))


@pytest.mark.parametrize("attrs,what", [({"qk_output": 1}, "output_qk"),
                                        ({"sliding_window_cache": 1, "local_window_size": 2},
                                         "sliding_window_cache")])
def test_refused(attrs, what):
    feeds, names, base = _build(4, 2, 16, 1, 3)
    outs = ["y", "pk", "pv"] + (["qk"] if "qk_output" in attrs else [])
    node = helper.make_node("GroupQueryAttention", names, outs, domain="com.microsoft", **base, **attrs)
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, outs, {}, extra_opsets=MS)
    with pytest.raises(OrtNotImplemented, match=f"GroupQueryAttention.*com.microsoft.*{what}"):
        ort.InferenceSession(m.SerializeToString()).run(None, feeds)


def test_threads_split_units(monkeypatch):
    """The (batch, KV head) units split over 2 threads give the same bits as 1 thread (each unit's
    rows are written by one thread, in one order), and onnxruntime's result."""
    from jitort.kernels import contrib_gqa
    feeds, names, attrs = _build(4, 2, 16, 2, 6, rotary=8, bias="head")
    args = [feeds.get(n) if n else None for n in names]
    outs = {}
    for parts in (1, 2):
        monkeypatch.setattr(contrib_gqa, "_nparts", lambda *a, p=parts: p)
        outs[parts] = contrib_gqa.GroupQueryAttention(*args, _nout=3, **attrs)
    for a, b in zip(outs[1], outs[2]):
        np.testing.assert_array_equal(a, b)
    node = helper.make_node("GroupQueryAttention", names, ["y", "pk", "pv"], domain="com.microsoft", **attrs)
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y", "pk", "pv"], {},
                   extra_opsets=MS)
    assert_close(list(outs[2]), run_ort(m, feeds), 1e-4, 1e-5)
