"""Models that ask for absurd amounts of memory: shapes computed from constants or inputs (4 TB, int64
overflow, NaN, inf) for ConstantOfShape / Expand / Tile / OneHot / Pad / Range / Resize. The session is
created quickly and small, the run fails with onnxruntime's exception class naming the node, and the
session stays usable; a per-session limit (session config entry) applies to that session only."""
from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import jitort as ort
from jitort import errors
from oracle import ORT_MAX_IR, run_ort

F, I = TP.FLOAT, TP.INT64
BIG = 2**20          # [BIG, BIG] float32 = 4 TB
HUGE = 2**40         # three of them overflow int64


def _vi(name: str, t: int, shape: list | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, t, shape)


def _model(node: onnx.NodeProto, ins: dict[str, np.ndarray], const: bool, out_t: int = F) -> tuple[bytes, dict]:
    """One node; its inputs are initializers (const) or graph inputs (fed at run time)."""
    inits = [numpy_helper.from_array(v, k) for k, v in ins.items()] if const else []
    inputs = [] if const else [_vi(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)) for k, v in ins.items()]
    g = helper.make_graph([node], "bomb", inputs, [_vi("y", out_t, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = ORT_MAX_IR
    return m.SerializeToString(), ({} if const else ins)


def _i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def _f32(*v: float) -> np.ndarray:
    return np.array(v, np.float32)


def _scalar(v: float, dt: type) -> np.ndarray:
    return np.array(v, dt)


# name -> (node, inputs, output type)
CASES = {
    "ConstantOfShape-4TB": (helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos"), {"s": _i64(BIG, BIG)}, F),
    "ConstantOfShape-overflow": (helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos"),
                                 {"s": _i64(HUGE, HUGE, HUGE)}, F),
    "Expand-4TB": (helper.make_node("Expand", ["x", "s"], ["y"], name="expand"), {"x": _f32(1), "s": _i64(BIG, BIG)}, F),
    "Expand-overflow": (helper.make_node("Expand", ["x", "s"], ["y"], name="expand"),
                        {"x": _f32(1), "s": _i64(HUGE, HUGE, HUGE)}, F),
    "Tile-4TB": (helper.make_node("Tile", ["x", "r"], ["y"], name="tile"), {"x": _f32(1, 2), "r": _i64(2**40)}, F),
    "OneHot-4TB": (helper.make_node("OneHot", ["i", "d", "v"], ["y"], name="onehot"),
                   {"i": _i64(0, 1), "d": _i64(2**41), "v": _f32(0, 1)}, F),
    "Pad-4TB": (helper.make_node("Pad", ["x", "p"], ["y"], name="pad"), {"x": _f32(1, 2), "p": _i64(0, 2**40)}, F),
    "Range-4TB": (helper.make_node("Range", ["a", "b", "c"], ["y"], name="range"),
                  {"a": _scalar(0, np.int64), "b": _scalar(2**42, np.int64), "c": _scalar(1, np.int64)}, I),
    "Range-inf": (helper.make_node("Range", ["a", "b", "c"], ["y"], name="range"),
                  {"a": _scalar(0, np.float32), "b": _scalar(np.inf, np.float32), "c": _scalar(1, np.float32)}, F),
    "Range-nan": (helper.make_node("Range", ["a", "b", "c"], ["y"], name="range"),
                  {"a": _scalar(0, np.float32), "b": _scalar(np.nan, np.float32), "c": _scalar(1, np.float32)}, F),
    "Resize-4TB": (helper.make_node("Resize", ["x", "", "sc"], ["y"], name="resize", mode="nearest"),
                   {"x": np.ones((1, 1, 2, 2), np.float32), "sc": _f32(1, 1, 2**20, 2**20)}, F),
    "Resize-inf": (helper.make_node("Resize", ["x", "", "sc"], ["y"], name="resize", mode="nearest"),
                   {"x": np.ones((1, 1, 2, 2), np.float32), "sc": _f32(1, 1, np.inf, 1)}, F),
    "RandomNormal-4TB": (helper.make_node("RandomNormal", [], ["y"], name="randn", shape=[BIG, BIG]), {}, F),
    "DFT-4TB": (helper.make_node("DFT", ["x", "n"], ["y"], name="dft"),
                {"x": np.ones((1, 4, 1), np.float32), "n": _i64(2**40)}, F),
    "Resize-nan": (helper.make_node("Resize", ["x", "", "sc"], ["y"], name="resize", mode="nearest"),
                   {"x": np.ones((1, 1, 2, 2), np.float32), "sc": _f32(1, 1, np.nan, 1)}, F),
}


_ORACLE = r"""
import pickle, sys
import onnxruntime
so = onnxruntime.SessionOptions()
so.log_severity_level = 4
out = {}
for key, (data, feeds) in pickle.load(sys.stdin.buffer).items():
    try:
        onnxruntime.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, feeds)
        out[key] = None
    except Exception as e:
        out[key] = type(e).__name__
sys.stdout.buffer.write(pickle.dumps(out))
"""


@pytest.fixture(scope="module")
def ort_error_classes() -> dict[tuple[str, bool], str | None]:
    """onnxruntime's exception class for every case, from one child process: its failed multi-terabyte
    mallocs leave glibc serving this process's later large blocks from fresh mmaps (another arena),
    which other tests in the same worker (page-fault counts) would see."""
    import pickle
    import subprocess
    import sys
    cases = {(case, const): _model(node, ins, const, out_t)
             for case, (node, ins, out_t) in CASES.items() for const in (False, True)}
    proc = subprocess.run([sys.executable, "-c", _ORACLE], input=pickle.dumps(cases), capture_output=True,
                          check=True, timeout=300)
    return pickle.loads(proc.stdout)


@pytest.mark.parametrize("const", [False, True], ids=["input-driven", "constant-driven"])
@pytest.mark.parametrize("case", list(CASES))
def test_shape_bomb_fails_the_run_naming_the_node(case: str, const: bool,
                                                  ort_error_classes: dict[tuple[str, bool], str | None]) -> None:
    node, ins, out_t = CASES[case]
    data, feeds = _model(node, ins, const, out_t)
    t0 = time.perf_counter()
    sess = ort.InferenceSession(data)  # no allocation of the bomb at creation (folding skips it)
    assert time.perf_counter() - t0 < 30
    with pytest.raises(errors.ALL_ERRORS) as got:
        sess.run(None, feeds)
    msg = str(got.value)
    assert f"running {node.op_type} node. Name:'{node.name}'" in msg, msg
    assert type(got.value).__name__ == ort_error_classes[(case, const)], msg  # the oracle fails the same way
    with pytest.raises(type(got.value)):  # the session stays usable: the same failure again
        sess.run(None, feeds)


def test_session_limit_applies_to_that_session_only() -> None:
    node = helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos")
    data, _ = _model(node, {"s": _i64(1, 1)}, const=False)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.jitort.max_tensor_bytes", str(1 << 20))
    small, default = ort.InferenceSession(data, so), ort.InferenceSession(data)
    ok = {"s": _i64(256, 1024)}                       # exactly 1 MiB of float32
    over = {"s": _i64(257, 1024)}
    assert small.run(None, ok)[0].shape == (256, 1024)
    with pytest.raises(errors.Fail, match="over jitort's limit of 1048576 bytes"):
        small.run(None, over)
    assert default.run(None, over)[0].shape == (257, 1024)
    bad = ort.SessionOptions()
    bad.add_session_config_entry("session.jitort.max_tensor_bytes", "lots")
    with pytest.raises(errors.InvalidArgument, match="max_tensor_bytes"):
        ort.InferenceSession(data, bad)


def test_internal_exceptions_become_onnxruntime_classes_naming_the_node() -> None:
    """A kernel failure jitort did not anticipate (here numpy's, from Reshape of an impossible
    shape fed at run time) surfaces as an onnxruntime class with the node named, never raw."""
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="the_reshape")
    data, _ = _model(node, {"x": _f32(1, 2, 3), "s": _i64(2)}, const=False)
    sess = ort.InferenceSession(data)
    with pytest.raises(errors.ALL_ERRORS, match="running Reshape node. Name:'the_reshape'"):
        sess.run(None, {"x": _f32(1, 2, 3), "s": _i64(2)})
    np.testing.assert_array_equal(sess.run(None, {"x": _f32(1, 2, 3), "s": _i64(3)})[0], [1, 2, 3])


def _tensor(dims: list[int], raw: bytes | None = None, floats: list[float] | None = None) -> onnx.TensorProto:
    t = onnx.TensorProto()
    t.name, t.data_type = "w", TP.FLOAT
    t.dims.extend(dims)
    if raw is not None:
        t.raw_data = raw
    if floats is not None:
        t.float_data.extend(floats)
    return t


BAD_TENSORS = {
    "declared-2**62-no-data": (_tensor([2**62]), "over jitort's limit"),
    "dims-overflow-int64": (_tensor([2**40, 2**40, 2**40], raw=b"\0" * 4), "over jitort's limit"),
    "negative-dim": (_tensor([-1, 2], floats=[1, 2]), "negative"),
    "raw-size-mismatch": (_tensor([3, 4], raw=b"\0" * 8), r"raw_data size \(8 bytes\).*\(48 bytes\)"),
    "raw-not-a-multiple": (_tensor([2], raw=b"\0" * 7), r"raw_data size \(7 bytes\)"),
    "field-count-mismatch": (_tensor([3, 4], floats=[1.0] * 5), r"data field count \(5\).*\(12\)"),
}


@pytest.mark.parametrize("where", ["initializer", "Constant"])
@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_bad_tensor_data_is_refused_naming_it(case: str, where: str) -> None:
    t, pattern = BAD_TENSORS[case]
    relu = helper.make_node("Relu", ["w"], ["y"])
    if where == "initializer":
        g = helper.make_graph([relu], "g", [], [_vi("y", F, None)], [t])
    else:
        g = helper.make_graph([helper.make_node("Constant", [], ["w"], value=t), relu], "g", [], [_vi("y", F, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = ORT_MAX_IR
    with pytest.raises(errors.Fail, match=pattern) as got:
        ort.InferenceSession(m.SerializeToString())
    assert "'w'" in str(got.value)
    with pytest.raises(Exception):  # onnxruntime refuses the model too  # noqa: B017
        run_ort(m, {})


def test_constant_fill_folds_within_the_session_limit() -> None:
    """A constant ConstantOfShape past the fold budget (64 MiB) is folded all the same: it would fill
    the same tensor at every run under the session's limit (the light CNNs' fully connected weights);
    one over the limit is left to run time, where it fails naming the node."""
    from jitort.passes.const_fold import MAX_FOLD_BYTES
    node = helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos")
    n = MAX_FOLD_BYTES // 4 + 1024
    data, _ = _model(node, {"s": _i64(n)}, const=True)
    sess = ort.InferenceSession(data)
    assert [x.op_type for x in sess.artifact.ir().nodes] == []
    y = sess.run(None, {})[0]
    assert y.shape == (n,) and not y.any()
    data, _ = _model(node, {"s": _i64(BIG, BIG)}, const=True)
    sess = ort.InferenceSession(data)
    assert [x.op_type for x in sess.artifact.ir().nodes] == ["ConstantOfShape"]
    with pytest.raises(errors.Fail, match="cos"):
        sess.run(None, {})


def test_conv_pads_over_the_limit_fail_naming_the_node() -> None:
    """Conv's output size follows its pads, attributes a model chooses: over the session's limit the
    run fails with onnxruntime's Fail naming the node and the limit, before allocating, and the
    session stays usable (a model within the limit runs)."""
    w = np.ones((4, 1, 3, 3), np.float32)
    x = np.ones((1, 1, 3, 3), np.float32)
    for pads, name in (([1, 1, 1, 1], "ok"), ([300, 300, 300, 300], "huge")):
        g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=pads, name=f"conv_{name}")], "g",
                              [_vi("x", F, [1, 1, 3, 3])], [_vi("y", F, None)], [numpy_helper.from_array(w, "w")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=ORT_MAX_IR)
        so = ort.SessionOptions()
        so.add_session_config_entry("session.jitort.max_tensor_bytes", str(1 << 20))  # the huge one: 5.8 MB
        sess = ort.InferenceSession(m.SerializeToString(), so)
        if name == "ok":
            np.testing.assert_allclose(sess.run(None, {"x": x})[0], run_ort(m, {"x": x})[0], rtol=1e-5)
            continue
        for _ in range(2):  # the same failure again: the session stays usable
            with pytest.raises(errors.Fail, match="running Conv node. Name:'conv_huge'.*over jitort's limit"):
                sess.run(None, {"x": x})


def test_qlinearconv_pads_over_the_limit_fail_naming_the_node() -> None:
    """The same for QLinearConv on the int8 lanes kernel (int8 weights, AVX2 hosts; elsewhere the
    portable path): over the limit, Fail naming the node before allocating."""
    u8, s8, f32 = np.uint8, np.int8, np.float32
    inits = {"s": np.array(0.1, f32), "z": np.array(3, u8), "w": np.ones((32, 4, 3, 3), s8),
             "ws": np.array(0.01, f32), "wz": np.array(0, s8)}
    x = np.ones((1, 4, 3, 3), u8)
    for pads, name in (([1, 1, 1, 1], "ok"), ([200, 200, 200, 200], "huge")):
        node = helper.make_node("QLinearConv", ["x", "s", "z", "w", "ws", "wz", "s", "z"], ["y"], pads=pads,
                                name=f"qconv_{name}")
        g = helper.make_graph([node], "g", [_vi("x", TP.UINT8, [1, 4, 3, 3])], [_vi("y", TP.UINT8, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=ORT_MAX_IR)
        so = ort.SessionOptions()
        so.add_session_config_entry("session.jitort.max_tensor_bytes", str(1 << 20))  # the huge one: 5.2 MB
        sess = ort.InferenceSession(m.SerializeToString(), so)
        if name == "ok":
            np.testing.assert_array_equal(sess.run(None, {"x": x})[0], run_ort(m, {"x": x})[0])
            continue
        for _ in range(2):
            with pytest.raises(errors.Fail, match="QLinearConv.*qconv_huge.*over jitort's limit"):
                sess.run(None, {"x": x})
