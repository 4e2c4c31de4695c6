"""MatMulInteger with constant int8 weights on kernels/qconv_lanes.py's integer tiles
(kernels/qmatmul.py): the exact int32 product against numpy's int64 one on full-range operands, on
every tile kind (the host's, AVX2, the portable loops), split between threads or not; and the
int8 transformer layer onnxruntime's ``quantize_dynamic`` writes, against onnxruntime."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import jitort
from jitort import zoo
from jitort.errors import InvalidArgument
from jitort.kernels import qconv as QC
from jitort.kernels import threads as T
from oracle import run_ort

GEOMS = [  # A's leading shape, K, N: K off 4, N off 32, fewer rows than a tile, batches
    ((1, 64), 96, 64),
    ((5,), 13, 40),
    ((2, 3, 9), 64, 33),
    ((1,), 100, 70),
    ((3, 17), 7, 96),
]


def _model(lead: tuple[int, ...], K: int, N: int, adt: Any, zp: int | None,
           seed: int) -> tuple[onnx.ModelProto, np.ndarray]:
    B = np.random.default_rng(seed).integers(-128, 128, (K, N)).astype(np.int8)
    inits = [numpy_helper.from_array(B, "B")]
    ins = ["A", "B"]
    if zp is not None:
        inits += [numpy_helper.from_array(np.array(zp, adt), "az"), numpy_helper.from_array(np.array(0, np.int8), "bz")]
        ins += ["az", "bz"]
    tt = TensorProto.UINT8 if adt == np.uint8 else TensorProto.INT8
    g = helper.make_graph([helper.make_node("MatMulInteger", ins, ["Y"])], "g",
                          [helper.make_tensor_value_info("A", tt, list(lead) + [K])],
                          [helper.make_tensor_value_info("Y", TensorProto.INT32, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), B


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("geom", range(len(GEOMS)))
@pytest.mark.parametrize("adt,zp", [(np.uint8, 131), (np.int8, -3), (np.uint8, None)], ids=["u8", "s8", "u8-nozp"])
def test_matmul_integer_tiles_are_exact(adt: Any, zp: int | None, geom: int, threads: int, monkeypatch: Any) -> None:
    lead, K, N = GEOMS[geom]
    m, B = _model(lead, K, N, adt, zp, seed=geom)
    if threads > 1:
        monkeypatch.setattr(T, "PART_FLOPS", 1.0)
    so = jitort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = jitort.InferenceSession(m.SerializeToString(), so)
    assert ("matmul_integer_lanes" in sess.artifact.plan_source) == QC.int8_lanes()
    info = np.iinfo(adt)
    A = np.random.default_rng(geom + 10).integers(info.min, info.max + 1, lead + (K,)).astype(adt)
    want = (A.astype(np.int64) - (zp or 0)) @ B.astype(np.int64)
    got = sess.run(None, {"A": A})[0]
    assert got.dtype == np.int32 and np.array_equal(got, want)
    if QC.int8_lanes():
        monkeypatch.setenv("JITORT_ISA", "avx2")
        assert np.array_equal(sess.run(None, {"A": A})[0], want)
        monkeypatch.setattr(QC, "tile_kind", lambda: "portable")
        assert np.array_equal(sess.run(None, {"A": A})[0], want)


def test_matmul_integer_tiles_check_shapes() -> None:
    """A (declared [n, k]) whose k differs from B's rows: InvalidArgument naming both shapes."""
    m, _ = _model((4,), 16, 32, np.uint8, 3, seed=0)
    m.graph.input[0].CopyFrom(helper.make_tensor_value_info("A", TensorProto.UINT8, ["n", "k"]))
    sess = jitort.InferenceSession(m.SerializeToString())
    with pytest.raises(InvalidArgument, match=r"MatMulInteger.*\[4, 12\].*\[16, 32\]"):
        sess.run(None, {"A": np.zeros((4, 12), np.uint8)})
    assert sess.run(None, {"A": np.zeros((4, 16), np.uint8)})[0].shape == (4, 32)  # still usable


