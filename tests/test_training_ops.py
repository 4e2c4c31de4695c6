"""ai.onnx.preview.training optimiser ops (kernels/training.py): Adagrad, Adam, Momentum.

onnxruntime's inference build has none of them: the oracles are the spec's formulas written here in
float64 and, for float32, onnx.reference (whose multi-tensor Adam casts to float32, so float64 is
checked against the formulas only).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import jitort
from jitort.errors import InvalidArgument
from oracle import assert_close, make_model, rand, run_jitort

DOMAIN = "ai.onnx.preview.training"
SHAPES = [(), (5,), (3, 4), (2, 3, 4)]


def model(op: str, feeds: dict[str, np.ndarray], n_out: int, **attrs: Any) -> Any:
    node = helper.make_node(op, list(feeds), [f"o{k}" for k in range(n_out)], domain=DOMAIN, **attrs)
    return make_model([node], {k: (v.dtype, v.shape) for k, v in feeds.items()}, [f"o{k}" for k in range(n_out)],
                      extra_opsets={DOMAIN: 1})


def tensors(n: int, roles: str, dt: Any, seed: int) -> dict[str, np.ndarray]:
    feeds = {}
    for j, role in enumerate(roles):
        for t in range(n):
            shape = SHAPES[t % len(SHAPES)]
            lo = 0.0 if role == "H" else -2.0  # squared-gradient accumulators are non-negative
            feeds[f"{role}{t}"] = np.asarray(rand(shape, dt, seed + 10 * j + t, lo, 2.0))
    return feeds


def scalars(r: float, t: int, rdt: Any = np.float32) -> dict[str, np.ndarray]:
    return {"R": np.array(r, rdt), "T": np.array(t, np.int64)}


def tol(dt: Any) -> dict[str, float]:
    return dict(rtol=2e-5, atol=1e-6) if dt == np.float32 else dict(rtol=1e-12, atol=1e-12)


def compare_reference(m: Any, feeds: dict[str, np.ndarray], got: list[np.ndarray]) -> None:
    ref = ReferenceEvaluator(m).run(None, feeds)
    assert_close(got, [np.asarray(r).astype(g.dtype) for r, g in zip(ref, got)], rtol=2e-5, atol=1e-6)


# --- Adagrad -------------------------------------------------------------------------------------------

def adagrad_ref(r: float, t: int, x: np.ndarray, g: np.ndarray, h: np.ndarray, decay: float, eps: float,
                norm: float) -> tuple[np.ndarray, np.ndarray]:
    rr = r / (1 + t * decay)
    gr = norm * x.astype(np.float64) + g
    hn = h + gr * gr
    return (x - rr * gr / (np.sqrt(hn) + eps)).astype(x.dtype), hn.astype(h.dtype)


@pytest.mark.parametrize("attrs", [{}, dict(decay_factor=0.1, epsilon=1e-3, norm_coefficient=0.01)],
                         ids=["default", "set"])
@pytest.mark.parametrize("step", [0, 7])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_adagrad(dt, n, step, attrs):
    feeds = {**scalars(0.1, step), **tensors(n, "XGH", dt, 1)}
    m = model("Adagrad", feeds, 2 * n, **attrs)
    got = run_jitort(m, feeds)
    a = dict(decay_factor=0.0, epsilon=1e-6, norm_coefficient=0.0) | attrs
    a = {k: float(np.float32(v)) for k, v in a.items()}  # float attributes are float32
    outs = [adagrad_ref(float(np.float32(0.1)), step, feeds[f"X{t}"], feeds[f"G{t}"],
                        feeds[f"H{t}"], a["decay_factor"], a["epsilon"], a["norm_coefficient"]) for t in range(n)]
    expected = [o[0] for o in outs] + [o[1] for o in outs]
    assert_close(got, expected, **tol(dt))
    if dt == np.float32:
        compare_reference(m, feeds, got)


# --- Adam ----------------------------------------------------------------------------------------------

def adam_ref(r: float, t: int, x: np.ndarray, g: np.ndarray, v: np.ndarray, h: np.ndarray, alpha: float, beta: float,
             eps: float, norm: float, post: float) -> tuple[np.ndarray, ...]:
    gr = norm * x.astype(np.float64) + g
    vn = alpha * v + (1 - alpha) * gr
    hn = beta * h + (1 - beta) * gr * gr
    rr = r * math.sqrt(1 - beta ** t) / (1 - alpha ** t) if t > 0 else r
    xn = (1 - post) * (x - rr * vn / (np.sqrt(hn) + eps))
    return xn.astype(x.dtype), vn.astype(x.dtype), hn.astype(x.dtype)


@pytest.mark.parametrize("attrs", [{}, dict(alpha=0.8, beta=0.95, epsilon=1e-4, norm_coefficient=0.02,
                                            norm_coefficient_post=0.1)], ids=["default", "set"])
@pytest.mark.parametrize("step", [0, 1, 12])
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_adam(dt, n, step, attrs):
    feeds = {**scalars(0.05, step, np.float64), **tensors(n, "XGVH", dt, 2)}
    m = model("Adam", feeds, 3 * n, **attrs)
    got = run_jitort(m, feeds)
    a = dict(alpha=0.9, beta=0.999, epsilon=1e-6, norm_coefficient=0.0, norm_coefficient_post=0.0) | attrs
    a = {k: float(np.float32(v)) for k, v in a.items()}
    outs = [adam_ref(0.05, step, feeds[f"X{t}"], feeds[f"G{t}"], feeds[f"V{t}"], feeds[f"H{t}"], a["alpha"], a["beta"],
                     a["epsilon"], a["norm_coefficient"], a["norm_coefficient_post"]) for t in range(n)]
    expected = [o[k] for k in range(3) for o in outs]
    # float32: the tensors' update runs in float32 (the reference mixes in float64 scalars)
    assert_close(got, expected, **(tol(dt) if dt == np.float64 else dict(rtol=1e-4, atol=1e-5)))
    if dt == np.float32:
        compare_reference(m, feeds, got)


# --- Momentum ------------------------------------------------------------------------------------------

def momentum_ref(r: float, t: int, x: np.ndarray, g: np.ndarray, v: np.ndarray, alpha: float, beta: float,
                 norm: float, mode: str) -> tuple[np.ndarray, np.ndarray]:
    gr = norm * x.astype(np.float64) + g
    vn = alpha * v + (beta if t > 0 else 1.0) * gr
    xn = x - r * (gr + alpha * vn) if mode == "nesterov" else x - r * vn
    return xn.astype(x.dtype), vn.astype(x.dtype)


@pytest.mark.parametrize("mode", ["standard", "nesterov"])
@pytest.mark.parametrize("step", [0, 3])
@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_momentum(dt, n, step, mode):
    feeds = {**scalars(0.01, step), **tensors(n, "XGV", dt, 3)}
    attrs = dict(alpha=0.9, beta=0.5, norm_coefficient=0.05, mode=mode)
    m = model("Momentum", feeds, 2 * n, **attrs)
    got = run_jitort(m, feeds)
    a = {k: float(np.float32(v)) for k, v in attrs.items() if k != "mode"}
    outs = [momentum_ref(float(np.float32(0.01)), step, feeds[f"X{t}"], feeds[f"G{t}"], feeds[f"V{t}"], a["alpha"],
                         a["beta"], a["norm_coefficient"], mode) for t in range(n)]
    expected = [o[0] for o in outs] + [o[1] for o in outs]
    assert_close(got, expected, **tol(dt))
    if dt == np.float32:
        compare_reference(m, feeds, got)


def test_momentum_nan_gradient():
    feeds = {**scalars(0.1, 1), "X": np.array([1.0, 2.0], np.float32), "G": np.array([np.nan, 1.0], np.float32),
             "V": np.zeros(2, np.float32)}
    got = run_jitort(model("Momentum", feeds, 2, alpha=0.9, beta=0.1, norm_coefficient=0.0, mode="standard"), feeds)
    assert np.isnan(got[0][0]) and np.isnan(got[1][0]) and np.isfinite(got[0][1])


def _raises(m: Any, feeds: dict[str, np.ndarray], exc: type) -> None:
    with pytest.raises(exc):
        jitort.InferenceSession(m.SerializeToString()).run(None, feeds)


def test_errors():
    feeds = {**scalars(0.1, 1), "X": np.ones(3, np.float32), "G": np.ones(4, np.float32), "H": np.ones(3, np.float32)}
    _raises(model("Adagrad", feeds, 2), feeds, InvalidArgument)
    feeds = {**scalars(0.1, 1), "X": np.ones(3, np.float32), "G": np.ones(3, np.float32)}
    _raises(model("Adagrad", feeds, 2), feeds, InvalidArgument)  # 2 tensors: not a multiple of 3
    feeds = {**scalars(0.1, 1), "X": np.ones(3, np.float32), "G": np.ones(3, np.float32), "V": np.ones(3, np.float32)}
    _raises(model("Momentum", feeds, 2, alpha=0.9, beta=0.1, norm_coefficient=0.0, mode="heavy"), feeds,
            InvalidArgument)
    feeds = {"R": np.ones(2, np.float32), "T": np.array(1, np.int64), "X": np.ones(3, np.float32),
             "G": np.ones(3, np.float32), "H": np.ones(3, np.float32)}
    _raises(model("Adagrad", feeds, 2), feeds, InvalidArgument)
