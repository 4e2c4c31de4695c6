"""Per-run cost of a 50-step model with and without ``enable_profiling``: 25 x (MatMul [1,16]x[16,16] ->
Softmax), every node its own plan step (neither fuses). Interleaved rounds, 1 thread, medians in µs.

    python benchmarks/bench_profile_overhead.py [--rounds 15] [--iters 2000] [--no-profiled]

Profiling's overhead must stay out of the non-profiled run: compare the "plain" row before and
after a change to the plan or the session's run path.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import jitort


def tiny_steps_model(pairs: int = 25, width: int = 16) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for k in range(pairs):
        w = f"w{k}"
        inits.append(numpy_helper.from_array((rng.standard_normal((width, width)) / 4).astype(np.float32), w))
        nodes.append(helper.make_node("MatMul", [x, w], [f"m{k}"], name=f"matmul_{k}"))
        nodes.append(helper.make_node("Softmax", [f"m{k}"], [f"s{k}"], name=f"softmax_{k}", axis=-1))
        x = f"s{k}"
    g = helper.make_graph(nodes, "tiny_steps", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, width])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def session(model: onnx.ModelProto, profiled: bool) -> jitort.InferenceSession:
    so = jitort.SessionOptions()
    so.intra_op_num_threads = 1
    if profiled:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "overhead")
    return jitort.InferenceSession(model.SerializeToString(), so)


def per_run_us(sess: jitort.InferenceSession, feeds: dict, iters: int) -> float:
    run = sess.run
    t0 = time.perf_counter()
    for _ in range(iters):
        run(None, feeds)
    return (time.perf_counter() - t0) / iters * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--no-profiled", action="store_true", help="time the plain session only")
    args = ap.parse_args()
    model = tiny_steps_model()
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)}
    sessions = {"plain": session(model, False)}
    if not args.no_profiled:
        sessions["profiled"] = session(model, True)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        per_run_us(s, feeds, 200)
    for _ in range(args.rounds):
        for k, s in sessions.items():
            # profiled runs keep their events until end_profiling: bound the memory between rounds
            times[k].append(per_run_us(s, feeds, args.iters if k == "plain" else args.iters // 4))
    for k, ts in times.items():
        print(f"{k:9s} median {statistics.median(ts):8.2f} µs/run  (min {min(ts):.2f}, {len(ts)} rounds)")


if __name__ == "__main__":
    main()