def test_quantize_dynamic_transformer_layer_matches_onnxruntime(tmp_path: Path) -> None:
    """A BERT-style layer quantised by onnxruntime's ``quantize_dynamic`` (int8 weights): every
    MatMulInteger -> Cast -> Mul (-> Add bias) fused to MatMulIntegerToFloat (jitort/passes/
    qdq_fusion.py) on the tiles, the output within onnxruntime's tolerance (it quantises and sums
    its own way)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(zoo.bert_layer(hidden=64, heads=4, ffn=128), src)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    q = onnx.load(dst)
    sess = jitort.InferenceSession(q.SerializeToString())
    n = sum(n.op_type == "MatMulInteger" for n in q.graph.node)
    src = sess.artifact.plan_source
    assert n == 6 and src.count("'MatMulIntegerToFloat'") == n and "'MatMulInteger'" not in src
    assert src.count("matmul_integer_to_float_lanes(") == (n if QC.int8_lanes() else 0)
    for seq in (16, 9):  # a second sequence length: no recompile needed, same answers
        rng = np.random.default_rng(seq)
        feeds = {"hidden_states": rng.standard_normal((2, seq, 64), np.float32),
                 "attention_mask": np.ones((2, seq), np.int64)}
        np.testing.assert_allclose(sess.run(None, feeds)[0], run_ort(q, feeds)[0], rtol=1e-3, atol=2e-2)


def _contrib(op: str, lead: tuple[int, ...], K: int, N: int, adt: Any, per_column: bool, bias: bool,
             seed: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """MatMulIntegerToFloat (8-bit A input) or DynamicQuantizeMatMul (float A) with constant int8 B and
    zero B zero points, a_scale (MatMulIntegerToFloat) a graph input as DynamicQuantizeLinear makes it."""
    rng = np.random.default_rng(seed)
    B = rng.integers(-128, 128, (K, N)).astype(np.int8)
    sb = (rng.random(N) * 0.01 + 0.001).astype(np.float32) if per_column else np.array(0.004, np.float32)
    inits = {"B": B, "sb": sb, "zb": np.zeros(N if per_column else (), np.int8)}
    if bias:
        inits["bias"] = rng.standard_normal(N).astype(np.float32)
    if op == "DynamicQuantizeMatMul":
        ins = ["A", "B", "sb", "zb", "bias" if bias else ""]
        feeds = {"A": rng.standard_normal(lead + (K,)).astype(np.float32)}
    else:
        info = np.iinfo(adt)
        feeds = {"A": rng.integers(info.min, info.max + 1, lead + (K,)).astype(adt), "sa": np.array(0.02, np.float32)}
        inits["za"] = np.array(5, adt)
        ins = ["A", "B", "sa", "sb", "za", "zb", "bias" if bias else ""]
    while not ins[-1]:
        ins.pop()
    g = helper.make_graph([helper.make_node(op, ins, ["Y"], domain="com.microsoft")], "g",
                          [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
                           for k, v in feeds.items()],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(g, opset_imports=opsets), feeds


@pytest.mark.parametrize("op", ["MatMulIntegerToFloat", "DynamicQuantizeMatMul"])
@pytest.mark.parametrize("geom", [0, 2, 4])
@pytest.mark.parametrize("adt,per_column,bias", [(np.uint8, False, True), (np.int8, True, False),
                                                 (np.uint8, True, True)],
                         ids=["u8-tensor-bias", "s8-column", "u8-column-bias"])
def test_matmul_integer_to_float_on_tiles_matches_onnxruntime(op: str, geom: int, adt: Any, per_column: bool,
                                                              bias: bool, monkeypatch: Any) -> None:
    """float32(product) * a_scale * b_scale + bias on the tiles (every kind) vs onnxruntime's kernel."""
    if op == "DynamicQuantizeMatMul" and adt == np.int8:
        adt = np.uint8  # its A is float: the quantised A is always uint8
    lead, K, N = GEOMS[geom]
    m, feeds = _contrib(op, lead, K, N, adt, per_column, bias, seed=geom)
    sess = jitort.InferenceSession(m.SerializeToString())
    tiles = {"MatMulIntegerToFloat": "matmul_integer_to_float_lanes",
             "DynamicQuantizeMatMul": "dynamic_quantize_matmul_lanes"}
    assert (tiles[op] in sess.artifact.plan_source) == QC.int8_lanes()
    want = run_ort(m, feeds)[0]
    np.testing.assert_allclose(sess.run(None, feeds)[0], want, rtol=1e-5, atol=1e-5)
    if QC.int8_lanes():
        monkeypatch.setenv("JITORT_ISA", "avx2")
        np.testing.assert_allclose(sess.run(None, feeds)[0], want, rtol=1e-5, atol=1e-5)
        monkeypatch.setattr(QC, "tile_kind", lambda: "portable")
        np.testing.assert_allclose(sess.run(None, feeds)[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale_shape,fuses", [((), True), ((24,), True), ((5, 24), False), ((1, 1, 1), False)])
def test_matmul_integer_cast_mul_fuses_only_for_scalar_or_column_scales(scale_shape: tuple[int, ...],
                                                                         fuses: bool) -> None:
    """MatMulInteger -> Cast -> Mul(s) -> Add(bias) becomes MatMulIntegerToFloat only where s is a
    scalar or per column of rank <= 1 (a rank-3 s would broadcast the output up a rank); the answer
    is onnxruntime's either way."""
    rng = np.random.default_rng(3)
    B = rng.integers(-128, 128, (16, 24)).astype(np.int8)
    s = np.asarray(rng.random(scale_shape) * 0.01 + 0.001, np.float32)
    nodes = [helper.make_node("MatMulInteger", ["A", "B", "az"], ["c"]),
             helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s", "cf"], ["m"]),
             helper.make_node("Add", ["m", "bias"], ["Y"])]
    inits = {"B": B, "az": np.array(7, np.uint8), "bias": rng.standard_normal(24).astype(np.float32)}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.UINT8, [5, 16]),
                                       helper.make_tensor_value_info("s", TensorProto.FLOAT, list(scale_shape))],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    sess = jitort.InferenceSession(m.SerializeToString())
    assert ("'MatMulIntegerToFloat'" in sess.artifact.plan_source) == fuses
    feeds = {"A": rng.integers(0, 256, (5, 16)).astype(np.uint8), "s": s}
    np.testing.assert_allclose(sess.run(None, feeds)[0], run_ort(m, feeds)[0], rtol=1e-6, atol=1e-5)


