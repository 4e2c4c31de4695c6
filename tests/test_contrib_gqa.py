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


# prompts of TILE_ROWS (16) rows or more run on GEMM tiles (kernels/gqa_prefill.py) where the work
# is worth it (TILE_FLOPS, 0 here): several query blocks (SB = 64), several key blocks (TB = 128: a
# long past), masks cutting through blocks


@pytest.fixture
def tiles(monkeypatch):
    from jitort.kernels import contrib_gqa
    monkeypatch.setattr(contrib_gqa, "TILE_FLOPS", 0)
TILE_GRID = {
    "prompt": (4, 2, 32, 2, 70, {}),
    "prompt_padded": (4, 2, 16, 2, 40, dict(seqlens=[40, 23])),
    "prompt_packed_rotary": (4, 2, 32, 1, 33, dict(packed=True, rotary=16)),
    "rotary_interleaved": (4, 2, 16, 2, 20, dict(rotary=8, rotary_interleaved=1)),
    "mha": (2, 2, 16, 1, 16, {}),
    "subsequent_long_past": (4, 1, 16, 1, 40, dict(P=150, rotary=8)),
    "static_cache": (4, 2, 16, 2, 20, dict(P=40, seqlens=[20, 17], total=20)),
    "window": (4, 2, 16, 1, 90, dict(local_window_size=20)),
    "window_long_past": (2, 1, 16, 1, 50, dict(P=200, local_window_size=130)),
    "all_options": (4, 2, 16, 1, 30, dict(rotary=8, local_window_size=7, softcap=3.0, bias="head", sink=True)),
    "smooth_softmax": (4, 2, 16, 2, 20, dict(smooth_softmax=1)),
    "bias_batch_past": (4, 2, 16, 1, 20, dict(P=10, bias="batch")),
    "non_causal": (4, 2, 16, 2, 24, dict(causal=0, seqlens=[24, 13])),
}


@pytest.mark.parametrize("name", list(TILE_GRID))
def test_prompt_tiles(name, tiles):
    N, kvN, H, B, S, opts = TILE_GRID[name]
    _check(*_build(N, kvN, H, B, S, **opts))


@pytest.mark.parametrize("name", ["prompt", "window_long_past", "all_options"])
def test_prompt_tiles_without_blas(name, monkeypatch, tiles):
    """The tiles' loop GEMM (no BLAS: attention_gemm's fallback) gives onnxruntime's result too."""
    from jitort.kernels import attention_gemm
    monkeypatch.setattr(attention_gemm, "use_blas", False)
    N, kvN, H, B, S, opts = TILE_GRID[name]
    _check(*_build(N, kvN, H, B, S, **opts))


def test_prompt_tiles_threads_and_rows(monkeypatch, tiles):
    """The tiles' tasks split over 2 threads give the same bits as 1 thread; the row kernel
    (gqa_kernels.attend, TILE_ROWS raised) agrees to rounding: the two sum in different orders (and
    their vectorised sums' order follows the vector width: with 512-bit vectors an element of
    magnitude ~2 differed by 1.1e-6), so to the tolerance the onnxruntime comparisons use."""
    from jitort.kernels import contrib_gqa
    feeds, names, attrs = _build(4, 2, 16, 2, 70, rotary=8, seqlens=[70, 51], bias="head")
    args = [feeds.get(n) if n else None for n in names]
    one = _same_bits_on_1_and_2_parts(monkeypatch, args, attrs)
    monkeypatch.setattr(contrib_gqa, "TILE_ROWS", 1 << 30)
    rows = contrib_gqa.GroupQueryAttention(*args, _nout=3, **attrs)
    assert_close(list(one), list(rows), 1e-4, 1e-5)


def _same_bits_on_1_and_2_parts(monkeypatch, args, attrs):
    """GroupQueryAttention's outputs with its work in 1 and in 2 parts, asserted bitwise equal; the
    1-part outputs."""
    from jitort.kernels import contrib_gqa
    outs = {}
    for parts in (1, 2):
        monkeypatch.setattr(contrib_gqa, "_nparts", lambda *a, p=parts: p)
        outs[parts] = contrib_gqa.GroupQueryAttention(*args, _nout=3, **attrs)
    for a, b in zip(outs[1], outs[2]):
        np.testing.assert_array_equal(a, b)
    return outs[1]


def test_float16():
    feeds, names, attrs = _build(4, 2, 16, 2, 1, P=5, rotary=8, dtype=np.float16)
    _check(feeds, names, attrs, rtol=1e-2, atol=1e-2)


def test_output_only():
    _check(*_build(4, 2, 16, 2, 5), outs=("y",))


