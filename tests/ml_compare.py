"""Shared by tests/test_ml_*.py: run a converted classic-ML model in jitort and onnxruntime and compare.

Labels and other integer/string outputs must be equal; scores within a tight tolerance (onnxruntime's
GEMM, MLAS logistic/softmax and its erfinv approximation round differently in the last bits);
ZipMap's lists of dicts must have the same keys in the same order, with close values.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx

import jitort
from oracle import ORT_MAX_IR

BATCHES = (1, 64, 2000)  # one row, a block, and enough rows that jitort splits them across threads


def ort_session(model: onnx.ModelProto) -> Any:
    import onnxruntime
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.ir_version = min(m.ir_version, ORT_MAX_IR)
    return onnxruntime.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def assert_same(a: Any, e: Any, what: str, rtol: float, atol: float) -> None:
    if isinstance(e, list):
        assert isinstance(a, list) and len(a) == len(e), f"{what}: {type(a).__name__} of {len(a)}, expected {len(e)}"
        for k, (x, y) in enumerate(zip(a, e)):
            assert_same(x, y, f"{what}[{k}]", rtol, atol)
        return
    if isinstance(e, dict):
        assert isinstance(a, dict) and list(a) == list(e), f"{what}: keys {list(a)}, expected {list(e)}"
        for k in e:
            assert type(a[k]) is type(e[k]), f"{what}[{k!r}]: {type(a[k]).__name__}, expected {type(e[k]).__name__}"
        np.testing.assert_allclose(list(a.values()), list(e.values()), rtol=rtol, atol=atol, err_msg=what)
        return
    a, e = np.asarray(a), np.asarray(e)
    assert a.dtype == e.dtype and a.shape == e.shape, f"{what}: {a.dtype}{a.shape}, expected {e.dtype}{e.shape}"
    if e.dtype.kind == "f":
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(a, e, err_msg=what)


def compare(model: onnx.ModelProto, feeds_for: Any, batches: tuple[int, ...] = BATCHES, rtol: float = 1e-5,
            atol: float = 1e-6) -> None:
    """``feeds_for(n)`` gives the feeds of an n-row batch; every output is compared at every batch."""
    ort = ort_session(model)
    sess = jitort.InferenceSession(model.SerializeToString())
    names = [o.name for o in ort.get_outputs()]
    assert [o.name for o in sess.get_outputs()] == names
    assert [o.type for o in sess.get_outputs()] == [o.type for o in ort.get_outputs()]
    for n in batches:
        feeds = feeds_for(n)
        want = ort.run(None, feeds)
        got = sess.run(None, feeds)
        for name, g, w in zip(names, got, want):
            assert_same(g, w, f"{name} at batch {n}", rtol, atol)