def _qlinear_matmul(lead: tuple[int, ...], K: int, N: int, adt: Any, ydt: Any, per_column: bool,
                    seed: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    inits = {"as": np.array(0.03, np.float32), "az": np.array(7 if adt == np.uint8 else -3, adt),
             "B": rng.integers(-128, 128, (K, N)).astype(np.int8),
             "bs": (rng.random(N) * 0.01 + 0.001).astype(np.float32) if per_column else np.array(0.004, np.float32),
             "bz": np.zeros(N if per_column else (), np.int8),
             "ys": np.array(0.9, np.float32), "yz": np.array(100 if ydt == np.uint8 else -5, ydt)}
    node = helper.make_node("QLinearMatMul", ["A", "as", "az", "B", "bs", "bz", "ys", "yz"], ["Y"])
    tt = helper.np_dtype_to_tensor_dtype(np.dtype(adt))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", tt, list(lead) + [K])],
                          [helper.make_tensor_value_info("Y", helper.np_dtype_to_tensor_dtype(np.dtype(ydt)), None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    info = np.iinfo(adt)
    feeds = {"A": rng.integers(info.min, info.max + 1, lead + (K,)).astype(adt)}
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), feeds


@pytest.mark.parametrize("geom", [0, 1, 2, 4])
@pytest.mark.parametrize("adt,ydt,per_column", [(np.uint8, np.uint8, False), (np.int8, np.int8, True),
                                                (np.uint8, np.uint8, True)], ids=["u8", "s8-column", "u8-column"])
def test_qlinear_matmul_on_tiles_matches_onnxruntime(geom: int, adt: Any, ydt: Any, per_column: bool,
                                                     monkeypatch: Any) -> None:
    """QLinearMatMul with constant int8 b: requantised on the tiles (every kind) to onnxruntime's bytes."""
    lead, K, N = GEOMS[geom]
    m, feeds = _qlinear_matmul(lead, K, N, adt, ydt, per_column, seed=geom)
    sess = jitort.InferenceSession(m.SerializeToString())
    assert ("qlinear_matmul_lanes" in sess.artifact.plan_source) == QC.int8_lanes()
    want = run_ort(m, feeds)[0]
    got = sess.run(None, feeds)[0]
    assert got.dtype == want.dtype and np.array_equal(got, want)
    if QC.int8_lanes():
        monkeypatch.setenv("JITORT_ISA", "avx2")
        assert np.array_equal(sess.run(None, feeds)[0], want)
        monkeypatch.setattr(QC, "tile_kind", lambda: "portable")
        assert np.array_equal(sess.run(None, feeds)[0], want)


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
def test_quantize_static_transformer_layer_matches_onnxruntime(fmt: str, tmp_path: Path) -> None:
    """A BERT-style layer quantised by ``quantize_static`` (uint8 activations, int8 weights): its
    MatMuls with constant weights run as QLinearMatMul (the QDQ form fused, jitort/passes/qdq_fusion.py)
    on the tiles (the QOperator form quantises the two attention products too: QLinearMatMul of
    activations, on the numpy path; the QDQ form's stay float MatMuls between their Q/DQ), within
    one output quantisation step of onnxruntime."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.k = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            self.k += 1
            rng = np.random.default_rng(self.k)
            return None if self.k > 3 else {"hidden_states": rng.standard_normal((1, 16, 64), np.float32),
                                            "attention_mask": np.ones((1, 16), np.int64)}
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(zoo.bert_layer(hidden=64, heads=4, ffn=128), src)
    quantize_static(str(src), str(dst), Reader(), weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    op_types_to_quantize=["MatMul"])
    q = onnx.load(dst)
    sess = jitort.InferenceSession(q.SerializeToString())
    src_plan = sess.artifact.plan_source
    assert src_plan.count("'QLinearMatMul'") == (8 if fmt == "qop" else 6)
    assert src_plan.count("qlinear_matmul_lanes(") == (6 if QC.int8_lanes() else 0)
    rng = np.random.default_rng(0)
    feeds = {"hidden_states": rng.standard_normal((1, 16, 64), np.float32),
             "attention_mask": np.ones((1, 16), np.int64)}
    np.testing.assert_allclose(sess.run(None, feeds)[0], run_ort(q, feeds)[0], rtol=1e-2, atol=5e-2)


def test_matmul_integer_with_per_row_zero_point_stays_unfused() -> None:
    """A per-row a_zero_point (the spec's MatMulInteger allows it, MatMulIntegerToFloat does not): no
    fusion, the spec's answer (onnxruntime refuses per-row zero points: numpy is the oracle)."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("MatMulInteger", ["A", "B", "az"], ["c"]),
             helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["cf", "s"], ["Y"])]
    inits = {"B": rng.integers(-128, 128, (8, 32)).astype(np.int8), "az": np.arange(3, dtype=np.uint8),
             "s": np.array(0.01, np.float32)}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.UINT8, [3, 8])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    sess = jitort.InferenceSession(m.SerializeToString())
    assert "'MatMulIntegerToFloat'" not in sess.artifact.plan_source
    A = rng.integers(0, 256, (3, 8)).astype(np.uint8)
    c = (A.astype(np.int64) - inits["az"][:, None]) @ inits["B"].astype(np.int64)
    want = c.astype(np.float32) * np.float32(0.01)
    np.testing.assert_array_equal(sess.run(None, {"A": A})[0], want)


