"""Per-run overhead: a 1-node Add of 1,000 floats and a 20-op elementwise chain, jitort vs
onnxruntime, interleaved rounds, 1 thread. Prints medians (µs) and ratios.

    python benchmarks/bench_overhead.py [--rounds 15] [--iters 2000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_session import _chain_model  # noqa: E402  (the same chain the tests check)

import jitort  # noqa: E402


def add_model() -> onnx.ModelProto:
    from oracle import make_model
    return make_model([helper.make_node("Add", ["x", "y"], ["z"])],
                      {"x": (np.float32, [1000]), "y": (np.float32, [1000])}, {"z": (np.float32, [1000])})


def sessions(model: onnx.ModelProto):
    import onnxruntime
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    ref = onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    jso = jitort.SessionOptions()
    jso.intra_op_num_threads = 1
    return jitort.InferenceSession(model.SerializeToString(), jso), ref


def time_runs(sess, feeds, iters: int) -> float:
    run = sess.run
    t0 = time.perf_counter()
    for _ in range(iters):
        run(None, feeds)
    return (time.perf_counter() - t0) / iters * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=2000)
    args = ap.parse_args()
    chain, _ = _chain_model()
    cases = {
        "Add 1k floats": (add_model(), {"x": np.ones(1000, np.float32), "y": np.ones(1000, np.float32)}),
        "20-op chain [1,3,8,16]": (chain, {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 16)).astype(np.float32)}),
        "20-op chain [64,3,8,16]": (chain, {"x": np.random.default_rng(0).standard_normal((64, 3, 8, 16)).astype(np.float32)}),
    }
    print(f"{'case':28s} {'jitort µs':>10s} {'ort µs':>10s} {'ratio':>7s}")
    for name, (model, feeds) in cases.items():
        js, rs = sessions(model)
        np.testing.assert_allclose(js.run(None, feeds)[0], rs.run(None, feeds)[0], rtol=1e-4, atol=1e-5)
        iters = args.iters if "64" not in name else max(50, args.iters // 20)
        jt, rt = [], []
        for _ in range(args.rounds):  # interleaved: drift hits both alike
            jt.append(time_runs(js, feeds, iters))
            rt.append(time_runs(rs, feeds, iters))
        j, r = statistics.median(jt), statistics.median(rt)
        print(f"{name:28s} {j:10.2f} {r:10.2f} {j / r:7.2f}")


if __name__ == "__main__":
    main()