@pytest.mark.parametrize("attrs,what", [({"qk_output": 1}, "output_qk")])
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
    feeds, names, attrs = _build(4, 2, 16, 2, 6, rotary=8, bias="head")
    args = [feeds.get(n) if n else None for n in names]
    one = _same_bits_on_1_and_2_parts(monkeypatch, args, attrs)
    node = helper.make_node("GroupQueryAttention", names, ["y", "pk", "pv"], domain="com.microsoft", **attrs)
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y", "pk", "pv"], {},
                   extra_opsets=MS)
    assert_close(list(one), run_ort(m, feeds), 1e-4, 1e-5)


def _shared_buffer_decode(rt, m, feeds, steps):
    """Decode ``steps`` tokens through IOBinding with past_key/present_key (and the values) bound
    to one OrtValue each: onnxruntime's shared past/present buffer of max length; -> outputs."""
    so = rt.SessionOptions()
    so.intra_op_num_threads = 1
    sess = rt.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    karr, varr = feeds["past_key"].copy(), feeds["past_value"].copy()  # onnxruntime's OrtValue borrows them
    kbuf, vbuf = rt.OrtValue.ortvalue_from_numpy(karr), rt.OrtValue.ortvalue_from_numpy(varr)
    ys = []
    for t in range(steps):
        io = sess.io_binding()
        for n in ("query", "key", "value"):
            io.bind_cpu_input(n, np.ascontiguousarray(feeds[n][:, t:t + 1]))
        io.bind_cpu_input("seqlens_k", (feeds["seqlens_k"] + t).astype(I32))
        io.bind_cpu_input("total_sequence_length", np.array(int(feeds["seqlens_k"].max()) + t + 1, I32))
        io.bind_ortvalue_input("past_key", kbuf)
        io.bind_ortvalue_input("past_value", vbuf)
        io.bind_output("y")
        io.bind_ortvalue_output("present_key", kbuf)
        io.bind_ortvalue_output("present_value", vbuf)
        sess.run_with_iobinding(io)
        ys.append(io.copy_outputs_to_cpu()[0])
    return ys + [kbuf.numpy().copy(), vbuf.numpy().copy()]  # copied while karr, varr live


def test_shared_past_present_buffer():
    """genai's static cache: past and present bound to one max-length buffer, 5 decode steps of a
    ragged batch; outputs and the buffer's valid rows as onnxruntime's. (Rows past a batch's length
    are unspecified: onnxruntime, writing in place, leaves the old ones; jitort computes the present
    as without sharing, zeros there, and the binding copies it into the buffer.)"""
    import onnxruntime
    N, kvN, H, B, L, steps = 4, 2, 16, 2, 12, 5
    feeds = {"query": rand((B, steps, N * H), seed=1), "key": rand((B, steps, kvN * H), seed=2),
             "value": rand((B, steps, kvN * H), seed=3), "past_key": rand((B, kvN, L, H), seed=4),
             "past_value": rand((B, kvN, L, H), seed=5), "seqlens_k": np.array([3, 5], I32)}
    names = INPUTS[:7]
    node = helper.make_node("GroupQueryAttention", names, ["y", "present_key", "present_value"],
                            domain="com.microsoft", num_heads=N, kv_num_heads=kvN)
    types = {n: (F, [B, "S", feeds[n].shape[2]]) for n in ("query", "key", "value")}
    types.update({n: (F, [B, kvN, L, H]) for n in ("past_key", "past_value")})
    types.update(seqlens_k=(I32, [B]), total_sequence_length=(I32, []))
    m = make_model([node], types, ["y", "present_key", "present_value"], {}, extra_opsets=MS)
    got, want = _shared_buffer_decode(ort, m, feeds, steps), _shared_buffer_decode(onnxruntime, m, feeds, steps)
    assert_close(got[:steps], want[:steps], 1e-4, 1e-5)
    for b, n in enumerate(feeds["seqlens_k"] + steps):  # valid rows after the last step
        assert_close([c[b, :, :n] for c in got[steps:]], [c[b, :, :n] for c in want[steps:]], 1e-5, 1e-6)


def test_cache_length_is_bounded():
    """total_sequence_length sizes the present cache: a huge one is onnxruntime's allocation
    failure (jitort's per-tensor limit), not an attempt to allocate it."""
    from jitort.capi.onnxruntime_pybind11_state import Fail
    feeds, names, attrs = _build(4, 2, 16, 1, 1, P=3)
    feeds["total_sequence_length"] = np.array(2**31 - 1, I32)
    node = helper.make_node("GroupQueryAttention", names, ["y", "pk", "pv"], domain="com.microsoft", **attrs)
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y", "pk", "pv"], {},
                   extra_opsets=MS)
    with pytest.raises(Fail, match="GroupQueryAttention.*allocate"):
        ort.InferenceSession(m.SerializeToString()).run(None, feeds)