@pytest.mark.parametrize("op", ["MatMulInteger", "MatMulIntegerToFloat"])
def test_tiles_fall_back_for_a_one_dimensional_a(op: str) -> None:
    """A declared without a shape (so the product lowers to the tiles) and fed 1-D at run time: the
    numpy path, on the weights unpacked from the tiles' packing (B is not kept beside it)."""
    rng = np.random.default_rng(6)
    B = rng.integers(-128, 128, (12, 40)).astype(np.int8)
    inits = {"B": B, "az": np.array(9, np.uint8), "sa": np.array(0.02, np.float32), "sb": np.array(0.03, np.float32)}
    ins = ["A", "B", "az"] if op == "MatMulInteger" else ["A", "B", "sa", "sb", "az"]
    out = TensorProto.INT32 if op == "MatMulInteger" else TensorProto.FLOAT
    node = helper.make_node(op, ins, ["Y"], domain="" if op == "MatMulInteger" else "com.microsoft")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.UINT8, None)],
                          [helper.make_tensor_value_info("Y", out, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items() if k in ins])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    sess = jitort.InferenceSession(m.SerializeToString())
    tiles = "matmul_integer_lanes(" if op == "MatMulInteger" else "matmul_integer_to_float_lanes("
    assert (tiles in sess.artifact.plan_source) == QC.int8_lanes()
    A = rng.integers(0, 256, 12).astype(np.uint8)
    c = (A.astype(np.int64) - 9) @ B.astype(np.int64)
    got = sess.run(None, {"A": A})[0]
    if op == "MatMulInteger":
        assert np.array_equal(got, c)
    else:
        np.testing.assert_allclose(got, c * np.float64(np.float32(0.02) * np.float32(0.03)), rtol=1e-6)
    assert np.array_equal(sess.run(None, {"A": np.stack([A, A])})[0][1], got)  # and 2-D on the tiles
