"""QDQ models (onnxruntime.quantization's default output) run on the quantised kernels
(jitort/passes/qdq_fusion.py): a ResNet-style block network built here, quantised at test time by
onnxruntime's own quantiser in both formats, agrees with onnxruntime within one output quantisation
step, and its QDQ form runs the same quantised operators as its QOperator form."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import jitort
from jitort import zoo
from jitort.compiler import pass_list
from jitort.kernels import qconv as QC
from jitort.frontend.importer import import_model
from oracle import run_ort


def _cnn() -> onnx.ModelProto:
    """A small ResNet: 5x5 stride-2 stem + MaxPool, two bottleneck blocks (the first with a projection),
    GlobalAveragePool, on 32x32 images."""
    return zoo.resnet(size=32, stem=16, stages=((8, 32, 2, 1),), stem_kernel=5)


def _quantised(tmp: Path, fmt: str, per_channel: bool, int8_activations: bool = False) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.k = 0

        def get_next(self):  # type: ignore[no-untyped-def]
            self.k += 1
            return None if self.k > 3 else {"x": np.random.default_rng(self.k).random((1, 3, 32, 32), np.float32)}

    src, dst = tmp / "f.onnx", tmp / f"{fmt}.onnx"
    onnx.save(_cnn(), src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
                    activation_type=QuantType.QInt8 if int8_activations else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=per_channel)
    return onnx.load(dst)


def _ops(model: onnx.ModelProto) -> list[str]:
    g = import_model(model)
    for p in pass_list(["CPUExecutionProvider"]):
        g = p(g)
    ops = []
    for n in g.nodes:
        ops += [b.op_type for b in n.attrs["body"].nodes] if n.op_type == "FusedElementwise" else [n.op_type]
    return ops


@pytest.mark.parametrize("per_channel,int8", [(False, False), (True, False), (True, True)],
                         ids=["tensor", "channel", "int8-activations"])
def test_qdq_model_runs_the_quantised_operators(tmp_path, per_channel, int8):
    qdq, qop = _quantised(tmp_path, "qdq", per_channel, int8), _quantised(tmp_path, "qop", per_channel, int8)
    ops = _ops(qdq)
    nhwc = ops.count("QLinearConvNhwc")
    assert ops.count("QLinearConv") + nhwc == 8 and ops.count("QLinearAdd") == 2
    assert "QLinearGlobalAveragePool" in ops and "Conv" not in ops and "FusedConv" not in ops
    assert ops.count("DequantizeLinear") == 1 and ops.count("QuantizeLinear") == 1  # the model's borders
    # on an AVX2 host every conv runs on NHWC tensors, transposed at the borders only
    # (into the stem, out of the pool: MaxPool and GlobalAveragePool run on NHWC too)
    assert nhwc == (8 if QC.int8_lanes() else 0) and ops.count("Transpose") == (2 if QC.int8_lanes() else 0)
    x = {"x": np.random.default_rng(7).random((1, 3, 32, 32), np.float32)}
    out_dq = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == qdq.graph.output[0].name)
    step = float(numpy_helper.to_array(next(i for i in qdq.graph.initializer if i.name == out_dq.input[1])))
    outs = []
    for m in (qdq, qop):
        got, want = jitort.InferenceSession(m.SerializeToString()).run(None, x)[0], run_ort(m, x)[0]
        assert np.abs(got - want).max() <= step * 1.001
        outs.append(got)
    np.testing.assert_array_equal(outs[0], outs[1])  # the QDQ form runs as the QOperator form


def test_what_does_not_fit_stays_float(tmp_path):
    """A conv whose output the QuantizeLinear does not read alone, and a bias whose scale is not
    x_scale * w_scale, stay float (and still agree with onnxruntime)."""
    qdq = _quantised(tmp_path, "qdq", False)
    g = qdq.graph
    convs = [n for n in g.node if n.op_type == "Conv"]
    g.output.append(helper.make_tensor_value_info(convs[0].output[0], TensorProto.FLOAT, None))  # read twice now
    bias_scale = next(i for i in g.initializer if i.name == convs[2].input[2] + "_quantized_scale")
    arr = numpy_helper.to_array(bias_scale) * np.float32(1.5)
    bias_scale.CopyFrom(numpy_helper.from_array(arr, bias_scale.name))
    ops = _ops(qdq)
    assert ops.count("QLinearConv") + ops.count("QLinearConvNhwc") == 6
    assert ops.count("Conv") + ops.count("FusedConv") == 2
    x = {"x": np.random.default_rng(8).random((1, 3, 32, 32), np.float32)}
    got, want = jitort.InferenceSession(qdq.SerializeToString()).run(None, x), run_ort(qdq, x)
    for a, b in zip(got, want):
        assert np.abs(a - b).max() <= 0.05 * max(1.0, np.abs(b).max())


def test_nhwc_layout_changes_no_bit(tmp_path, monkeypatch):
    """The quantised network with its convolutions on NHWC tensors (jitort/passes/quant_nhwc.py) gives
    the bytes of the same network on NCHW tensors."""
    from jitort.passes import quant_nhwc
    qop = _quantised(tmp_path, "qop", True)
    x = {"x": np.random.default_rng(9).random((1, 3, 32, 32), np.float32)}
    a = jitort.InferenceSession(qop.SerializeToString()).run(None, x)[0]
    monkeypatch.setattr(quant_nhwc, "lanes_nhwc_applies", lambda n, g: False)
    assert "QLinearConvNhwc" not in _ops(qop)
    b = jitort.InferenceSession(qop.SerializeToString()).run(None, x)[0]
    np.testing.assert_array_equal(a, b)


def test_nhwc_values_read_in_both_layouts(monkeypatch):
    """A converted conv's output that is a graph output and also feeds another conv: the plan
    transposes it back for the output and keeps the NHWC twin for the conv; bytes as without the pass."""
    from jitort.passes import quant_nhwc
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(v, n) for n, v in {
        "s": np.array(0.05, np.float32), "z": np.array(120, np.uint8), "ws": np.array(0.01, np.float32),
        "wz": np.array(0, np.int8), "w1": rng.integers(-60, 60, (16, 8, 3, 3)).astype(np.int8),
        "w2": rng.integers(-60, 60, (12, 16, 1, 1)).astype(np.int8)}.items()]
    nodes = [helper.make_node("QLinearConv", ["x", "s", "z", "w1", "ws", "wz", "s", "z"], ["y1"], pads=[1] * 4),
             helper.make_node("QLinearConv", ["y1", "s", "z", "w2", "ws", "wz", "s", "z"], ["y2"])]
    g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 8, 9, 7])],
                          [helper.make_tensor_value_info("y1", TensorProto.UINT8, None),
                           helper.make_tensor_value_info("y2", TensorProto.UINT8, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = {"x": rng.integers(0, 256, (2, 8, 9, 7)).astype(np.uint8)}
    ops = _ops(m)
    assert ops.count("QLinearConvNhwc") == (2 if QC.int8_lanes() else 0)
    a = jitort.InferenceSession(m.SerializeToString()).run(None, x)
    monkeypatch.setattr(quant_nhwc, "lanes_nhwc_applies", lambda n, g: False)
    b = jitort.InferenceSession(m.SerializeToString()).run(None, x)
    for u, v, w in zip(a, b, run_ort(m, x)):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(u, w)
