"""Normalisation ops (kernels/norm.py) against onnxruntime.

Where onnxruntime has no kernel (BatchNormalization opsets 1 and 6, InstanceNormalization opset 1
and float64, LRN float64, MeanVarianceNormalization outside float32) the spec's numpy formula is
the oracle. Parameters run both as initializers (BatchNormalization folds them at compile time) and
as graph inputs.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import jitort
from jitort.errors import InvalidArgument
from jitort.errors import NotImplemented as OrtNotImplemented
from oracle import assert_close, check, node_model, rand, run_jitort

SHAPES = [(2, 3), (2, 3, 5), (2, 3, 4, 5), (1, 3, 2, 3, 4), (3, 3, 1, 7)]


def with_specials(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1)
    flat[:3] = np.array([np.nan, np.inf, -np.inf], np.float64).astype(x.dtype)
    return x


def tol(dt: Any) -> dict[str, float]:
    return {np.float16: dict(rtol=4e-3, atol=4e-3), np.float32: dict(rtol=1e-5, atol=2e-5),
            np.float64: dict(rtol=1e-10, atol=1e-10)}[dt]


def bcast(p: np.ndarray, rank: int) -> np.ndarray:
    return p.reshape((1, -1) + (1,) * (rank - 2))


# --- BatchNormalization --------------------------------------------------------------------------------

def bn_params(C: int, dt: Any = np.float32, seed: int = 1) -> dict[str, np.ndarray]:
    return {"s": rand((C,), dt, seed), "b": rand((C,), dt, seed + 1), "m": rand((C,), dt, seed + 2),
            "v": rand((C,), dt, seed + 3, 0.05, 3)}


def bn_ref(x: np.ndarray, p: dict[str, np.ndarray], eps: float = 1e-5) -> np.ndarray:
    f = {k: bcast(v.astype(np.float64), x.ndim) for k, v in p.items()}
    y = (x.astype(np.float64) - f["m"]) / np.sqrt(f["v"] + eps) * f["s"] + f["b"]
    return y.astype(x.dtype)


@pytest.mark.parametrize("as_inputs", [False, True], ids=["const", "feeds"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("opset", [7, 9, 14, 15])
def test_batchnorm(opset, dtype, shape, as_inputs):
    x = with_specials(rand(shape, dtype, 0))
    p = bn_params(shape[1], dtype)
    if as_inputs:
        m, feeds = node_model("BatchNormalization", {"x": x, **p}, opset=opset, epsilon=1e-3), {"x": x, **p}
    else:
        m, feeds = node_model("BatchNormalization", {"x": x}, opset=opset, initializers=p, epsilon=1e-3), {"x": x}
    check(m, feeds, **tol(dtype))


@pytest.mark.parametrize("opset,attrs", [(1, {"consumed_inputs": [0, 0, 0, 1, 1], "is_test": 1}),
                                         (6, {"is_test": 1}), (6, {}), (6, {"spatial": 1, "is_test": 1})],
                         ids=str)
def test_batchnorm_old_opsets(opset, attrs):
    """onnxruntime has no kernel before opset 7: the spec formula (inference with only Y requested)."""
    x = rand((2, 3, 4, 5), np.float32, 0)
    p = bn_params(3)
    m = node_model("BatchNormalization", {"x": x}, opset=opset, initializers=p, **attrs)
    assert_close(run_jitort(m, {"x": x}), [bn_ref(x, p)], 1e-5, 1e-5)


def test_batchnorm_spatial0():
    x = rand((2, 3, 4, 5), np.float32, 0)
    p = {k: np.broadcast_to(v.reshape(3, 1, 1), (3, 4, 5)) + rand((3, 4, 5), seed=9, low=0, high=0.1)
         for k, v in bn_params(3).items()}
    check(node_model("BatchNormalization", {"x": x}, opset=7, initializers=p, spatial=0), {"x": x}, rtol=1e-5,
          atol=1e-5)


@pytest.mark.parametrize("pdtype", [np.float32, np.float16])
def test_batchnorm_15_mixed_types(pdtype):
    """Opset 15: scale/B (T1) and mean/var (T2) may differ from X's type."""
    x = rand((2, 4, 3, 3), np.float16, 0)
    p = bn_params(4, pdtype)
    p["m"], p["v"] = p["m"].astype(np.float32), p["v"].astype(np.float32)
    m = node_model("BatchNormalization", {"x": x}, opset=15, initializers=p)
    assert_close(run_jitort(m, {"x": x}), [bn_ref(x, p)], 4e-3, 4e-3)


