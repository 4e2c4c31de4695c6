"""Tree ensembles: jitort vs onnxruntime, interleaved, at 1 and 2 threads and batch 1, 64 and 10,000.

    python benchmarks/bench_trees.py [--quick] [--batches 1,16,64,10000] [--models rf_reg,lgbm]

Models are trained here on seeded synthetic data (scikit-learn random forest and gradient boosting,
LightGBM) and converted with skl2onnx / onnxmltools. Each (model, threads, batch) cell times the two
runtimes in alternating rounds (so machine noise hits both alike) and reports medians and the
ratio jitort / onnxruntime (below 1: jitort is faster), then the geometric mean per batch size.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any, Callable

import numpy as np

from jitort.bench.machine import cpu_label


def load() -> str:
    """The 1/5/15-minute load averages (the machine is shared: read ratios next to them)."""
    try:
        return "load average " + ", ".join(f"{v:.2f}" for v in __import__("os").getloadavg())
    except OSError:
        return "load average unknown"


def _models(quick: bool) -> list[tuple[str, Any, int]]:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
    from skl2onnx import to_onnx
    rng = np.random.default_rng(0)
    out = []
    specs = [("rf_reg 100x8 f20", 20,
              lambda: RandomForestRegressor(n_estimators=100, max_depth=8, random_state=0), "reg"),
             ("rf_cls 50x12 f50", 50, lambda: RandomForestClassifier(n_estimators=50, max_depth=12, random_state=0),
              "cls"),
             ("gb_cls 200x4 f20 3cls", 20,
              lambda: GradientBoostingClassifier(n_estimators=200 // 3, max_depth=4, random_state=0), "cls3")]
    if quick:
        specs = specs[:1]
    for name, f, make, kind in specs:
        x = rng.normal(size=(2000, f)).astype(np.float32)
        s = x[:, 0] + x[:, 1] * x[:, 2] - x[:, 3]
        y = s if kind == "reg" else (np.digitize(s, [-1, 1]) if kind == "cls3" else (s > 0).astype(np.int64))
        m = make().fit(x, y)
        opts = None if kind == "reg" else {"zipmap": False}
        out.append((name, to_onnx(m, x[:1], options=opts, target_opset={"": 17, "ai.onnx.ml": 3}), f))
    if not quick:
        try:
            import lightgbm as lgb
            from onnxmltools import convert_lightgbm
            from onnxmltools.convert.common.data_types import FloatTensorType
            x = rng.normal(size=(5000, 100)).astype(np.float32)
            y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64)
            m = lgb.LGBMClassifier(n_estimators=500, num_leaves=63, verbose=-1, random_state=0).fit(x, y)
            out.append(("lgbm_cls 500x63lv f100", convert_lightgbm(
                m, initial_types=[("X", FloatTensorType([None, 100]))], target_opset=15, zipmap=False), 100))
        except ImportError:
            pass
        try:
            import xgboost as xgb
            from onnxmltools import convert_xgboost
            from onnxmltools.convert.common.data_types import FloatTensorType
            x = rng.normal(size=(5000, 50)).astype(np.float32)
            y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64)
            m = xgb.XGBClassifier(n_estimators=300, max_depth=6, random_state=0).fit(x, y)
            out.append(("xgb_cls 300x6 f50", convert_xgboost(
                m, initial_types=[("X", FloatTensorType([None, 50]))], target_opset=15), 50))
        except ImportError:
            pass
    return out


def time_call(fn: Callable[[], Any], budget: float) -> float:
    """Seconds per call of ``fn``: calls for ``budget`` seconds (at most 2000), after one warm-up."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt > budget or n >= 2000:
            return dt / n


def run(models: list[tuple[str, Any, int]], quick: bool, check: bool = False,
        batches: tuple[int, ...] = (1, 64, 10000)) -> None:
    """Time every (model, threads, batch) cell, interleaved, and print the table and the geomean per
    batch size. ``check``: first assert that both runtimes give the same answers."""
    import onnxruntime

    import jitort
    budget = 0.05 if quick else 0.2
    rounds = 3 if quick else 5
    print(f"CPU: {cpu_label()}; onnxruntime {onnxruntime.__version__}; {load()} at start")
    print(f"{'model':26} {'thr':>3} {'batch':>6} {'ort us':>10} {'jitort us':>10} {'ratio':>6}")
    ratios: dict[int, list[float]] = {}
    for name, onx, f in models:
        data = onx.SerializeToString()
        for threads in (1, 2):
            so = onnxruntime.SessionOptions()
            so.intra_op_num_threads = threads
            so.log_severity_level = 3  # converted models declare label shapes of one row
            ort = onnxruntime.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            jso = jitort.SessionOptions()
            jso.intra_op_num_threads = threads
            jit = jitort.InferenceSession(data, jso)
            for batch in batches:
                x = np.random.default_rng(batch).normal(size=(batch, f)).astype(np.float32)
                feed = {onx.graph.input[0].name: x}
                if check:  # same answers before timing
                    for g, w in zip(jit.run(None, feed), ort.run(None, feed)):
                        np.testing.assert_allclose(np.asarray(g, np.float64) if g.dtype.kind == "f" else g,
                                                   np.asarray(w, np.float64) if w.dtype.kind == "f" else w,
                                                   rtol=1e-4, atol=1e-5)
                a, b = [], []
                for k in range(rounds):  # interleaved, the order alternating: at 2 threads the runtime that
                    # comes second starts while the first one's threads still spin (onnxruntime's for a while)
                    first, second = ((ort, a), (jit, b)) if k % 2 == 0 else ((jit, b), (ort, a))
                    for sess, ts in (first, second):
                        ts.append(time_call(lambda: sess.run(None, feed), budget))
                ta, tb = statistics.median(a) * 1e6, statistics.median(b) * 1e6
                ratios.setdefault(batch, []).append(tb / ta)
                print(f"{name:26} {threads:>3} {batch:>6} {ta:>10.1f} {tb:>10.1f} {tb / ta:>6.2f}", flush=True)
    print(f"{load()} at end")
    for batch, r in sorted(ratios.items()):
        print(f"geomean ratio at batch {batch}: {math.exp(sum(map(math.log, r)) / len(r)):.2f} ({len(r)} cells)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one model, short rounds")
    ap.add_argument("--batches", default="1,64,10000", help="comma-separated batch sizes")
    ap.add_argument("--models", default="", help="comma-separated name prefixes (default: all)")
    args = ap.parse_args()
    models = _models(args.quick)
    if args.models:
        models = [m for m in models if any(m[0].startswith(p) for p in args.models.split(","))]
    run(models, args.quick, batches=tuple(int(b) for b in args.batches.split(",")))


if __name__ == "__main__":
    main()
