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
from typing import Any

import numpy as np

from bench_trees import run


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
    run(_models(args.quick), args.quick, check=True)


if __name__ == "__main__":
    main()