def _resident(T, C, W):  # the schema's L(T) for a windowed cache
    G = C - W + 1
    return T if T <= C else T - G * -(-(T - C) // G)


@pytest.mark.parametrize("B,C,W,prompt,chunks", [(1, 6, 4, 5, [1] * 9 + [3, 1]), (2, 5, 5, 4, [1] * 7),
                                                 (1, 4, 3, 9, [1, 2, 1])])
def test_sliding_window_cache(B, C, W, prompt, chunks):
    """sliding_window_cache=1: a prompt (possibly longer than the capacity), then steps of 1-3 tokens,
    each runtime fed its own present; outputs and the present's resident rows [0, L(T)) as
    onnxruntime's (rows after them are unspecified), with rotary at absolute positions."""
    import onnxruntime
    N, kvN, H = 4, 2, 16
    steps = [prompt] + chunks
    total = sum(steps)
    rng = np.random.default_rng(B * 100 + C)
    data = {n: rng.uniform(-2, 2, (B, total, w)).astype(F) for n, w in (("query", N * H), ("key", kvN * H),
                                                                          ("value", kvN * H))}
    cos, sin = _caches(total + 4, 8)
    names = INPUTS[:9]
    node = helper.make_node("GroupQueryAttention", names, ["y", "present_key", "present_value"],
                            domain="com.microsoft", num_heads=N, kv_num_heads=kvN, local_window_size=W,
                            sliding_window_cache=1, do_rotary=1)
    types = {n: (F, [B, "S", d.shape[2]]) for n, d in data.items()}
    types.update({n: (F, [B, kvN, C, H]) for n in ("past_key", "past_value")})
    types.update(seqlens_k=(I32, [B]), total_sequence_length=(I32, []), cos_cache=(F, list(cos.shape)),
                 sin_cache=(F, list(sin.shape)))
    m = make_model([node], types, ["y", "present_key", "present_value"], {}, extra_opsets=MS)
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(m.SerializeToString()),
                onnxruntime.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])]
    caches = [[np.zeros((B, kvN, C, H), F)] * 2 for _ in sessions]
    done = 0
    for S in steps:
        T = done + S
        feeds = {n: np.ascontiguousarray(d[:, done:T]) for n, d in data.items()}
        feeds.update(seqlens_k=np.full(B, T - 1, I32), total_sequence_length=np.array(T, I32), cos_cache=cos,
                     sin_cache=sin)
        outs = []
        for k, sess in enumerate(sessions):
            y, pk, pv = sess.run(None, {**feeds, "past_key": caches[k][0], "past_value": caches[k][1]})
            caches[k] = [pk, pv]
            outs.append((y, pk[:, :, :_resident(T, C, W)], pv[:, :, :_resident(T, C, W)]))
        assert_close(outs[0], outs[1], 1e-4, 1e-5)
        done = T


@pytest.mark.parametrize("qlens,past,rotary", [([4, 2], [3, 5], 8), ([3, 0], [2, 6], None), ([1, 4], [0, 7], 8)])
def test_query_seqlens(qlens, past, rotary):
    """Right-padded chunks (query_seqlens) into a static cache: the valid output rows and the cache's
    valid rows as onnxruntime's (padding rows are unspecified)."""
    N, kvN, H, B, S, L = 4, 2, 16, 2, 4, 12
    feeds = {"query": rand((B, S, N * H), seed=1), "key": rand((B, S, kvN * H), seed=2),
             "value": rand((B, S, kvN * H), seed=3), "past_key": rand((B, kvN, L, H), seed=4),
             "past_value": rand((B, kvN, L, H), seed=5),
             "seqlens_k": np.array([p + q - 1 for p, q in zip(past, qlens)], I32),
             "total_sequence_length": np.array(L, I32)}
    attrs = dict(num_heads=N, kv_num_heads=kvN)
    if rotary:
        feeds["cos_cache"], feeds["sin_cache"] = _caches(L + 4, rotary)
        attrs["do_rotary"] = 1
    feeds["query_seqlens"] = np.array(qlens, I32)
    names = [n if n in feeds else "" for n in INPUTS] + ["", "", "", "", "query_seqlens"]
    node = helper.make_node("GroupQueryAttention", names, ["y", "pk", "pv"], domain="com.microsoft", **attrs)
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y", "pk", "pv"], {},
                   extra_opsets=MS)
    got = ort.InferenceSession(m.SerializeToString()).run(None, feeds)
    want = run_ort(m, feeds)
    for b, (p, q) in enumerate(zip(past, qlens)):
        assert_close([got[0][b, :q], got[1][b, :, :p + q], got[2][b, :, :p + q]],
                     [want[0][b, :q], want[1][b, :, :p + q], want[2][b, :, :p + q]], 1e-4, 1e-5)


# --- the lowered step (contrib_gqa.GroupQueryAttention_step): the plan's path for a model's step ---

