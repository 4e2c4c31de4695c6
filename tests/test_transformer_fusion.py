"""Attention and normalisation fusion (jitort/passes/attention_fusion.py, norm_fusion.py): graphs in the
forms torch's legacy and dynamo exporters write (built by benchmarks/bench_transformer.py's builders),
dynamic batch and sequence. Each fusion fires (one FusedAttention per attention block, one FusedNorm
per norm), matches onnxruntime at two sequence lengths, and the second length compiles nothing;
masks (padding, boolean, causal), odd head dims, GQA, float16; near misses leave their reason in
the graph's notes (what ``jitort explain`` prints)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import jitort
from jitort import cache
from jitort.kernels import attention_gemm
from oracle import assert_close, make_model, run_ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_transformer as bt  # noqa: E402

F32 = np.float32


def _ops(sess: jitort.InferenceSession) -> list[str]:
    return [n.op_type for n in sess.artifact.ir().nodes]


def _check_lengths(model, lengths, batch=2, pad=2, rtol=1e-4, atol=1e-5):  # type: ignore[no-untyped-def]
    sess = jitort.InferenceSession(model.SerializeToString())
    mark = None
    for k, seq in enumerate(lengths):
        feeds = bt.feeds_for(model, batch, seq, seed=seq, pad=min(pad, seq - 1))
        assert_close(sess.run(None, feeds), run_ort(model, feeds), rtol=rtol, atol=atol)
        if k == 0:
            mark = cache.compile_count()
    assert cache.compiled_since(mark) == [], "a second sequence length must not compile"
    return sess


@pytest.mark.parametrize("style,mask,ln", [("legacy", "add", "decomposed"), ("dynamo", "bool", "op")])
def test_encoder_fuses_attention_and_norms(style, mask, ln):
    # head dim 12 = 24 / 2; the second length spans two query blocks and two key blocks (online softmax)
    model = bt.encoder_layer(24, 2, 32, style=style, mask=mask, ln=ln)
    sess = _check_lengths(model, (7, 300))
    ops = _ops(sess)
    assert ops.count("FusedAttention") == 1 and ops.count("FusedNorm") == 2, ops
    assert not {"Softmax", "Transpose", "ReduceMean", "LayerNormalization"} & set(ops), ops
    notes = sess.artifact.ir().notes
    assert any(n.startswith("attention fused") for n in notes) and sum("normalisation fused" in n for n in notes) == 2


@pytest.mark.parametrize("mask", ["causal", "causal_trilu"])
def test_decoder_causal_odd_head_dim(mask):
    model = bt.decoder_block(30, 2, mask=mask)  # head dim 15
    sess = _check_lengths(model, (5, 270), batch=1)
    ops = _ops(sess)
    # the first LayerNorm reads the graph input (no residual: it stays the one-kernel op)
    assert ops.count("FusedAttention") == 1 and ops.count("FusedNorm") == 1, ops
    fused = next(n for n in sess.artifact.ir().nodes if n.op_type == "FusedAttention")
    assert fused.attrs["causal"] == (mask == "causal")


def test_gqa_and_legacy_key_layout():
    model = bt.decoder_block(32, 4, style="legacy", kv_heads=2)
    sess = _check_lengths(model, (6, 9), batch=2)
    assert _ops(sess).count("FusedAttention") == 1


def test_float16():
    model = bt.encoder_layer(24, 2, 32, mask="add", dtype=np.float16)
    sess = _check_lengths(model, (7, 12), rtol=1e-2, atol=1e-2)
    ops = _ops(sess)
    assert ops.count("FusedAttention") == 1 and ops.count("FusedNorm") == 2, ops


def _sdpa(mask_kind: str, H: int = 5, extra_output: bool = False, scale_after_mask: bool = False,
          axis: int = -1, opset: int = 17):  # type: ignore[no-untyped-def]
    """Bare attention on q, k, v [B, N, S, H] (a model input each) with a mask input."""
    b = bt.Builder()
    s = b.op("MatMul", ["q", b.op("Transpose", ["k"], perm=[0, 1, 3, 2])])
    if not scale_after_mask:
        s = b.op("Mul", [s, b.constant_node(np.array(1 / math.sqrt(H), F32))])
    if mask_kind == "add":
        s = b.op("Add", ["m", s])
    else:
        s = b.op("Where", ["m", b.constant_node(np.array(-np.inf, F32)), s])  # True hides (keep_is = 0)
    if scale_after_mask:
        s = b.op("Mul", [s, b.constant_node(np.array(1 / math.sqrt(H), F32))])
    p = b.op("Softmax", [s], axis=axis)
    o = b.op("MatMul", [p, "v"])
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", 2, "S", H]) for n in "qkv"]
    mt = TensorProto.FLOAT if mask_kind == "add" else TensorProto.BOOL
    vi.append(helper.make_tensor_value_info("m", mt, ["B", 1, "S", "S"]))
    return b.model(vi, [o] + ([s] if extra_output else []), opset, "sdpa")


def _sdpa_feeds(mask_kind: str, B: int = 2, S: int = 6, H: int = 5):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    f = {n: rng.standard_normal((B, 2, S, H)).astype(F32) for n in "qkv"}
    hide = np.zeros((B, 1, S, S), bool)
    hide[0, :, :, S - 2:] = True       # padding
    hide[1, :, 2, :] = True            # a row with no visible key: NaN, as Softmax gives
    f["m"] = np.where(hide, -np.inf, 0).astype(F32) if mask_kind == "add" else hide
    return f


@pytest.mark.parametrize("mask_kind", ["add", "bool"])
@pytest.mark.parametrize("blas", [True, False], ids=["blas", "loops"])
def test_masks_and_fully_masked_rows(mask_kind, blas, monkeypatch):
    monkeypatch.setattr(attention_gemm, "use_blas", blas)  # the narrower (loop) path must agree too
    model = _sdpa(mask_kind)
    sess = jitort.InferenceSession(model.SerializeToString())
    assert _ops(sess).count("FusedAttention") == 1
    feeds = _sdpa_feeds(mask_kind)
    got, want = sess.run(None, feeds), run_ort(model, feeds)
    assert np.isnan(want[0][1, :, 2]).all() and np.isnan(got[0][1, :, 2]).all()
    assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case,reason", [
    ("extra_output", "graph output"),
    ("scale_after_mask", "scales the scores after a mask"),
    ("axis", "is not the last"),
])
def test_attention_refusals_are_explained(case, reason):
    model = _sdpa("add", extra_output=case == "extra_output", scale_after_mask=case == "scale_after_mask",
                  axis=2 if case == "axis" else -1)
    sess = jitort.InferenceSession(model.SerializeToString())
    assert "FusedAttention" not in _ops(sess)
    notes = [n for n in sess.artifact.ir().notes if n.startswith("attention not fused")]
    assert notes and reason in notes[0], sess.artifact.ir().notes
    feeds = _sdpa_feeds("add")
    assert_close(sess.run(None, feeds), run_ort(model, feeds), rtol=1e-5, atol=1e-6)


def _norm_model(form: str, residual: bool, dtype=np.float32, D: int = 20):  # type: ignore[no-untyped-def]
    b = bt.Builder(0, dtype)
    x = b.op("Add", ["x", "r"]) if residual else "x"
    y = b.layernorm(x, D, form)
    out = [b.op("Add", [y, x])] if residual else [y]  # the residual sum is read again
    tt = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    ins = [helper.make_tensor_value_info(n, tt, ["batch", "sequence", D]) for n in (["x", "r"] if residual else ["x"])]
    return b.model(ins, out, 17, "norm")


@pytest.mark.parametrize("form", ["op", "decomposed", "rms_op", "rms"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_norm_forms_with_residual(form, dtype):
    model = _norm_model(form, True, dtype)
    tol = 1e-5 if dtype == np.float32 else 4e-3
    sess = _check_lengths(model, (3, 8), rtol=tol, atol=tol)
    ops = _ops(sess)
    assert ops.count("FusedNorm") == 1, ops
    fused = next(n for n in sess.artifact.ir().nodes if n.op_type == "FusedNorm")
    assert len(fused.outputs) == 2  # the residual sum, read by the final Add
    assert not {"ReduceMean", "LayerNormalization", "SimplifiedLayerNormalization", "Sqrt"} & set(ops), ops


@pytest.mark.parametrize("form", ["decomposed", "rms"])
def test_decomposed_norm_without_residual(form):
    sess = _check_lengths(_norm_model(form, False), (4, 9))
    assert _ops(sess) == ["FusedNorm"]


def test_norm_refusal_is_explained():
    # mean subtracted, but the centred value is also a graph output: no LayerNorm fusion, and a note says
    # why (what is left, mean(d^2) and the division, is an RMSNorm of d: that fuses, exactly)
    b = bt.Builder()
    mean = b.op("ReduceMean", ["x"], axes=[-1])
    d = b.op("Sub", ["x", mean])
    var = b.op("ReduceMean", [b.op("Mul", [d, d])], axes=[-1])
    y = b.op("Div", [d, b.op("Sqrt", [b.op("Add", [var, b.constant_node(np.array(1e-5, F32))])])])
    model = b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 16])], [y, d], 17, "n")
    sess = jitort.InferenceSession(model.SerializeToString())
    assert _ops(sess).count("ReduceMean") == 1, _ops(sess)
    notes = [n for n in sess.artifact.ir().notes if n.startswith("normalisation not fused")]
    assert notes and "centred input" in notes[0], sess.artifact.ir().notes
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 16)).astype(F32)}
    assert_close(sess.run(None, feeds), run_ort(model, feeds), rtol=1e-5, atol=1e-6)


def test_fused_node_matches_numpy_reference_long_keys():
    """Many key blocks and query blocks straight through the op (strided Q/K/V views, GQA heads)."""
    from jitort.kernels.attention import FusedAttention, reference
    rng = np.random.default_rng(3)
    B, N, NK, S, T, H = 1, 4, 2, 150, 600, 8
    q = rng.standard_normal((B, S, N, H)).astype(F32)
    k = rng.standard_normal((B, T, NK, H)).astype(F32)
    v = rng.standard_normal((B, T, NK, H)).astype(F32)
    out = FusedAttention(q, k, v, q_perm=(0, 2, 1, 3), k_perm=(0, 2, 1, 3), v_perm=(0, 2, 1, 3), out_bsnh=1,
                         scale=0.4)
    kk = np.repeat(k.transpose(0, 2, 1, 3), N // NK, axis=1)
    vv = np.repeat(v.transpose(0, 2, 1, 3), N // NK, axis=1)
    want = reference(q.transpose(0, 2, 1, 3), kk, vv, 0.4).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("B,Bk,N,NK,S,T,H,HV,causal", [
    (2, 2, 4, 2, 150, 528, 32, 16, 0),   # 3 key blocks, GQA heads
    (1, 1, 2, 2, 300, 320, 16, 48, 1),   # causal: a key block cut short for the first query blocks
    (3, 1, 2, 1, 40, 64, 64, 64, 0),     # K and V shared across the batch (Bk 1)
    (1, 1, 3, 3, 33, 70, 24, 20, 1),     # odd sizes
])
def test_fused_attention_blocks_match_numpy(B, Bk, N, NK, S, T, H, HV, causal):
    """The attention kernel against float64 numpy: key and query blocks, causal cuts, GQA heads, a
    batch-shared K/V, an additive mask, head sizes that differ between K and V."""
    from jitort.kernels.attention import attend
    rng = np.random.default_rng(B * 100 + T)
    q = rng.standard_normal((B, S, N, H)).astype(F32)
    k = rng.standard_normal((Bk, T, NK, H)).astype(F32)
    v = rng.standard_normal((Bk, T, NK, HV)).astype(F32)
    madd = rng.standard_normal((B, 1, 1, T)).astype(F32)
    perm = (0, 2, 1, 3)
    out = attend(q, k, v, madd, None, q_perm=perm, k_perm=perm, v_perm=perm, out_bsnh=1, scale=0.3, causal=causal,
                 causal_offset=T - S)
    kk = np.repeat(np.broadcast_to(k.transpose(perm), (B, NK, T, H)), N // NK, axis=1).astype(np.float64)
    vv = np.repeat(np.broadcast_to(v.transpose(perm), (B, NK, T, HV)), N // NK, axis=1).astype(np.float64)
    sc = np.matmul(q.transpose(perm).astype(np.float64), np.swapaxes(kk, -1, -2)) * 0.3 + madd
    if causal:
        sc = np.where(np.arange(T)[None, :] <= np.arange(S)[:, None] + (T - S), sc, -np.inf)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    want = np.matmul(p / p.sum(-1, keepdims=True), vv).transpose(perm)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def test_make_model_helper_still_runs_unfused_softmax():
    """A lone Softmax (no attention around it) is left alone and leaves no note."""
    model = make_model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], {"x": (F32, [2, 3, 4, 5])}, ["y"])
    sess = jitort.InferenceSession(model.SerializeToString())
    assert _ops(sess) == ["Softmax"] and not [n for n in sess.artifact.ir().notes if "attention" in n]


@pytest.mark.parametrize("style", ["legacy", "dynamo"])
def test_onnxruntime_optimised_encoder_fuses_attention(style, tmp_path):
    """The encoder as onnxruntime's optimiser saves it (ORT_ENABLE_EXTENDED: the score MatMul and its
    scale become com.microsoft FusedMatMul(q, k, alpha, transB)): still one FusedAttention."""
    import onnx
    import onnxruntime as ort
    src, dst = tmp_path / "f.onnx", tmp_path / "opt.onnx"
    onnx.save(bt.encoder_layer(24, 2, 32, style=style, mask="add" if style == "legacy" else "bool"), src)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    model = onnx.load(dst)
    assert "FusedMatMul" in {n.op_type for n in model.graph.node}
    sess = _check_lengths(model, (7, 40))
    assert _ops(sess).count("FusedAttention") == 1, _ops(sess)


@pytest.mark.parametrize("trans_b", [1, 0])
def test_fused_matmul_scores(trans_b):
    """FusedMatMul(q, k, alpha, transB=1) and FusedMatMul(q, Transpose(k), alpha) as the score product."""
    H = 5
    b = bt.Builder()
    kk = "k" if trans_b else b.op("Transpose", ["k"], perm=[0, 1, 3, 2])
    s = b.op("FusedMatMul", ["q", kk], domain="com.microsoft", alpha=1 / math.sqrt(H), transB=trans_b)
    o = b.op("MatMul", [b.op("Softmax", [b.op("Add", ["m", s])], axis=-1), "v"])
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", 2, "S", H]) for n in "qkv"]
    vi.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, ["B", 1, "S", "S"]))
    model = b.model(vi, [o], 17, "sdpa")
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    sess = jitort.InferenceSession(model.SerializeToString())
    assert _ops(sess).count("FusedAttention") == 1 and "FusedMatMul" not in _ops(sess)
    feeds = _sdpa_feeds("add")
    assert_close(sess.run(None, feeds), run_ort(model, feeds), rtol=1e-5, atol=1e-6)
