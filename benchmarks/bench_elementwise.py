"""Fused elementwise groups, jitort vs onnxruntime: the 20-op broadcast chain of issue 16 and the
activation groups transformers and CNNs fuse (bias + GELU in erf and tanh forms, the Gelu op,
bias + SiLU, bias + Relu). Interleaved rounds in one process, medians, at 1 and 2 threads; prints
the CPU, the load and a ratio table (jitort time / onnxruntime time; below 1: jitort is faster).

    python benchmarks/bench_elementwise.py [--rounds 15] [--threads 1 2] [--case chain20 ...]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from oracle import make_model  # noqa: E402

from jitort.bench.machine import cpu_label  # noqa: E402
from bench_overhead import sessions  # noqa: E402

F32 = np.float32


def chain20(n: int = 64, c: int = 1024) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """20 ops over x[n, c] with a row [1, c], a column [n, 1], a scalar and a positive row [c]."""
    rng = np.random.default_rng(0)
    ops = [("Add", "row"), ("Mul", "col"), ("Relu", None), ("Sub", "s"), ("Tanh", None), ("Mul", "row"),
           ("Add", "col"), ("Sigmoid", None), ("Div", "row2"), ("Exp", None), ("Neg", None), ("Add", "col"),
           ("Abs", None), ("Sqrt", None), ("Mul", "s"), ("Erf", None), ("Max", "row"), ("Min", "col"),
           ("Where", None), ("Sub", "row2")]
    nodes, cur = [], "x"
    for k, (op, other) in enumerate(ops):
        out = f"v{k}"
        if op == "Where":  # Greater + Where count as the one select step
            nodes.append(helper.make_node("Greater", [cur, "s"], ["cond"]))
            nodes.append(helper.make_node("Where", ["cond", cur, "row"], [out]))
        else:
            nodes.append(helper.make_node(op, [cur] + ([other] if other else []), [out]))
        cur = out
    inits = {"row": rng.standard_normal((1, c)).astype(F32), "col": rng.standard_normal((n, 1)).astype(F32),
             "s": np.array(0.3, F32), "row2": (rng.random(c) + 1).astype(F32)}
    model = make_model(nodes, {"x": (F32, [n, c])}, [cur], inits)
    return model, {"x": rng.standard_normal((n, c)).astype(F32)}


Act = Callable[[str], tuple[list[onnx.NodeProto], dict[str, float]]]


def _bias_act(act: Act, rows: int, hidden: int, opset: int = 17) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """y = act(x + b) for x[rows, hidden], b[hidden]; act returns its nodes and scalar constants."""
    rng = np.random.default_rng(1)
    act_nodes, consts = act("h")
    nodes = [helper.make_node("Add", ["x", "b"], ["h"]), *act_nodes]
    inits = {"b": rng.standard_normal(hidden).astype(F32), **{k: np.array(v, F32) for k, v in consts.items()}}
    model = make_model(nodes, {"x": (F32, [rows, hidden])}, [nodes[-1].output[0]], inits, opset=opset)
    return model, {"x": rng.standard_normal((rows, hidden)).astype(F32)}


def _n(op: str, *io: str) -> onnx.NodeProto:
    return helper.make_node(op, list(io[:-1]), [io[-1]])


def gelu_erf(h: str) -> tuple[list[onnx.NodeProto], dict[str, float]]:
    return ([_n("Div", h, "sqrt2", "g0"), _n("Erf", "g0", "g1"), _n("Add", "g1", "one", "g2"),
             _n("Mul", h, "g2", "g3"), _n("Mul", "g3", "half", "y")],
            {"sqrt2": math.sqrt(2), "one": 1.0, "half": 0.5})


def gelu_tanh(h: str) -> tuple[list[onnx.NodeProto], dict[str, float]]:
    return ([_n("Pow", h, "three", "g0"), _n("Mul", "g0", "c", "g1"), _n("Add", h, "g1", "g2"),
             _n("Mul", "g2", "k", "g3"), _n("Tanh", "g3", "g4"), _n("Add", "g4", "one", "g5"),
             _n("Mul", h, "g5", "g6"), _n("Mul", "g6", "half", "y")],
            {"three": 3.0, "c": 0.044715, "k": math.sqrt(2 / math.pi), "one": 1.0, "half": 0.5})


def gelu_op(h: str) -> tuple[list[onnx.NodeProto], dict[str, float]]:
    return [_n("Gelu", h, "y")], {}


def silu(h: str) -> tuple[list[onnx.NodeProto], dict[str, float]]:
    return [_n("Sigmoid", h, "g0"), _n("Mul", h, "g0", "y")], {}


def relu(h: str) -> tuple[list[onnx.NodeProto], dict[str, float]]:
    return [_n("Relu", h, "y")], {}


CASES: dict[str, Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]] = {
    "chain20 [64,1024]": chain20,
    "bias+GELU(erf) [256,768]": lambda: _bias_act(gelu_erf, 256, 768),
    "bias+GELU(tanh) [256,768]": lambda: _bias_act(gelu_tanh, 256, 768),
    "bias+Gelu op [256,768]": lambda: _bias_act(gelu_op, 256, 768, opset=20),
    "bias+SiLU [256,768]": lambda: _bias_act(silu, 256, 768),
    "bias+Relu [256,768]": lambda: _bias_act(relu, 256, 768),
    "bias+GELU(erf) [8,768]": lambda: _bias_act(gelu_erf, 8, 768),
}


def time_run(sess, feeds: dict[str, np.ndarray], min_s: float = 0.02) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall µs, this thread's CPU µs) per run, over as many runs as fit in ``min_s``. At 1 thread
    both runtimes compute on the calling thread, so CPU time is what a busy machine distorts least."""
    run = sess.run
    n, t = 0, 0.0
    t0, c0 = time.perf_counter(), time.thread_time()
    while t < min_s:
        run(None, feeds)
        n += 1
        t = time.perf_counter() - t0
    return t / n * 1e6, (time.thread_time() - c0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--case", nargs="*", default=list(CASES))
    args = ap.parse_args()
    print(f"CPU: {cpu_label()}; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'case':28s} {'thr':>3s} {'jitort us':>10s} {'ort us':>10s} {'ratio':>6s} {'cpu-time ratio':>14s}")
    ratios: dict[int, list[float]] = {t: [] for t in args.threads}
    for name in args.case:
        model, feeds = CASES[name]()
        for threads in args.threads:
            js, rs = sessions(model, threads)
            got, want = js.run(None, feeds)[0], rs.run(None, feeds)[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
            jt, rt = [], []
            for _ in range(args.rounds):  # interleaved: drift hits both alike
                jt.append(time_run(js, feeds))
                rt.append(time_run(rs, feeds))
            j, r = statistics.median(w for w, _ in jt), statistics.median(w for w, _ in rt)
            ratios[threads].append(j / r)
            cpu = (f"{statistics.median(c for _, c in jt) / statistics.median(c for _, c in rt):14.2f}"
                   if threads == 1 else f"{'':14s}")
            print(f"{name:28s} {threads:3d} {j:10.1f} {r:10.1f} {j / r:6.2f} {cpu}", flush=True)
    for t, rs_ in ratios.items():
        print(f"geomean at {t} thread(s): {math.exp(statistics.fmean(math.log(x) for x in rs_)):.2f}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
