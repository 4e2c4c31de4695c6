"""Quantised models: jitort vs onnxruntime, interleaved, at 1 and 2 threads.

    python benchmarks/bench_quant.py [--threads 1,2] [--rounds N] [--ort-spin both|on|off]

Workloads, all built here: a ResNet-style network (``jitort.zoo.resnet``: 7x7 stride-2 stem, MaxPool,
bottleneck blocks with projections at 56x56, 28x28 and 14x14, GlobalAveragePool) in float32 and quantised by
onnxruntime's own ``quantize_static`` (uint8 activations, int8 per-channel weights, calibrated on
seeded random images) in its two formats, QOperator (QLinearConv, QLinearAdd, ...) and QDQ
(QuantizeLinear/DequantizeLinear around float ops, the default); single QLinearConv layers of
ResNet-50's shapes; and a BERT-base encoder layer (``jitort.zoo.bert_layer``, hidden 768, 128
tokens) in float32 and quantised by ``quantize_dynamic`` (int8 weights, DynamicQuantizeLinear +
MatMulInteger), as written and as onnxruntime's optimiser saves it (DynamicQuantizeMatMul,
MatMulIntegerToFloat, FusedMatMul, SkipLayerNormalization...), and by ``quantize_static`` (QDQ).
Each cell checks jitort's output against onnxruntime's (the largest difference,
in units of the output's quantisation step where it is quantised), then times the two in
alternating rounds and reports the medians, the minimums and their ratios jitort / onnxruntime (below
1: jitort is faster), as bench_cnn.py does. The header names the CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cnn import _cell  # noqa: E402

from jitort.bench.harness import ORT_SPIN_CHOICES, ort_session_options, ort_spin_modes, spin_label  # noqa: E402
from jitort.bench.machine import cpu_label  # noqa: E402


def qlinearconv(c: int, m: int, h: int, k: int, s: int, seed: int = 0) -> onnx.ModelProto:
    """One QLinearConv as onnxruntime's quantiser writes it: uint8 x, int8 per-channel w, int32 bias."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (m, c, k, k)).astype(np.int8)
    inits = {"xs": np.array(0.02, np.float32), "xz": np.array(128, np.uint8), "w": w,
             "ws": (rng.random(m) * 0.002 + 0.001).astype(np.float32), "wz": np.zeros(m, np.int8),
             "ys": np.array(0.5, np.float32), "yz": np.array(0, np.uint8),
             "b": rng.integers(-5000, 5000, m).astype(np.int32)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
    g = helper.make_graph([node], "qconv", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, c, h, h])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
                          [numpy_helper.from_array(v, n) for n, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


LAYERS = {  # (C, M, H, kernel, stride): ResNet-50's shapes
    "qconv 3->64 7x7 s2 224": (3, 64, 224, 7, 2),
    "qconv 64->64 3x3 56": (64, 64, 56, 3, 1),
    "qconv 256->64 1x1 56": (256, 64, 56, 1, 1),
    "qconv 64->256 1x1 56": (64, 256, 56, 1, 1),
    "qconv 128->128 3x3 s2 56": (128, 128, 56, 3, 2),
    "qconv 256->256 3x3 14": (256, 256, 14, 3, 1),
    "qconv 512->2048 1x1 7": (512, 2048, 7, 1, 1),
}


def _images(k: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(k).random((1, 3, 224, 224), np.float32)}


def _tokens(k: int) -> dict[str, np.ndarray]:
    return {"hidden_states": np.random.default_rng(k).standard_normal((1, 128, 768), np.float32),
            "attention_mask": np.ones((1, 128), np.int64)}


def quantised(model: onnx.ModelProto, fmt: str, tmp: Path, calibration: Any = _images) -> onnx.ModelProto:
    """``model`` quantised by ``quantize_static`` in ``fmt`` (qop/qdq), calibrated on 4 seeded inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.k = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            self.k += 1
            return None if self.k > 4 else calibration(self.k)

    src, dst = tmp / "float.onnx", tmp / f"{fmt}.onnx"
    onnx.save(model, src)
    quantize_static(str(src), str(dst), Reader(), per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator)
    return onnx.load(dst)


def dynamic(model: onnx.ModelProto, tmp: Path, optimised: bool) -> onnx.ModelProto:
    """``model`` quantised by onnxruntime's ``quantize_dynamic`` (int8 weights), and with
    ``optimised`` as onnxruntime's optimiser saves it (DynamicQuantizeMatMul, MatMulIntegerToFloat,
    its fused attention and norms: what ``optimized_model_filepath`` writes)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    src, dst, opt = tmp / "dyn_float.onnx", tmp / "dyn_int8.onnx", tmp / "dyn_int8_opt.onnx"
    onnx.save(model, src)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    if not optimised:
        return onnx.load(dst)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(opt)
    ort.InferenceSession(str(dst), so, providers=["CPUExecutionProvider"])
    return onnx.load(opt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--budget", type=float, default=6.0, help="seconds of timing per cell at most")
    ap.add_argument("--ort-spin", choices=ORT_SPIN_CHOICES, default="both")
    args = ap.parse_args()

    import logging

    import onnxruntime as ort

    import jitort
    from jitort import zoo
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser's advice on pre-processing
    rng = np.random.default_rng(0)
    image = {"x": rng.random((1, 3, 224, 224), np.float32)}
    work: list[tuple[str, str, bytes, dict[str, np.ndarray]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        f = zoo.resnet()
        work.append(("models", "resnet float32", f.SerializeToString(), image))
        for fmt in ("qop", "qdq"):
            work.append(("models", f"resnet int8 {fmt}", quantised(f, fmt, Path(tmp)).SerializeToString(), image))
        bert = zoo.bert_layer(hidden=768, heads=12, ffn=3072)
        tokens = _tokens(0)
        work.append(("models", "bert-base layer float32", bert.SerializeToString(), tokens))
        for opt in (False, True):
            work.append(("models", "bert-base layer int8 dynamic" + (", ort-optimised" if opt else ""),
                         dynamic(bert, Path(tmp), opt).SerializeToString(), tokens))
        work.append(("models", "bert-base layer int8 static qdq",
                     quantised(bert, "qdq", Path(tmp), _tokens).SerializeToString(), tokens))
    for name, (c, m, h, k, s) in LAYERS.items():
        x = rng.integers(0, 256, (1, c, h, h)).astype(np.uint8)
        work.append(("layers", name, qlinearconv(c, m, h, k, s).SerializeToString(), {"x": x}))

    print(f"CPU: {cpu_label()}; jitort {jitort.__version__}, onnxruntime {ort.__version__}")
    print(f"load average at start: {os.getloadavg()}")
    threads = [int(t) for t in args.threads.split(",")]
    cols = [(t, spin) for t in threads for spin in ort_spin_modes(t, args.ort_spin)]
    rows = []
    for t, spin in cols:
        col = spin_label(t, spin)
        for group, name, data, feeds in work:
            def mk_j(data: bytes = data, t: int = t) -> Any:
                so = jitort.SessionOptions()
                so.intra_op_num_threads = t
                return jitort.InferenceSession(data, so)

            def mk_o(data: bytes = data, t: int = t, spin: bool = spin) -> Any:
                return ort.InferenceSession(data, ort_session_options(t, spin), providers=["CPUExecutionProvider"])
            tj, to, err = _cell(mk_j, mk_o, feeds, args.rounds, args.budget)
            r, rmin = statistics.median(tj) / statistics.median(to), min(tj) / min(to)
            rows.append((group, name, col, rmin, r, min(tj), min(to)))
            print(f"  [{col:9s}] {name:28s} median jitort {statistics.median(tj) * 1e3:8.3f} ms  onnxruntime "
                  f"{statistics.median(to) * 1e3:8.3f} ms  ratio {r:5.2f}x | min ratio {rmin:5.2f}x  "
                  f"(max abs diff {err:.3g})", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print()
    print("ratios jitort / onnxruntime: of the minimums (of the medians); times: minimums, jitort / onnxruntime")
    print()
    labels = [spin_label(t, spin) for t, spin in cols]
    print("| workload | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for g, n in dict.fromkeys((g, n) for g, n, *_ in rows):
        cells = []
        for col in labels:
            r = [row for row in rows if row[0] == g and row[1] == n and row[2] == col]
            cells.append(f"{r[0][3]:.2f}x ({r[0][4]:.2f}x) {r[0][5] * 1e3:.2f} / {r[0][6] * 1e3:.2f} ms" if r else "-")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
