"""LSTM and GRU (forward and bidirectional), jitort vs onnxruntime, interleaved rounds in one process, at 1
and 2 intra-op threads. Prints a table of medians and ratios (jitort time / onnxruntime time; below 1:
jitort is faster), the CPU and the load average (the machines are shared).

    python benchmarks/bench_rnn.py [--rounds 7] [--threads 1,2] [--filter gru] [--seconds 0.1] [--quick]

Models are built with onnx.helper the way torch.onnx exports ``nn.LSTM`` / ``nn.GRU``: constant W, R and B,
layout 0 (X [seq, batch, input]), no sequence_lens, zero initial state, GRU with linear_before_reset=1,
all outputs (Y, Y_h[, Y_c]) requested. Shapes: seq 32-128, batch 1 and 16, input 64-256, hidden 128-512.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from jitort.bench.machine import cpu_label  # noqa: E402
from bench_overhead import sessions  # noqa: E402
from bench_gemm import burst_median  # noqa: E402
from bench_trees import load  # noqa: E402

# (name, op, direction, seq, batch, input, hidden)
CASES = [
    ("lstm s32 b1 i64 h128", "LSTM", "forward", 32, 1, 64, 128),
    ("lstm s128 b1 i256 h256", "LSTM", "forward", 128, 1, 256, 256),
    ("lstm s64 b16 i128 h256", "LSTM", "forward", 64, 16, 128, 256),
    ("lstm s128 b16 i256 h512", "LSTM", "forward", 128, 16, 256, 512),
    ("bilstm s64 b16 i128 h256", "LSTM", "bidirectional", 64, 16, 128, 256),
    ("gru s64 b16 i256 h256", "GRU", "forward", 64, 16, 256, 256),
    ("bigru s64 b1 i128 h128", "GRU", "bidirectional", 64, 1, 128, 128),
    ("bigru s128 b16 i256 h256", "GRU", "bidirectional", 128, 16, 256, 256),
    ("bigru s32 b16 i64 h512", "GRU", "bidirectional", 32, 16, 64, 512),
]


def build(op: str, direction: str, S: int, B: int, I: int, H: int, seed: int = 0) -> onnx.ModelProto:
    """One LSTM/GRU node as torch.onnx writes it (weights uniform in +-1/sqrt(H), as torch initialises)."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    G = 4 if op == "LSTM" else 3
    k = 1 / math.sqrt(H)
    W = rng.uniform(-k, k, (D, G * H, I)).astype(np.float32)
    R = rng.uniform(-k, k, (D, G * H, H)).astype(np.float32)
    Bb = rng.uniform(-k, k, (D, 2 * G * H)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (Bb, "B"))]
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    attrs = {"hidden_size": H, "direction": direction}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(op, ["X", "W", "R", "B"], outs, **attrs)
    shapes = {"Y": [S, D, B, H], "Y_h": [D, B, H], "Y_c": [D, B, H]}
    g = helper.make_graph([node], op.lower(), [helper.make_tensor_value_info("X", TensorProto.FLOAT, [S, B, I])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, shapes[o]) for o in outs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--filter", default="")
    ap.add_argument("--seconds", type=float, default=0.1, help="length of one timed burst")
    ap.add_argument("--quick", action="store_true", help="3 rounds of short bursts")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 3, 0.03
    import onnxruntime
    print(f"CPU: {cpu_label()}; onnxruntime {onnxruntime.__version__}; {load()} at start")
    print(f"{'case':26s} {'thr':>3s} {'jitort ms':>10s} {'ort ms':>9s} {'ratio':>6s}  maxdiff")
    ratios: dict[int, list[float]] = {}
    for name, op, direction, S, B, I, H in CASES:
        if args.filter not in name:
            continue
        model = build(op, direction, S, B, I, H)
        feeds = {"X": np.random.default_rng(1).standard_normal((S, B, I)).astype(np.float32)}
        for t in (int(s) for s in args.threads.split(",")):
            js, rs = sessions(model, t)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(js.run(None, feeds), rs.run(None, feeds)))
            tj, tr = [], []
            for _ in range(args.rounds):  # interleaved: noise hits both alike
                tj.append(burst_median(js, feeds, args.seconds))
                tr.append(burst_median(rs, feeds, args.seconds))
            mj, mr = statistics.median(tj), statistics.median(tr)
            ratios.setdefault(t, []).append(mj / mr)
            print(f"{name:26s} {t:3d} {mj * 1e3:10.3f} {mr * 1e3:9.3f} {mj / mr:6.2f}  {diff:.1e}", flush=True)
    for t, rs in ratios.items():
        print(f"threads {t}: geomean ratio {math.exp(sum(map(math.log, rs)) / len(rs)):.2f}, worst {max(rs):.2f}")
    print(f"{load()} at end")


if __name__ == "__main__":
    main()
