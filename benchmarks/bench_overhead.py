"""Per-run overhead of small graphs, jitort vs onnxruntime, interleaved, at 1 and 2 threads.

    python benchmarks/bench_overhead.py [--rounds 15] [--iters 2000] [--threads 1,2]

Cases: a 1-node Add of 1,000 floats; the 20-op elementwise chain of tests/test_session.py (one fused
kernel) at two sizes; an elementwise Mul whose operand's dims are known only at run time (a "strided"
kernel: the plan broadcasts at run time, like the Cast/Mul after a converted tree ensemble); a chain
of 20 If nodes (one tiny branch each); a Loop of 100 iterations of a tiny body; and 20 blocks of shape glue (Shape, Gather, Unsqueeze,
Concat, Reshape, Slice, Concat on a [1, T] tensor: 141 nodes, as in voice-activity models); and the
single ops of a small decoder's step (the int64 attention-mask ReduceSum, SkipSimplifiedLayerNormalization
of one token, RotaryEmbedding of one token's 4 heads, a [1, 1, 64] x [64, 64] projection MatMul, the token
embedding's one-row Gather, GroupQueryAttention decoding one token over a
64-row cache: tests/test_llm_decode.py's tiny shapes). ``--cases`` picks cases by a substring of their names. Each
round times ``--iters`` calls of one runtime, then the other (machine drift hits both alike); the
table prints the medians (us per call, per node) and the ratio jitort / onnxruntime, with the CPU
and the load average (the machine may be shared: read the ratios, not the absolute times).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trees import load  # noqa: E402
from oracle import make_model  # noqa: E402
from test_session import _chain_model  # noqa: E402  (the same chain the tests check)

import jitort  # noqa: E402
from jitort.bench.machine import cpu_label  # noqa: E402

F = np.float32


def add_model() -> onnx.ModelProto:
    return make_model([helper.make_node("Add", ["x", "y"], ["z"])],
                      {"x": (F, [1000]), "y": (F, [1000])}, {"z": (F, [1000])})


def runtime_broadcast_model() -> onnx.ModelProto:
    """(x + y) * 0.5 with x [A, B] and y [C, D]: how they broadcast is known only at run time (a
    "strided" kernel; the plan resolves the broadcast per call)."""
    nodes = [helper.make_node("Add", ["x", "y"], ["a"]), helper.make_node("Mul", ["a", "k"], ["z"])]
    return make_model(nodes, {"x": (F, ["A", "B"]), "y": (F, ["C", "D"])}, ["z"], {"k": np.array(0.5, F)})


def if_chain(n: int = 20) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    nodes, cur = [], "x"
    for k in range(n):
        then = helper.make_graph([helper.make_node("Sigmoid", [cur], [f"t{k}"])], f"then{k}", [],
                                 [vi(f"t{k}", TensorProto.FLOAT, [1, 64])])
        els = helper.make_graph([helper.make_node("Neg", [cur], [f"e{k}"])], f"else{k}", [],
                                [vi(f"e{k}", TensorProto.FLOAT, [1, 64])])
        nodes.append(helper.make_node("If", ["c"], [f"y{k}"], then_branch=then, else_branch=els))
        cur = f"y{k}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    return make_model(nodes, {"c": (np.bool_, []), "x": (F, [1, 64])}, ["y"])


def loop_model() -> onnx.ModelProto:
    """Loop of M iterations; the body adds a constant [1, 16] to the carried state."""
    vi = helper.make_tensor_value_info
    body = helper.make_graph([helper.make_node("Identity", ["cin"], ["cout"]),
                              helper.make_node("Add", ["s", "one"], ["s2"])], "body",
                             [vi("i", TensorProto.INT64, []), vi("cin", TensorProto.BOOL, []),
                              vi("s", TensorProto.FLOAT, [1, 16])],
                             [vi("cout", TensorProto.BOOL, []), vi("s2", TensorProto.FLOAT, [1, 16])])
    nodes = [helper.make_node("Loop", ["M", "c", "x"], ["y"], body=body)]
    return make_model(nodes, {"M": (np.int64, []), "c": (np.bool_, []), "x": (F, [1, 16])}, ["y"],
                      {"one": np.ones((1, 16), F)})


def shape_glue(n: int = 20) -> onnx.ModelProto:
    """Per block: Shape, Gather, Unsqueeze, Concat, Reshape, Slice, Concat on a [1, T] tensor."""
    inits = {"zero": np.array(0, np.int64), "ax0": np.array([0], np.int64), "m1": np.array([-1], np.int64),
             "st": np.array([1], np.int64), "en": np.array([65], np.int64), "ax1": np.array([1], np.int64)}
    nodes, cur = [], "x"
    for k in range(n):
        nodes += [helper.make_node("Shape", [cur], [f"s{k}"]),
                  helper.make_node("Gather", [f"s{k}", "zero"], [f"g{k}"], axis=0),
                  helper.make_node("Unsqueeze", [f"g{k}", "ax0"], [f"u{k}"]),
                  helper.make_node("Concat", [f"u{k}", "m1"], [f"c{k}"], axis=0),
                  helper.make_node("Reshape", [cur, f"c{k}"], [f"r{k}"]),
                  helper.make_node("Slice", [f"r{k}", "st", "en", "ax1"], [f"l{k}"]),
                  helper.make_node("Concat", [f"l{k}", "h"], [f"x{k}"], axis=1)]
        cur = f"x{k}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    return make_model(nodes, {"x": (F, [1, "T"]), "h": (F, [1, 1])}, ["y"], inits)


def decoder_ops() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray], int]]:
    """One-node models of a decoder step's small ops (hidden 64, 4 heads / 2 KV heads of 16, past 64)."""
    rng = np.random.default_rng(1)
    ms = {"com.microsoft": 1}
    red = make_model([helper.make_node("ReduceSum", ["m", "a"], ["s"], keepdims=0)],
                     {"m": (np.int64, [1, "T"])}, ["s"], {"a": np.array([1], np.int64)}, opset=17)
    norm = make_model([helper.make_node("SkipSimplifiedLayerNormalization", ["x", "r", "g"], ["y", "", "", "t"],
                                        domain="com.microsoft", epsilon=1e-5)],
                      {"x": (F, [1, "S", 64]), "r": (F, [1, "S", 64])}, ["y", "t"],
                      {"g": rng.standard_normal(64).astype(F)}, opset=17, extra_opsets=ms)
    H, P = 16, 64
    ang = np.arange(128)[:, None] * (1.0 / 10000 ** (np.arange(0, H, 2) / H))[None, :]
    gqa = make_model([helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "sl", "tl", "cos", "sin"],
                                       ["o", "ok", "ov"], domain="com.microsoft", num_heads=4, kv_num_heads=2,
                                       do_rotary=1)],
                     {"q": (F, [1, "S", 64]), "k": (F, [1, "S", 32]), "v": (F, [1, "S", 32]),
                      "pk": (F, [1, 2, "P", H]), "pv": (F, [1, 2, "P", H]), "sl": (np.int32, [1]),
                      "tl": (np.int32, [])}, ["o", "ok", "ov"],
                     {"cos": np.cos(ang).astype(F), "sin": np.sin(ang).astype(F)}, opset=17, extra_opsets=ms)
    rot = make_model([helper.make_node("RotaryEmbedding", ["q", "p", "cos", "sin"], ["r"], domain="com.microsoft",
                                       num_heads=4)],
                     {"q": (F, [1, "S", 64]), "p": (np.int64, [1, "S"])}, ["r"],
                     {"cos": np.cos(ang).astype(F), "sin": np.sin(ang).astype(F)}, opset=17, extra_opsets=ms)
    mm = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": (F, [1, "S", 64])}, ["y"],
                    {"w": rng.standard_normal((64, 64)).astype(F)}, opset=17)
    emb = make_model([helper.make_node("Gather", ["e", "i"], ["y"], axis=0)], {"i": (np.int64, [1, "S"])}, ["y"],
                     {"e": rng.standard_normal((64, 64)).astype(F)}, opset=17)
    x = {n: rng.standard_normal(s).astype(F) for n, s in (("q", (1, 1, 64)), ("k", (1, 1, 32)), ("v", (1, 1, 32)),
                                                         ("pk", (1, 2, P, H)), ("pv", (1, 2, P, H)))}
    return {
        "MatMul [1,1,64]x[64,64]": (mm, {"x": x["q"]}, 1),
        "Gather embedding [1,1]": (emb, {"i": np.array([[5]], np.int64)}, 1),
        "ReduceSum int64 [1,65]": (red, {"m": np.ones((1, 65), np.int64)}, 1),
        "SkipSimplifiedLN [1,1,64]": (norm, {"x": x["q"], "r": x["q"][::-1].copy()}, 1),
        "RotaryEmbedding [1,1,64]": (rot, {"q": x["q"], "p": np.array([[P]], np.int64)}, 1),
        "GQA decode P=64": (gqa, dict(x, sl=np.array([P], np.int32), tl=np.array(P + 1, np.int32)), 1),
    }


