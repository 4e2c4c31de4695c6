"""Test helpers: build one-node or small models with onnx.helper and compare jitort with onnxruntime.

onnxruntime is the oracle. onnx 1.23 writes IR version 14 but onnxruntime 1.31 accepts at most 13,
so models are handed to it with ``ir_version`` capped (see the Numba notes, "ONNX facts").
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

import jitort

ORT_MAX_IR = 10  # onnxruntime 1.31 reads IR <= 13; 10 keeps older opsets accepted too


def tensor_type(dtype: Any) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def make_model(nodes: Sequence[onnx.NodeProto], inputs: dict[str, tuple[Any, Sequence[Any] | None]],
               outputs: Sequence[str] | dict[str, tuple[Any, Sequence[Any] | None]],
               initializers: dict[str, np.ndarray] | None = None, opset: int = 17,
               extra_opsets: dict[str, int] | None = None) -> onnx.ModelProto:
    """inputs: name -> (numpy dtype, shape or None); outputs: names (types inferred) or typed."""
    ins = [helper.make_tensor_value_info(n, tensor_type(dt), shape) for n, (dt, shape) in inputs.items()]
    if isinstance(outputs, dict):
        outs = [helper.make_tensor_value_info(n, tensor_type(dt), shape) for n, (dt, shape) in outputs.items()]
    else:
        outs = [helper.make_value_info(n, onnx.TypeProto()) for n in outputs]
    inits = [onnx.numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), "test", ins, outs, inits)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = min(model.ir_version, ORT_MAX_IR)
    return model


def node_model(op: str, feeds: dict[str, np.ndarray], n_outputs: int = 1, opset: int = 17,
               initializers: dict[str, np.ndarray] | None = None, input_names: Sequence[str] | None = None,
               **attrs: Any) -> onnx.ModelProto:
    """A one-node model; ``input_names`` may contain '' for omitted optional inputs."""
    names = list(input_names) if input_names is not None else list(feeds) + list(initializers or {})
    outs = [f"y{k}" for k in range(n_outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    return make_model([node], {k: (v.dtype, v.shape) for k, v in feeds.items()}, outs, initializers, opset)


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.ir_version = min(m.ir_version, ORT_MAX_IR)
    sess = onnxruntime.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_jitort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = jitort.InferenceSession(model.SerializeToString())
    return sess.run(None, feeds)


def assert_close(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], rtol: float = 1e-5,
                 atol: float = 1e-6) -> None:
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype, f"output {k}: dtype {a.dtype}, expected {e.dtype}"
        assert a.shape == e.shape, f"output {k}: shape {a.shape}, expected {e.shape}"
        if a.dtype.kind in "fc":
            np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol,
                                       equal_nan=True, err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(a, e, err_msg=f"output {k}")


def check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-6) -> list[np.ndarray]:
    """Run with both runtimes and compare; returns jitort's outputs."""
    got = run_jitort(model, feeds)
    assert_close(got, run_ort(model, feeds), rtol, atol)
    return got


def rand(shape: Sequence[int], dtype: Any = np.float32, seed: int = 0, low: float = -3, high: float = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, int(low * 10)), min(info.max, int(high * 10)) + 1, size=shape).astype(dt)
    return rng.uniform(low, high, size=shape).astype(dt)
