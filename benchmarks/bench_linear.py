"""Linear and SVM models: jitort vs onnxruntime, interleaved, at 1 and 2 threads and batch 1, 64 and 10,000.

    python benchmarks/bench_linear.py [--quick]

scikit-learn LogisticRegression (binary and 5-class), LinearSVC, SVC (RBF, 3 classes, probabilities)
and LinearRegression, trained here on seeded synthetic data and converted with skl2onnx (no ZipMap).
Each (model, threads, batch) cell times the two runtimes in alternating rounds and reports medians and
the ratio jitort / onnxruntime (below 1: jitort is faster), then the geometric mean per batch size.
The CPU and the load average are printed with the table: the machines are shared.
"""
from __future__ import annotations

import argparse
import math
import statistics
from typing import Any

import numpy as np

from bench_trees import cpu_name, load, time_call


def _models(quick: bool) -> list[tuple[str, Any, int]]:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.svm import SVC, LinearSVC
    from skl2onnx import to_onnx
    rng = np.random.default_rng(0)
    specs = [("logreg bin f50", 50, lambda: LogisticRegression(max_iter=500), "bin"),
             ("logreg 5cls f100", 100, lambda: LogisticRegression(max_iter=500), "cls5"),
             ("linear_svc 3cls f50", 50, lambda: LinearSVC(), "cls3"),
             ("svc rbf 3cls f20 prob", 20, lambda: SVC(probability=True, random_state=0), "cls3"),
             ("linreg f100", 100, LinearRegression, "reg")]
    if quick:
        specs = specs[:1]
    out = []
    for name, f, make, kind in specs:
        x = rng.normal(size=(1000, f)).astype(np.float32)
        s = x[:, 0] + x[:, 1] * x[:, 2] - x[:, 3] + 0.3 * rng.normal(size=1000)
        y = {"reg": s, "bin": (s > 0).astype(np.int64), "cls3": np.digitize(s, [-1, 1]),
             "cls5": np.digitize(s, [-2, -0.5, 0.5, 2])}[kind]
        m = make().fit(x, y)
        opts = {id(m): {"zipmap": False}} if hasattr(m, "predict_proba") else None  # LinearSVC has no ZipMap
        out.append((name, to_onnx(m, x[:1], options=opts, target_opset={"": 17, "ai.onnx.ml": 3}), f))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one model, short rounds")
    args = ap.parse_args()
    import onnxruntime

    import jitort
    budget = 0.05 if args.quick else 0.2
    rounds = 3 if args.quick else 5
    print(f"CPU: {cpu_name()}; onnxruntime {onnxruntime.__version__}; {load()} at start")
    print(f"{'model':26} {'thr':>3} {'batch':>6} {'ort us':>10} {'jitort us':>10} {'ratio':>6}")
    ratios: dict[int, list[float]] = {}
    for name, onx, f in _models(args.quick):
        data = onx.SerializeToString()
        for threads in (1, 2):
            so = onnxruntime.SessionOptions()
            so.intra_op_num_threads = threads
            so.log_severity_level = 3
            ort = onnxruntime.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            jso = jitort.SessionOptions()
            jso.intra_op_num_threads = threads
            jit = jitort.InferenceSession(data, jso)
            for batch in (1, 64, 10000):
                x = np.random.default_rng(batch).normal(size=(batch, f)).astype(np.float32)
                feed = {onx.graph.input[0].name: x}
                for g, w in zip(jit.run(None, feed), ort.run(None, feed)):  # same answers before timing
                    np.testing.assert_allclose(np.asarray(g, np.float64) if g.dtype.kind == "f" else g,
                                               np.asarray(w, np.float64) if w.dtype.kind == "f" else w,
                                               rtol=1e-4, atol=1e-5)
                a, b = [], []
                for _ in range(rounds):  # interleaved
                    a.append(time_call(lambda: ort.run(None, feed), budget))
                    b.append(time_call(lambda: jit.run(None, feed), budget))
                ta, tb = statistics.median(a) * 1e6, statistics.median(b) * 1e6
                ratios.setdefault(batch, []).append(tb / ta)
                print(f"{name:26} {threads:>3} {batch:>6} {ta:>10.1f} {tb:>10.1f} {tb / ta:>6.2f}", flush=True)
    print(f"{load()} at end")
    for batch, r in sorted(ratios.items()):
        print(f"geomean ratio at batch {batch}: {math.exp(sum(map(math.log, r)) / len(r)):.2f} ({len(r)} cells)")


if __name__ == "__main__":
    main()