def _raises(m: Any, feeds: dict[str, np.ndarray], exc: type) -> None:
    with pytest.raises(exc):
        jitort.InferenceSession(m.SerializeToString()).run(None, feeds)


def test_batchnorm_training_unsupported():
    """The training outputs of opsets before 14 (opset 14+ training_mode=1 is tested below)."""
    x = rand((2, 3, 4), np.float32, 0)
    p = bn_params(3)
    _raises(node_model("BatchNormalization", {"x": x}, n_outputs=5, opset=9, initializers=p), {"x": x},
            OrtNotImplemented)


def test_batchnorm_bad_param_shape():
    x = rand((2, 3, 4), np.float32, 0)
    p = bn_params(3)
    p["m"] = rand((4,), seed=3)
    _raises(node_model("BatchNormalization", {"x": x, **p}, opset=15), {"x": x, **p}, InvalidArgument)


# --- InstanceNormalization -----------------------------------------------------------------------------

def in_ref(x: np.ndarray, s: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    xf = x.astype(np.float64)
    ax = tuple(range(2, x.ndim))
    y = (xf - xf.mean(ax, keepdims=True)) / np.sqrt(xf.var(ax, keepdims=True) + eps)
    return (y * bcast(s.astype(np.float64), x.ndim) + bcast(b.astype(np.float64), x.ndim)).astype(x.dtype)


@pytest.mark.parametrize("eps", [1e-5, 1e-2])
@pytest.mark.parametrize("shape", SHAPES[1:], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_instance_norm(dtype, shape, eps):
    x, s, b = rand(shape, dtype, 0), rand((shape[1],), dtype, 1), rand((shape[1],), dtype, 2)
    x.reshape(shape[0], shape[1], -1)[0, 1] = 0.75  # a constant channel: zero variance
    check(node_model("InstanceNormalization", {"x": x}, opset=6, initializers={"s": s, "b": b}, epsilon=eps),
          {"x": x}, **tol(dtype))


@pytest.mark.parametrize("opset,dtype", [(1, np.float32), (6, np.float64), (22, np.float64)])
def test_instance_norm_vs_numpy(opset, dtype):
    x, s, b = rand((2, 3, 4, 5), dtype, 0), rand((3,), dtype, 1), rand((3,), dtype, 2)
    m = node_model("InstanceNormalization", {"x": x, "s": s, "b": b}, opset=opset, epsilon=1e-4)
    assert_close(run_jitort(m, {"x": x, "s": s, "b": b}), [in_ref(x, s, b, 1e-4)], **tol(dtype))


def test_instance_norm_nan():
    x, s, b = with_specials(rand((2, 3, 6), np.float32, 0)), rand((3,), seed=1), rand((3,), seed=2)
    check(node_model("InstanceNormalization", {"x": x, "s": s, "b": b}, opset=6), {"x": x, "s": s, "b": b})


# --- GroupNormalization --------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 6, 3, 4), (1, 6, 2, 2, 3)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm(opset, dtype, shape, groups):
    n = groups if opset == 18 else shape[1]  # opset 18: one scale per group; 21: per channel
    x, s, b = rand(shape, dtype, 0), rand((n,), dtype, 1), rand((n,), dtype, 2)
    m = node_model("GroupNormalization", {"x": x}, opset=opset, initializers={"s": s, "b": b}, num_groups=groups,
                   epsilon=1e-3)
    t = tol(dtype) if not (opset == 21 and dtype == np.float64) else dict(rtol=1e-5, atol=1e-5)  # float32 stash
    check(m, {"x": x}, **t)


def test_group_norm_stash_double():
    x, s, b = rand((2, 4, 3, 3), np.float64, 0), rand((4,), np.float64, 1), rand((4,), np.float64, 2)
    m = node_model("GroupNormalization", {"x": x}, opset=21, initializers={"s": s, "b": b}, num_groups=2,
                   stash_type=11)
    xg = x.reshape(2, 2, -1)
    y = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    assert_close(run_jitort(m, {"x": x}), [y * bcast(s, 4) + bcast(b, 4)], 1e-10, 1e-10)


def test_group_norm_bad_groups():
    x = rand((2, 6, 4), np.float32, 0)
    m = node_model("GroupNormalization", {"x": x}, opset=21,
                   initializers={"s": rand((6,), seed=1), "b": rand((6,), seed=2)}, num_groups=4)
    _raises(m, {"x": x}, InvalidArgument)


# --- LRN -----------------------------------------------------------------------------------------------

def lrn_ref(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    xf = x.astype(np.float64)
    sq = np.zeros_like(xf)
    C = x.shape[1]
    for c in range(C):
        lo, hi = max(0, c - (size - 1) // 2), min(C - 1, c + (size - 1) - (size - 1) // 2)
        sq[:, c] = (xf[:, lo:hi + 1] ** 2).sum(1)
    return (xf / (bias + alpha / size * sq) ** beta).astype(x.dtype)


@pytest.mark.parametrize("size,alpha,beta,bias", [(1, 1e-4, 0.75, 1.0), (2, 1e-2, 0.5, 2.0), (3, 1e-4, 0.75, 1.0),
                                                  (4, 0.1, 1.0, 1.5), (5, 2e-4, 0.75, 1.0)], ids=str)
@pytest.mark.parametrize("opset,dtype", [(1, np.float32), (13, np.float32), (13, np.float16)])
def test_lrn(opset, dtype, size, alpha, beta, bias):
    x = rand((2, 7, 3, 4), dtype, 0)
    m = node_model("LRN", {"x": x}, opset=opset, size=size, alpha=alpha, beta=beta, bias=bias)
    if size % 2:
        check(m, {"x": x}, **tol(dtype))
    else:  # onnxruntime accepts only odd sizes; the spec defines even ones (window skewed forward)
        want = lrn_ref(x, size, float(np.float32(alpha)), beta, bias)
        assert_close(run_jitort(m, {"x": x}), [want], **tol(dtype))


@pytest.mark.parametrize("shape", [(2, 5, 6), (1, 4, 2, 3, 2), (2, 6, 3, 3)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lrn_vs_numpy(dtype, shape):
    x = rand(shape, dtype, 0)
    m = node_model("LRN", {"x": x}, opset=13, size=3, alpha=0.05, beta=0.75, bias=1.0)
    assert_close(run_jitort(m, {"x": x}), [lrn_ref(x, 3, float(np.float32(0.05)), 0.75, 1.0)], **tol(dtype))


# --- LpNormalization -----------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lp_norm(dtype, p, axis):
    x = rand((3, 4, 5), dtype, 0)
    x[1, :, 2] = 0  # zero norms along axis 1
    x[:, 2, 3] = 0
    x[2, 3, :] = 0
    with_specials(x)
    check(node_model("LpNormalization", {"x": x}, opset=13, p=p, axis=axis), {"x": x}, **tol(dtype))


@pytest.mark.parametrize("opset", [1, 22])
def test_lp_norm_opsets(opset):
    x = rand((2, 3, 4), np.float32, 1)
    want = x / np.sqrt((x.astype(np.float64) ** 2).sum(-1, keepdims=True))
    assert_close(run_jitort(node_model("LpNormalization", {"x": x}, opset=opset), {"x": x}), [want.astype(np.float32)])


def test_lp_norm_float16():
    x = rand((4, 6), np.float16, 2)
    want = (x.astype(np.float64) / np.abs(x.astype(np.float64)).sum(0, keepdims=True)).astype(np.float16)
    assert_close(run_jitort(node_model("LpNormalization", {"x": x}, opset=13, p=1, axis=0), {"x": x}), [want],
                 4e-3, 4e-3)


# --- MeanVarianceNormalization -------------------------------------------------------------------------

def mvn_ref(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    xf = x.astype(np.float64)
    d = xf - xf.mean(axes, keepdims=True)
    return (d / (np.sqrt((d * d).mean(axes, keepdims=True)) + 1e-9)).astype(x.dtype)


MVN_AXES = [None, [1], [2, 3], [0, 1, 2, 3], [0, 2], [3], [-1, -2]]


@pytest.mark.parametrize("axes", MVN_AXES, ids=str)
@pytest.mark.parametrize("opset", [9, 13])
def test_mvn(opset, axes):
    x = rand((2, 3, 4, 5), np.float32, 0)
    kw = {"axes": axes} if axes is not None else {}
    check(node_model("MeanVarianceNormalization", {"x": x}, opset=opset, **kw), {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
@pytest.mark.parametrize("axes", [None, [1, 2]], ids=str)
def test_mvn_vs_numpy(axes, dtype):
    x = rand((2, 3, 4, 5), dtype, 0)
    kw = {"axes": axes} if axes is not None else {}
    ax = tuple(axes) if axes is not None else (0, 2, 3)
    assert_close(run_jitort(node_model("MeanVarianceNormalization", {"x": x}, opset=13, **kw), {"x": x}),
                 [mvn_ref(x, ax)], **tol(dtype))


def test_mvn_constant_input():
    """The spec's epsilon (added to the standard deviation) makes a constant slice normalise to 0;
    onnxruntime's kernel has no epsilon and returns NaN there."""
    x = rand((2, 3, 4, 5), np.float32, 0)
    x[:, 1] = 2.5
    got = run_jitort(node_model("MeanVarianceNormalization", {"x": x}, opset=13), {"x": x})
    assert_close(got, [mvn_ref(x, (0, 2, 3))], 1e-5, 1e-5)
    assert not np.isnan(got[0]).any()


# --- BatchNormalization, training_mode=1 (opsets 14, 15) ----------------------------------------------

def bn_train_ref(x: np.ndarray, p: dict[str, np.ndarray], eps: float, momentum: float) -> list[np.ndarray]:
    """The spec: batch mean and population variance over every axis but 1; running = old * momentum +
    batch * (1 - momentum)."""
    xf = x.astype(np.float64)
    ax = (0,) + tuple(range(2, x.ndim))
    bm, bv = xf.mean(ax), xf.var(ax)
    momentum = float(np.float32(momentum))  # a float attribute is stored as float32
    f = {k: v.astype(np.float64) for k, v in p.items()}
    y = (xf - bcast(bm, x.ndim)) / np.sqrt(bcast(bv, x.ndim) + eps) * bcast(f["s"], x.ndim) + bcast(f["b"], x.ndim)
    return [y.astype(x.dtype), (f["m"] * momentum + bm * (1 - momentum)).astype(p["m"].dtype),
            (f["v"] * momentum + bv * (1 - momentum)).astype(p["v"].dtype)]


@pytest.mark.parametrize("as_inputs", [False, True], ids=["const", "feeds"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opset", [14, 15])
def test_batchnorm_training(opset, dtype, shape, as_inputs):
    x = rand(shape, dtype, 0)
    p = bn_params(shape[1], dtype)
    kw = dict(opset=opset, n_outputs=3, training_mode=1, epsilon=1e-3, momentum=0.7)
    if as_inputs:
        m, feeds = node_model("BatchNormalization", {"x": x, **p}, **kw), {"x": x, **p}
    else:
        m, feeds = node_model("BatchNormalization", {"x": x}, initializers=p, **kw), {"x": x}
    # onnxruntime forms 1 - momentum in float32 even for double tensors: ~1e-8 off in float64
    got = check(m, feeds, **(tol(dtype) if dtype != np.float64 else dict(rtol=1e-7, atol=1e-7)))
    assert_close(got, bn_train_ref(x, p, 1e-3, 0.7), **tol(dtype))


@pytest.mark.parametrize("momentum", [0.0, 0.9, 1.0])
def test_batchnorm_training_momentum_default(momentum):
    x = rand((3, 4, 5, 2), np.float32, 5)
    p = bn_params(4)
    m = node_model("BatchNormalization", {"x": x}, opset=15, initializers=p, n_outputs=3, training_mode=1,
                   momentum=momentum)
    check(m, {"x": x}, **tol(np.float32))
    # schema default momentum (0.9)
    m = node_model("BatchNormalization", {"x": x}, opset=15, initializers=p, n_outputs=3, training_mode=1)
    assert_close(check(m, {"x": x}, **tol(np.float32)), bn_train_ref(x, p, 1e-5, 0.9), **tol(np.float32))


def test_batchnorm_training_large_mean():
    """A large mean with a small spread: normalising must centre first (no cancellation)."""
    x = (1000.0 + rand((4, 3, 6, 6), np.float32, 2, -0.01, 0.01)).astype(np.float32)
    p = bn_params(3)
    m = node_model("BatchNormalization", {"x": x}, opset=15, initializers=p, n_outputs=3, training_mode=1)
    assert_close(run_jitort(m, {"x": x}), bn_train_ref(x, p, 1e-5, 0.9), rtol=2e-3, atol=2e-3)


def test_batchnorm_training_nan():
    x = rand((2, 3, 4), np.float32, 0)
    x[1, 2, 3] = np.nan
    p = bn_params(3)
    m = node_model("BatchNormalization", {"x": x}, opset=15, initializers=p, n_outputs=3, training_mode=1)
    got = check(m, {"x": x}, **tol(np.float32))
    assert np.isnan(got[0][:, 2]).all() and not np.isnan(got[0][:, :2]).any()


@pytest.mark.parametrize("pdtype,sdtype", [(np.float16, np.float32), (np.float32, np.float16),
                                           (np.float64, np.float64)])
def test_batchnorm_training_mixed_types(pdtype, sdtype):
    """Opset 15: X (T), scale/B (T1) and mean/var (T2) may differ; running stats take T2. float16
    training has no onnxruntime kernel: the spec formula is the oracle."""
    x = rand((2, 4, 3, 3), pdtype, 0)
    p = bn_params(4, sdtype)
    p["m"], p["v"] = p["m"].astype(np.float32), p["v"].astype(np.float32)
    m = node_model("BatchNormalization", {"x": x}, opset=15, initializers=p, n_outputs=3, training_mode=1)
    got = run_jitort(m, {"x": x})
    assert [g.dtype for g in got] == [np.dtype(pdtype), np.dtype(np.float32), np.dtype(np.float32)]
    assert_close(got, bn_train_ref(x, p, 1e-5, 0.9), 4e-3, 4e-3)


def test_batchnorm_training_after_conv_not_folded():
    """Conv -> BatchNormalization(training_mode=1): the conv epilogue pass must not fold batch statistics."""
    from onnx import helper

    from oracle import make_model
    x = rand((2, 3, 6, 6), np.float32, 0)
    w = rand((4, 3, 3, 3), np.float32, 1)
    p = bn_params(4)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y", "rm", "rv"], training_mode=1),
             helper.make_node("Relu", ["y"], ["z"])]
    m = make_model(nodes, {"x": (np.float32, x.shape)}, ["z", "rm", "rv"], {"w": w, **p}, opset=15)
    check(m, {"x": x}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (3, 6), (1, 6, 9)])
def test_batchnorm_joins_the_elementwise_chain_around_it(shape):
    """An inference BatchNormalization no Conv absorbs becomes Mul + Add by per-channel constants
    (passes/bn_affine.py): with the Mul, Add and Relu after it, one fused kernel; as onnxruntime."""
    from onnx import helper

    from oracle import make_model, run_ort
    c = shape[1]
    cs = (c,) + (1,) * (len(shape) - 2)
    p = {"sc": rand((c,), seed=1, low=0.5, high=1.5), "b": rand((c,), seed=2), "mu": rand((c,), seed=3),
         "var": rand((c,), seed=4, low=0.5, high=1.5), "s": rand(cs, seed=5), "t": rand(cs, seed=6)}
    nodes = [helper.make_node("BatchNormalization", ["x", "sc", "b", "mu", "var"], ["n"], epsilon=1e-3),
             helper.make_node("Mul", ["n", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    model = make_model(nodes, {"x": (np.float32, list(shape))}, ["y"], p, 15)
    sess = jitort.InferenceSession(model.SerializeToString())
    assert len(sess.artifact.ir().nodes) == 1
    feeds = {"x": rand(shape, seed=7)}
    assert_close(sess.run(None, feeds), run_ort(model, feeds), rtol=1e-5, atol=1e-5)
