"""The ONNX Attention op (opset 23 on): run by the attention kernel (kernels/attention_op.py) where it
covers the node, else by onnx's function body; both against onnxruntime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import jitort

F32, F16, BOOL = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BOOL


def _model(q_shape, kv_shape, *, dtype=F32, mask=None, past=None, outputs=1, opset=23, qk=False, **attrs):
    """Attention(q, k, v[, m][, pk, pv]); ``mask`` is (elem type, shape), ``past`` the past_key shape,
    ``qk``: the fourth output (qk_matmul_output) too."""
    ins = ["q", "k", "v", "m" if mask else "", "pk" if past else "", "pv" if past else ""]
    while ins[-1] == "":
        ins.pop()
    outs = ["y", "pk_o", "pv_o"][:outputs]
    if qk:
        outs = outs + [""] * (3 - outputs) + ["qk"]
    vis = [helper.make_tensor_value_info("q", dtype, q_shape),
           helper.make_tensor_value_info("k", dtype, kv_shape), helper.make_tensor_value_info("v", dtype, kv_shape)]
    if mask:
        vis.append(helper.make_tensor_value_info("m", mask[0], mask[1]))
    if past:
        vis += [helper.make_tensor_value_info(n, dtype, past) for n in ("pk", "pv")]
    node = helper.make_node("Attention", ins, outs, **attrs)
    g = helper.make_graph([node], "attention", vis,
                          [helper.make_tensor_value_info(o, dtype, None) for o in outs if o])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m.SerializeToString()


def _feed(model: bytes, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feed = {}
    for i in sess.get_inputs():
        if i.type == "tensor(bool)":
            feed[i.name] = rng.random(i.shape) < 0.7
        else:
            dt = np.float16 if i.type == "tensor(float16)" else np.float32
            feed[i.name] = rng.standard_normal(i.shape).astype(dt)
    return feed


def _check(model: bytes, feed: dict[str, np.ndarray], direct: bool = True, tol: float = 2e-6) -> None:
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    sess = jitort.InferenceSession(model)
    got = sess.run(None, feed)
    ops = {(n.domain, n.op_type) for n in sess.artifact.ir().nodes}
    assert (("jitort", "Attention") in ops) == direct, ops
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g.astype(np.float32), w.astype(np.float32), rtol=tol, atol=tol)


@pytest.mark.parametrize("causal", [0, 1])
@pytest.mark.parametrize("mask", [None, BOOL, F32])
def test_4d(causal: int, mask: int | None) -> None:
    m = _model([2, 3, 5, 8], [2, 3, 7, 8], mask=(mask, [5, 7]) if mask else None, is_causal=causal)
    _check(m, _feed(m))


def test_3d_gqa_scale_and_broadcast_mask() -> None:
    # 4 query heads over 2 kv heads, hidden 4 * 6 / 2 * 6, a float mask broadcast over heads and batch
    m = _model([2, 5, 24], [2, 9, 12], mask=(F32, [1, 1, 5, 9]), q_num_heads=4, kv_num_heads=2, scale=0.3)
    _check(m, _feed(m, 1))


@pytest.mark.parametrize("causal", [0, 1])
def test_past_and_present(causal: int) -> None:
    # a decode-like step: 2 new queries after 6 cached keys; causal is bottom-right aligned
    m = _model([1, 4, 2, 8], [1, 2, 2, 8], mask=(BOOL, [2, 8]), past=[1, 2, 6, 8], outputs=3, is_causal=causal)
    _check(m, _feed(m, 2))


def test_3d_past_and_present() -> None:
    m = _model([1, 4, 16], [1, 4, 16], mask=(F32, [4, 7]), past=[1, 2, 3, 8], outputs=3,
               q_num_heads=2, kv_num_heads=2)
    _check(m, _feed(m, 3))


def test_short_mask_is_padded_as_the_spec_says() -> None:
    # The spec pads a mask shorter than the keys with -inf (onnx's reference does); onnxruntime 1.32
    # refuses it, so the oracle here is the spec's reference.
    from onnx.reference import ReferenceEvaluator
    m = _model([1, 2, 4, 8], [1, 2, 7, 8], mask=(F32, [4, 5]))
    feed = _feed(m, 8)
    want = ReferenceEvaluator(m).run(None, feed)[0]
    np.testing.assert_allclose(jitort.InferenceSession(m).run(None, feed)[0], want, rtol=2e-6, atol=2e-6)


def test_fully_masked_row_is_zero() -> None:
    m = _model([1, 2, 3, 4], [1, 2, 3, 4], mask=(BOOL, [3, 3]))
    feed = _feed(m, 4)
    feed["m"] = np.ones((3, 3), bool)
    feed["m"][1] = False
    _check(m, feed)
    assert not jitort.InferenceSession(m).run(None, feed)[0][:, :, 1].any()


def test_float16_and_opset24() -> None:
    m = _model([1, 2, 6, 8], [1, 2, 6, 8], dtype=F16, opset=24, is_causal=1)
    _check(m, _feed(m, 5), tol=2e-3)


def test_long_causal_sequence_skips_blocks() -> None:
    # more than one block of query rows and of keys (128 / 256): the causal block skip and the online softmax
    m = _model([1, 1, 300, 16], [1, 1, 300, 16], is_causal=1)
    _check(m, _feed(m, 6), tol=1e-5)


@pytest.mark.parametrize("attrs", [{"softcap": 2.0}, {"qk": True}])
def test_what_the_kernel_does_not_cover_runs_the_function_body(attrs: dict) -> None:
    m = _model([1, 2, 4, 8], [1, 2, 4, 8], **attrs)
    _check(m, _feed(m, 7), direct=False)