STEP_CASES = ["prompt_static_cache", "prompt_empty_past", "decode", "decode_ragged", "decode_packed",
              "decode_static_cache", "subsequent_prompt", "rotary_packed_decode", "rotary_interleaved_decode",
              "rotary_subsequent", "local_window_decode", "scale", "non_causal_decode"]


def _session(feeds, names, attrs):
    outs = ["y", "present_key", "present_value"]
    node = helper.make_node("GroupQueryAttention", names, outs, domain="com.microsoft", **attrs)
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, outs, {}, extra_opsets=MS)
    return m, ort.InferenceSession(m.SerializeToString())


@pytest.mark.parametrize("name", STEP_CASES)
def test_step_path(name):
    """Where the plan lowers the node to the step (past given, float32, no bias/sink/position_ids),
    it calls it, matches onnxruntime, and gives the general path's bits (direct calls)."""
    from jitort.kernels import contrib_gqa
    N, kvN, H, B, S, opts = GRID[name]
    feeds, names, attrs = _build(N, kvN, H, B, S, **opts)
    m, sess = _session(feeds, names, attrs)
    assert "contrib_gqa.GroupQueryAttention_step(" in sess.artifact.plan_source
    assert_close(sess.run(None, feeds), run_ort(m, feeds), 1e-4, 1e-5)
    args = [feeds.get(n) if n else None for n in names] + [None] * (9 - len(names))
    kw = {**dict(scale=0.0, softcap=0.0, do_rotary=0, rotary_interleaved=0, local_window_size=-1, causal=1), **attrs}
    step = (N, kvN, float(kw["scale"]), float(kw["softcap"]), bool(kw["do_rotary"]), bool(kw["rotary_interleaved"]),
            int(kw["local_window_size"]), bool(kw["causal"]), 3)
    got = contrib_gqa.GroupQueryAttention_step(*args[:9], step, dict(attrs, _nout=3))
    want = contrib_gqa.GroupQueryAttention(*args[:9], _nout=3, **attrs)
    status = contrib_gqa.decode_step(args[0], args[1] if args[1] is not None else args[0],
                                     args[2] if args[2] is not None else args[0], args[3], args[4], args[5],
                                     int(args[6]), *(np.zeros((1, 1), F) if a is None else a for a in args[7:9]),
                                     N, kvN, args[1] is None, *step[2:8], 1 << 40, 1e30)[0]
    assert status == 0  # the step ran its kernel, not the fallback
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_step_general_only():
    """Nodes the step does not cover keep the general call (float16, position_ids, bias, sink, no past)."""
    for dtype, opts in ((np.float16, dict(P=5)), (F, dict(P=6, rotary=8, pos=True)), (F, dict(P=5, bias="batch")),
                        (F, dict(P=5, sink=True)), (F, {})):
        feeds, names, attrs = _build(4, 2, 16, 2, 1, dtype=dtype, **opts)
        m, sess = _session(feeds, names, attrs)
        assert "GroupQueryAttention_step(" not in sess.artifact.plan_source
        assert_close(sess.run(None, feeds), run_ort(m, feeds), *((1e-2, 1e-2) if dtype == np.float16 else (1e-4, 1e-5)))


def test_step_falls_back():
    """What the step's kernel leaves goes to the general path: work worth several threads (same
    bits), a strided query (same bits), and invalid lengths (the general path's error)."""
    from jitort.kernels import contrib_gqa
    from jitort.capi.onnxruntime_pybind11_state import InvalidArgument
    feeds, names, attrs = _build(4, 2, 16, 2, 1, P=6, seqlens=[7, 4], rotary=8)
    args = [feeds[n] for n in names]
    step = (4, 2, 0.0, 0.0, True, False, -1, True, 3)
    kw = dict(attrs, _nout=3)
    want = contrib_gqa.GroupQueryAttention(*args, **kw)
    strided = np.repeat(args[0], 2, axis=2)[:, :, ::2]
    assert not strided.flags.c_contiguous
    for q in (args[0], strided):
        with pytest.MonkeyPatch.context() as mp:
            if q is args[0]:
                mp.setattr(contrib_gqa, "_STEP_MAX_WORK", 0.0)
            got = contrib_gqa.GroupQueryAttention_step(q, *args[1:], step, kw)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    bad = list(args)
    bad[5] = np.array([9, 3], I32)  # seqlens_k + 1 = 10 > total_sequence_length 7
    with pytest.raises(InvalidArgument, match="seqlens_k"):
        contrib_gqa.GroupQueryAttention_step(*bad, step, kw)
    m, sess = _session(feeds, names, attrs)
    with pytest.raises(InvalidArgument, match="seqlens_k"):
        sess.run(None, dict(feeds, seqlens_k=bad[5]))
