"""The com.microsoft Trilu, Range and Inverse (onnxruntime's CPU provider registers them) vs
onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import jitort as ort
from oracle import assert_close, make_model, rand, run_ort

MS = {"com.microsoft": 1}


def _check(op, feeds, rtol=1e-6, atol=0.0, **attrs):
    node = helper.make_node(op, list(feeds), ["y"], domain="com.microsoft", **attrs)
    m = make_model([node], {k: (v.dtype, list(v.shape)) for k, v in feeds.items()}, ["y"], {}, extra_opsets=MS)
    assert_close(ort.InferenceSession(m.SerializeToString()).run(None, feeds), run_ort(m, feeds), rtol, atol)


@pytest.mark.parametrize("upper,k,dt", [(1, None, np.float32), (0, 1, np.int64), (1, -2, np.float32),
                                        (0, None, np.float64)])
def test_trilu(upper, k, dt):
    feeds = {"x": rand((2, 4, 5), dt, seed=1)}
    if k is not None:
        feeds["k"] = np.array(k, np.int64)
    _check("Trilu", feeds, upper=upper)


@pytest.mark.parametrize("start,limit,delta,dt", [(0, 7, None, np.int64), (10, 1, -3, np.int32),
                                                  (0.5, 3.2, 0.7, np.float32), (1, 4, None, np.float64)])
def test_range(start, limit, delta, dt):
    feeds = {"s": np.array(start, dt), "l": np.array(limit, dt)}
    if delta is not None:
        feeds["d"] = np.array(delta, dt)
    _check("Range", feeds)


@pytest.mark.parametrize("shape,dt", [((3, 3), np.float32), ((2, 4, 4), np.float64), ((5, 5), np.float16)])
def test_inverse(shape, dt):
    x = rand(shape, np.float32, seed=2) + 4 * np.eye(shape[-1], dtype=np.float32)  # well conditioned
    tol = {np.float32: 1e-5, np.float64: 1e-12, np.float16: 2e-3}[dt]
    _check("Inverse", {"x": x.astype(dt)}, rtol=tol, atol=tol)
