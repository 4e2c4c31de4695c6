"""Helpers of the shape and data-movement op tests (test_shape_ops, test_gather_scatter,
test_index_ops): one-node models, run with the shape/axes/indices inputs as initializers and as feeds,
compared with onnxruntime or a numpy formula of the spec."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pytest
from onnx import helper

import jitort
from oracle import assert_close, make_model, rand, run_ort

I64 = np.iinfo(np.int64)
DTYPES = [np.float32, np.int64, np.bool_, np.float16, np.uint8, object]
DT_IDS = ["f32", "i64", "bool", "f16", "u8", "str"]


def data(shape: Sequence[int], dt: Any = np.float32, seed: int = 0) -> np.ndarray:
    if dt is object:
        rng = np.random.default_rng(seed)
        vals = [f"s{v}" for v in rng.integers(0, 50, size=math.prod(shape))]
        return np.array(vals + [""], dtype=object)[:-1].reshape(shape)
    return np.asarray(rand(shape, dt, seed))


def run_jitort(m: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = jitort.InferenceSession(m.SerializeToString())
    return sess.run(None, feeds)


def i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def model(op: str, ins: Sequence[tuple[str, np.ndarray | None]], const: Sequence[str] = (), n_out: int = 1,
          opset: int = 17, sym: bool = False, **attrs: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """One node; ``ins`` in input order (None: omitted input); names in ``const`` become initializers;
    ``sym`` gives every feed symbolic dims (nothing is folded from static shapes)."""
    names = [n if a is not None else "" for n, a in ins]
    feeds = {n: a for n, a in ins if a is not None and n not in const}
    inits = {n: a for n, a in ins if a is not None and n in const}
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    decl = {n: (a.dtype, [f"{n}_{k}" for k in range(a.ndim)] if sym else list(a.shape)) for n, a in feeds.items()}
    return make_model([node], decl, outs, inits, opset), feeds


def case(op: str, ins: Sequence[tuple[str, np.ndarray | None]], const: Sequence[str] = (), n_out: int = 1,
         opset: int = 17, sym: bool = False, expect: Sequence[np.ndarray] | None = None,
         **attrs: Any) -> list[np.ndarray]:
    m, feeds = model(op, ins, const, n_out, opset, sym, **attrs)
    got = run_jitort(m, feeds)
    assert_close(got, run_ort(m, feeds) if expect is None else [np.asarray(e) for e in expect], 0, 0)
    for g in got:
        assert g.flags.c_contiguous, "outputs must be C-contiguous"
    return got


def both(op: str, ins: Sequence[tuple[str, np.ndarray | None]], params: Sequence[str], **kw: Any) -> None:
    """The case with the ``params`` inputs as initializers, then as feeds."""
    case(op, ins, const=params, **kw)
    case(op, ins, const=(), **kw)


def raises(exc: type, op: str, ins: Sequence[tuple[str, np.ndarray | None]], match: str = "", **kw: Any) -> None:
    m, feeds = model(op, ins, **kw)
    with pytest.raises(exc, match=match):
        run_jitort(m, feeds)
