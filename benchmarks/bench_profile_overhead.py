"""Per-run cost of a 50-step model with and without ``enable_profiling``: 25 x (MatMul [1,16]x[16,16] ->
Softmax), every node its own plan step (neither fuses). Interleaved rounds, 1 thread, medians in µs.

    python benchmarks/bench_profile_overhead.py [--rounds 15] [--iters 2000] [--no-profiled]

Profiling's overhead must stay out of the non-profiled run: compare the "plain" row before and
after a change to the plan or the session's run path.

    python benchmarks/bench_profile_overhead.py --decoder [--context 64] [--steps 300]

instead profiles a decode step of tests/test_llm_decode.py's tiny decoder (benchmarks/bench_llm_decode.py's
``tiny``) in both runtimes (``enable_profiling``, 1 thread, calls interleaved) and prints the per-op
medians side by side: where jitort's step time goes, op by op, against onnxruntime's own profile.
Profiled steps carry the recorder's cost (a few us each): compare the ops, not the totals to a plain run.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def _node_medians(path: str) -> dict[tuple[str, str], float]:
    """(op, node) -> median duration in us of the trace's node events (both runtimes' format)."""
    with open(path) as f:
        data = json.load(f)
    per: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for e in data if isinstance(data, list) else data["traceEvents"]:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per[(e["args"].get("op_name", "?"), e["name"][:-len("_kernel_time")])].append(float(e["dur"]))
    return {k: statistics.median(v) for k, v in per.items()}


def decoder_profile(context: int, steps: int) -> None:
    import onnxruntime

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from bench_llm_decode import MODELS, _decode_feeds
    from test_llm_decode import llama_decoder

    from jitort.bench.machine import cpu_label
    model = llama_decoder(**MODELS["tiny"])
    d = tempfile.mkdtemp()
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(d, "ort")
    ref = onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    mine = session(model, True)
    fm, fr = _decode_feeds(mine, model, context), _decode_feeds(ref, model, context)
    for _ in range(steps):
        mine.run(None, fm)
        ref.run(None, fr)
    by_op = {}
    for name, path in (("jitort", mine.end_profiling()), ("onnxruntime", ref.end_profiling())):
        ops: dict[str, float] = collections.defaultdict(float)
        for (op, _), us in _node_medians(path).items():
            ops[op] += us
        by_op[name] = ops
    print(f"CPU: {cpu_label()}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; tiny decoder, context "
          f"{context}, 1 thread, {steps} profiled steps each")
    print("| op | jitort us | onnxruntime us |\n|---|---|---|")
    ops = sorted(set(by_op["jitort"]) | set(by_op["onnxruntime"]), key=lambda o: -by_op["jitort"].get(o, 0.0))
    for op in ops:
        print(f"| {op} | {by_op['jitort'].get(op, 0.0):.1f} | {by_op['onnxruntime'].get(op, 0.0):.1f} |")
    print(f"| sum | {sum(by_op['jitort'].values()):.1f} | {sum(by_op['onnxruntime'].values()):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--no-profiled", action="store_true", help="time the plain session only")
    ap.add_argument("--decoder", action="store_true", help="per-op profile of the tiny decoder's decode step")
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    if args.decoder:
        decoder_profile(args.context, args.steps)
        return
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
