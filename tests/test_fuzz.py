"""Mutation fuzzing of small models, side by side with onnxruntime (seeded, a few hundred cases).

Each case mutates the serialized bytes of a small valid model (flip, overwrite, insert, delete or
duplicate bytes, truncate), then creates a session and runs it in both runtimes. Asserted: jitort
never crashes or hangs, every error it raises is one of onnxruntime's exception classes with a
message, and whenever both runtimes run the mutant their outputs agree. The base models use library
ops only (no fused elementwise kernel to compile), so the whole sweep stays well under a minute once
the library kernels are compiled.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import jitort as ort
from jitort import errors
from oracle import ORT_MAX_IR

CASES_PER_MODEL = 100
SWEEP_SECONDS = 120  # a hang shows as the sweep running past this


def _model(nodes: list, inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "fuzz", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = ORT_MAX_IR
    return m


def _bases() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    vi = helper.make_tensor_value_info
    matmul = _model(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
         helper.make_node("Transpose", ["m"], ["t"], name="tr", perm=[1, 0]),
         helper.make_node("Reshape", ["t", "shape"], ["y"], name="rs")],
        [vi("x", TP.FLOAT, [2, 3])], [vi("y", TP.FLOAT, [8])],
        [numpy_helper.from_array(f(3, 4), "w"), numpy_helper.from_array(np.array([8], np.int64), "shape")])
    gather = _model(
        [helper.make_node("Gather", ["table", "ids"], ["g"], name="gather", axis=0),
         helper.make_node("Concat", ["g", "g"], ["c"], name="concat", axis=1),
         helper.make_node("ReduceSum", ["c", "axes"], ["y"], name="sum", keepdims=0)],
        [vi("ids", TP.INT64, [3])], [vi("y", TP.FLOAT, [3])],
        [numpy_helper.from_array(f(5, 2), "table"), numpy_helper.from_array(np.array([1], np.int64), "axes")])
    slicing = _model(
        [helper.make_node("Slice", ["x", "starts", "ends"], ["s"], name="slice"),
         helper.make_node("Softmax", ["s"], ["sm"], name="softmax", axis=-1),
         helper.make_node("Where", ["cond", "sm", "s"], ["y"], name="where")],
        [vi("x", TP.FLOAT, [2, 6]), vi("cond", TP.BOOL, [2, 3])], [vi("y", TP.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.array([0, 1], np.int64), "starts"),
         numpy_helper.from_array(np.array([2, 4], np.int64), "ends")])
    return {"matmul": (matmul, {"x": f(2, 3)}),
            "gather": (gather, {"ids": np.array([0, 4, 2], np.int64)}),
            "slice": (slicing, {"x": f(2, 6), "cond": rng.random((2, 3)) > 0.5})}


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 6))
        at = int(rng.integers(0, len(b))) if b else 0
        if kind == 0 and b:                       # flip one bit
            b[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1 and b:                     # overwrite with an interesting byte
            b[at] = int(rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif kind == 2:                           # insert random bytes
            b[at:at] = rng.integers(0, 256, int(rng.integers(1, 5))).astype(np.uint8).tobytes()
        elif kind == 3 and b:                     # delete a few bytes
            del b[at:at + int(rng.integers(1, 5))]
        elif kind == 4 and b:                     # duplicate a chunk
            n = int(rng.integers(1, 16))
            b[at:at] = b[at:at + n]
        elif b:                                   # truncate
            del b[max(at, 1):]
    return bytes(b)


def _outcome(run) -> tuple[str, object]:  # noqa: ANN001
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return "ran", run()
    except Exception as e:  # noqa: BLE001 - classified by the caller
        return "error", e


@pytest.mark.parametrize("base", ["matmul", "gather", "slice"])
def test_mutated_models(base: str) -> None:
    import onnxruntime
    model, feeds = _bases()[base]
    data = model.SerializeToString()
    rng = np.random.default_rng(1234)
    so = onnxruntime.SessionOptions()
    so.log_severity_level = 4
    counts = {"both ran": 0, "both refused": 0, "only jitort ran": 0, "only onnxruntime ran": 0}
    t0 = time.perf_counter()
    for case in range(CASES_PER_MODEL):
        mutant = _mutate(data, rng)
        mine = _outcome(lambda: ort.InferenceSession(mutant).run(None, feeds))
        theirs = _outcome(lambda: onnxruntime.InferenceSession(mutant, so, providers=["CPUExecutionProvider"])
                          .run(None, feeds))
        if mine[0] == "error":
            e = mine[1]
            # ValueError is onnxruntime's own class for a feed missing a required input
            assert isinstance(e, (*errors.ALL_ERRORS, ValueError)), \
                f"case {case}: {type(e).__module__}.{type(e).__name__}: {e}"
            assert len(str(e)) > 20, f"case {case}: an error without a culprit: {e!r}"
        if mine[0] == theirs[0] == "ran":
            got, want = mine[1], theirs[1]
            assert len(got) == len(want), f"case {case}"
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape, f"case {case}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"case {case}")
        key = {("ran", "ran"): "both ran", ("error", "error"): "both refused",
               ("ran", "error"): "only jitort ran", ("error", "ran"): "only onnxruntime ran"}[(mine[0], theirs[0])]
        counts[key] += 1
        assert time.perf_counter() - t0 < SWEEP_SECONDS, f"case {case}: the sweep hangs ({counts})"
    assert counts["both ran"] > 0, counts  # the mutations keep some models valid
