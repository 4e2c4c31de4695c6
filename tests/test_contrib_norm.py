"""onnxruntime's layer normalisations vs onnxruntime: SkipLayerNormalization,
SkipSimplifiedLayerNormalization, EmbedLayerNormalization (com.microsoft), SimplifiedLayerNormalization
and LayerNormalization before opset 17 (default domain, registered by onnxruntime), over their
optional inputs and outputs, skip shapes, axes and float16; attribute defaults vs onnxruntime's schemas."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from jitort.capi.onnxruntime_pybind11_state import InvalidArgument
from oracle import assert_close, make_model, rand, run_ort

F, I = np.float32, np.int32
MS = {"com.microsoft": 1}


def _compare(node, feeds, inits, n_out, rtol=1e-5, atol=1e-5, opset=17, skip_outputs=()):
    outs = [o for o in node.output]
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, outs, inits, opset=opset,
                   extra_opsets=MS)
    got = ort.InferenceSession(m.SerializeToString()).run(None, feeds)
    want = run_ort(m, feeds)
    keep = [k for k in range(n_out) if k not in skip_outputs]
    assert_close([got[k] for k in keep], [want[k] for k in keep], rtol, atol)


SKIP_GRID = [
    # (skip shape, beta, bias, outputs, epsilon)
    ((2, 3, 16), True, True, 4, None),
    ((2, 3, 16), False, False, 1, 1e-5),
    ((1, 3, 16), True, False, 3, None),
    ((3, 16), False, True, 4, 1e-3),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("skip_shape,beta,bias,n_out,eps", SKIP_GRID)
def test_skip_layer_normalization(skip_shape, beta, bias, n_out, eps, dtype):
    feeds = {"x": rand((2, 3, 16), dtype, seed=1), "s": rand(skip_shape, dtype, seed=2)}
    inits = {"g": rand((16,), dtype, seed=3), "b": rand((16,), dtype, seed=4), "bias": rand((16,), dtype, seed=5)}
    ins = ["x", "s", "g", "b" if beta else "", "bias" if bias else ""]
    attrs = {} if eps is None else {"epsilon": eps}
    node = helper.make_node("SkipLayerNormalization", ins, ["y", "mean", "inv", "sum"][:n_out],
                            domain="com.microsoft", **attrs)
    tol = 2e-3 if dtype == np.float16 else 1e-5
    _compare(node, feeds, {k: v for k, v in inits.items() if k in ins}, n_out, tol, tol)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_skip_simplified_layer_normalization(bias, dtype):
    """Outputs output, inv_std_var, input_skip_bias_sum (mean: the simplified form has none)."""
    feeds = {"x": rand((2, 5, 8), dtype, seed=6), "s": rand((2, 5, 8), dtype, seed=7)}
    inits = {"g": rand((8,), dtype, seed=8), "bias": rand((8,), dtype, seed=9)}
    ins = ["x", "s", "g", "bias" if bias else ""]
    node = helper.make_node("SkipSimplifiedLayerNormalization", ins, ["y", "", "inv", "sum"], domain="com.microsoft",
                            epsilon=1e-6)
    tol = 2e-3 if dtype == np.float16 else 1e-5
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y", "inv", "sum"],
                   {k: v for k, v in inits.items() if k in ins}, extra_opsets=MS)
    assert_close(ort.InferenceSession(m.SerializeToString()).run(None, feeds), run_ort(m, feeds), tol, tol)


@pytest.mark.parametrize("axis,n_out", [(-1, 1), (-1, 2), (1, 2), (0, 1)])
def test_simplified_layer_normalization(axis, n_out):
    x = rand((2, 3, 8), seed=10)
    scale = rand(x.shape[axis:] if axis >= 0 else (8,), seed=11)
    node = helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y", "inv"][:n_out], axis=axis, epsilon=1e-5)
    _compare(node, {"x": x}, {"g": scale}, n_out)


@pytest.mark.parametrize("opset", [13, 16])
@pytest.mark.parametrize("axis,bias,n_out", [(-1, True, 3), (1, False, 1), (-1, False, 2)])
def test_layer_normalization_before_opset_17(opset, axis, bias, n_out):
    x = rand((2, 3, 8), seed=12)
    shape = x.shape[axis:] if axis >= 0 else (8,)
    inits = {"g": rand(shape, seed=13), "b": rand(shape, seed=14)}
    # no bias: two inputs (an empty third name crashed onnxruntime 1.32 at opset < 17)
    node = helper.make_node("LayerNormalization", ["x", "g", "b"][:3 if bias else 2], ["y", "mean", "inv"][:n_out],
                            axis=axis, epsilon=1e-5)
    _compare(node, {"x": x}, inits if bias else {"g": inits["g"]}, n_out, opset=opset)


EMBED_GRID = ["all", "no_segment", "position_ids", "mask_only", "batch_position_ids"]


@pytest.mark.parametrize("case", EMBED_GRID)
def test_embed_layer_normalization(case):
    ids = np.array([[1, 2, 3, 0, 5], [4, 5, 0, 0, 1]], I)
    feeds = {"ids": ids, "seg": np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], I),
             "mask": np.array([[1, 1, 1, 0, 1], [1, 1, 0, 0, 0]], I),
             "pos": np.array([[4, 3, 2, 1, 0]], I), "pos2": np.array([[0, 1, 2, 3, 4], [1, 1, 2, 2, 0]], I)}
    inits = dict(w=rand((6, 8), seed=1), p=rand((7, 8), seed=2), s=rand((2, 8), seed=3), g=rand((8,), seed=4),
                 b=rand((8,), seed=5))
    ins = {"all": ["ids", "seg", "w", "p", "s", "g", "b", "mask"],
           "no_segment": ["ids", "", "w", "p", "", "g", "b"],
           "position_ids": ["ids", "seg", "w", "p", "s", "g", "b", "mask", "pos"],
           "mask_only": ["ids", "", "w", "p", "", "g", "b", "mask"],
           "batch_position_ids": ["ids", "", "w", "p", "", "g", "b", "", "pos2"]}[case]
    node = helper.make_node("EmbedLayerNormalization", ins, ["y", "mask_index", "sum"], domain="com.microsoft",
                            epsilon=1e-5)
    _compare(node, {k: v for k, v in feeds.items() if k in ins}, inits, 3)


def test_embed_layer_normalization_bad_id():
    m = make_model([helper.make_node("EmbedLayerNormalization", ["ids", "", "w", "p", "", "g", "b"], ["y"],
                                     domain="com.microsoft", name="embed")],
                   {"ids": (I, [1, 3])}, ["y"],
                   dict(w=rand((6, 8)), p=rand((7, 8)), g=rand((8,)), b=rand((8,))), extra_opsets=MS)
    sess = ort.InferenceSession(m.SerializeToString())
    with pytest.raises(InvalidArgument, match="embed"):
        sess.run(None, {"ids": np.array([[1, 9, 2]], I)})
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime refuses it too (its class varies by release)
        run_ort(m, {"ids": np.array([[1, 9, 2]], I)})


def _ort_default(op: str, domain: str, attr: str) -> float:
    import onnx
    from onnxruntime.capi import onnxruntime_pybind11_state as C
    for s in C.get_all_operator_schema():
        if s.name == op and s.domain == domain:
            return helper.get_attribute_value(onnx.AttributeProto.FromString(s.attributes[attr]._default_value))
    raise KeyError(op)


def test_defaults_match_onnxruntime_schemas():
    from jitort.kernels import contrib_activation as act
    from jitort.kernels import contrib_norm as norm
    assert np.float32(norm.SKIP_EPSILON) == np.float32(_ort_default("SkipLayerNormalization", "com.microsoft", "epsilon"))
    assert np.float32(norm.SKIP_EPSILON) == np.float32(
        _ort_default("SkipSimplifiedLayerNormalization", "com.microsoft", "epsilon"))
    assert np.float32(norm.EMBED_EPSILON) == np.float32(
        _ort_default("EmbedLayerNormalization", "com.microsoft", "epsilon"))
    assert np.float32(norm.SIMPLIFIED_EPSILON) == np.float32(_ort_default("SimplifiedLayerNormalization", "", "epsilon"))
    assert np.float32(act.QUICKGELU_ALPHA) == np.float32(_ort_default("QuickGelu", "com.microsoft", "alpha"))


# --- the lowered steps (float32, constant weights, a static normalised size) ---------------------

@pytest.mark.parametrize("op,ins,n_out", [
    ("SkipSimplifiedLayerNormalization", ["x", "s", "g", "bias"], 4),
    ("SkipSimplifiedLayerNormalization", ["x", "s", "g"], 1),
    ("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], 4),
    ("SkipLayerNormalization", ["x", "s", "g", "", "bias"], 2),
    ("SimplifiedLayerNormalization", ["x", "g"], 2),
    ("SimplifiedLayerNormalization", ["x", "g"], 1),
])
def test_norm_steps(op, ins, n_out):
    """The plan calls the step; two batch/sequence shapes in one session match onnxruntime and the
    general function's bits; a skip that broadcasts (1, S, D) takes the general path, same answer."""
    from jitort.kernels import contrib_norm
    D = 16
    domain = "" if op == "SimplifiedLayerNormalization" else "com.microsoft"
    inits = {"g": rand((D,), F, seed=3), "b": rand((D,), F, seed=4), "bias": rand((D,), F, seed=5)}
    outs = (["y", "inv"] if domain == "" else ["y", "mean", "inv", "sum"])[:n_out]
    if op == "SkipSimplifiedLayerNormalization" and n_out > 1:
        outs[1] = ""  # no mean in the simplified form (onnxruntime leaves it unset)
    node = helper.make_node(op, ins, outs, domain=domain, epsilon=1e-5)
    outs = [o for o in outs if o]
    types = {"x": (F, ["B", "S", D])}
    if "s" in ins:
        types["s"] = (F, ["SB", "S", D])
    m = make_model([node], types, outs, {k: v for k, v in inits.items() if k in ins}, opset=17, extra_opsets=MS)
    sess = ort.InferenceSession(m.SerializeToString())
    step = "SimplifiedLayerNormalization_step(" if domain == "" else "SkipNorm_step("
    assert f"contrib_norm.{step}" in sess.artifact.plan_source
    general = getattr(contrib_norm, op)
    for B, S, SB in ((1, 1, 1), (3, 5, 3), (2, 4, 1)):
        feeds = {"x": rand((B, S, D), F, seed=B)}
        if "s" in ins:
            feeds["s"] = rand((SB, S, D), F, seed=S)
        got = sess.run(None, feeds)
        assert_close(got, run_ort(m, feeds), 1e-5, 1e-5)
        args = [feeds.get(n, inits.get(n)) if n else None for n in ins]
        want = general(*args, epsilon=1e-5, _nout=n_out)
        want = [w for w, o in zip(want, node.output) if o] if n_out > 1 else [want]
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_norm_steps_take_the_dispatched_kernel_for_strided_inputs():
    """The steps call _norm_rows' compiled entry (no type checks) only for float32 C-contiguous inputs;
    a strided input dispatches as before (another signature), with the same bits."""
    from jitort.kernels import contrib_norm
    D = 16
    g, zero = rand((D,), F, seed=3), np.zeros(1, F)
    wide = rand((2, 3, 2 * D), F, seed=1)
    x, skip = wide[:, :, ::2], rand((2, 3, D), F, seed=2)
    assert not x.flags.c_contiguous
    step = ("SkipSimplifiedLayerNormalization", D, 1e-5, False, False, True, 4)
    got = contrib_norm.SkipNorm_step(x, skip, g, zero, zero, step, {"epsilon": 1e-5})
    want = contrib_norm.SkipNorm_step(np.ascontiguousarray(x), skip, g, zero, zero, step, {"epsilon": 1e-5})
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    zrow = np.zeros((1, D), F)
    got = contrib_norm.SimplifiedLayerNormalization_step(x, g, zrow, zero, (2, D, 1e-5, 2), {"epsilon": 1e-5})
    want = contrib_norm.SimplifiedLayerNormalization_step(np.ascontiguousarray(x), g, zrow, zero, (2, D, 1e-5, 2),
                                                          {"epsilon": 1e-5})
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