def cases() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray], int]]:
    """name -> (model, feeds, iteration divisor)."""
    rng = np.random.default_rng(0)
    chain, _ = _chain_model()
    return {
        "Add 1k floats": (add_model(), {"x": np.ones(1000, F), "y": np.ones(1000, F)}, 1),
        "20-op chain [1,3,8,16]": (chain, {"x": rng.standard_normal((1, 3, 8, 16)).astype(F)}, 1),
        "20-op chain [64,3,8,16]": (chain, {"x": rng.standard_normal((64, 3, 8, 16)).astype(F)}, 20),
        "run-time broadcast [1,2]": (runtime_broadcast_model(), {"x": rng.standard_normal((1, 2)).astype(F),
                                                                  "y": rng.standard_normal((1, 1)).astype(F)}, 1),
        "20 If [1,64]": (if_chain(), {"c": np.array(True), "x": rng.standard_normal((1, 64)).astype(F)}, 1),
        "Loop x100 [1,16]": (loop_model(), {"M": np.array(100, np.int64), "c": np.array(True),
                                            "x": rng.standard_normal((1, 16)).astype(F)}, 10),
        "shape glue x20 [1,65]": (shape_glue(), {"x": rng.standard_normal((1, 65)).astype(F),
                                                 "h": np.ones((1, 1), F)}, 1),
        **decoder_ops(),
    }


def sessions(model: onnx.ModelProto, threads: int) -> tuple[Any, Any]:
    import onnxruntime
    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    ref = onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    jso = jitort.SessionOptions()
    jso.intra_op_num_threads = threads
    return jitort.InferenceSession(model.SerializeToString(), jso), ref


def time_runs(sess: Any, feeds: dict[str, np.ndarray], iters: int) -> float:
    run = sess.run
    t0 = time.perf_counter()
    for _ in range(iters):
        run(None, feeds)
    return (time.perf_counter() - t0) / iters * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names (default: all)")
    args = ap.parse_args()
    picks = [c for c in args.cases.split(",") if c]
    print(f"CPU: {cpu_label()}; {load()} at start")
    print(f"{'case':26s} {'thr':>3s} {'nodes':>5s} {'jitort us':>10s} {'ort us':>9s} {'j us/node':>9s} "
          f"{'o us/node':>9s} {'ratio':>6s}")
    for name, (model, feeds, div) in cases().items():
        if picks and not any(p in name for p in picks):
            continue
        for threads in (int(t) for t in args.threads.split(",")):
            js, rs = sessions(model, threads)
            for got, want in zip(js.run(None, feeds), rs.run(None, feeds)):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
            iters = max(50, args.iters // div)
            jt, rt = [], []
            for _ in range(args.rounds):  # interleaved: drift hits both alike
                jt.append(time_runs(js, feeds, iters))
                rt.append(time_runs(rs, feeds, iters))
            j, r = statistics.median(jt), statistics.median(rt)
            n = len(model.graph.node)
            print(f"{name:26s} {threads:3d} {n:5d} {j:10.2f} {r:9.2f} {j / n:9.2f} {r / n:9.2f} {j / r:6.2f}")
    print(f"{load()} at end")


if __name__ == "__main__":
    main()
