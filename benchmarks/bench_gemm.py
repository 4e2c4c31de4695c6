"""MatMul / Gemm with constant weights, jitort vs onnxruntime, interleaved rounds in one process, at 1 and 2
intra-op threads. Prints a table of medians and ratios (jitort time / onnxruntime time).

    python benchmarks/bench_gemm.py [--rounds 7] [--threads 1,2] [--filter bert] [--seconds 0.05] [--ort-spin both]
    python benchmarks/bench_gemm.py --split-sweep     # small-M products, 1 vs 2 threads (gemm._BYTES_PER_PART)
    python benchmarks/bench_gemm.py --threads 2 --python-parts   # + jitort with Python parts (before native parts)

Rows at more than one thread come twice: ``2T`` against onnxruntime with its default spinning intra-op
threads, ``2T nospin`` with ``session.intra_op.allow_spinning=0`` (``harness.ort_spin_modes``).

Cases: the issue's MatMul+bias grid, BERT-base projections (M = 128 / 256 tokens), GPT-2 projections at
decode (M = 1) and prefill (M = 64), torch-style Gemm (transB=1) layers, and a few fused epilogues.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jitort  # noqa: E402
from jitort.bench.machine import cpu_label  # noqa: E402
from jitort.kernels import threads as T  # noqa: E402
from jitort.bench.harness import ORT_SPIN_CHOICES, ort_session_options, ort_spin_modes, spin_label  # noqa: E402

# (name, M, K, N, kind, activation): kind "mm" is MatMul + Add(bias), "gemm" is Gemm(transB=1) with C
CASES = [
    ("issue 128x768x768", 128, 768, 768, "mm", ""),
    ("issue 16x1024x1024", 16, 1024, 1024, "mm", ""),
    ("issue 256x768x3072", 256, 768, 3072, "mm", ""),
    ("issue 1x768x768", 1, 768, 768, "mm", ""),
    ("bert 128x768x3072 gelu", 128, 768, 3072, "mm", "Gelu"),
    ("bert 128x3072x768", 128, 3072, 768, "mm", ""),
    ("bert 256x768x768", 256, 768, 768, "mm", ""),
    ("bert 256x3072x768", 256, 3072, 768, "mm", ""),
    ("gpt2 1x768x2304", 1, 768, 2304, "mm", ""),
    ("gpt2 1x768x3072 gelu", 1, 768, 3072, "mm", "Gelu"),
    ("gpt2 1x3072x768", 1, 3072, 768, "mm", ""),
    ("gpt2 64x768x2304", 64, 768, 2304, "mm", ""),
    ("gpt2 64x3072x768", 64, 3072, 768, "mm", ""),
    ("gemm 128x768x768 tB", 128, 768, 768, "gemm", ""),
    ("gemm 1x2048x1000 tB", 1, 2048, 1000, "gemm", ""),
    ("gemm 4x512x512 tB relu", 4, 512, 512, "gemm", "Relu"),
    ("mm 200x500x300 odd", 200, 500, 300, "mm", ""),
]


def build(M: int, K: int, N: int, kind: str, act: str, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((N, K) if kind == "gemm" else (K, N)) / np.sqrt(K)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(bias, "bias")]
    y = "y" if not act else "t"
    if kind == "gemm":
        nodes = [helper.make_node("Gemm", ["x", "W", "bias"], [y], transB=1)]
    else:
        nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "bias"], [y])]
    if act == "Gelu":
        nodes.append(helper.make_node("Gelu", ["t"], ["y"]))
    elif act:
        nodes.append(helper.make_node(act, ["t"], ["y"]))
    g = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 10
    return m


def sessions(model: onnx.ModelProto, threads: int, spinning: bool = True):
    import onnxruntime
    so = ort_session_options(threads, spinning)
    ref = onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    jso = jitort.SessionOptions()
    jso.intra_op_num_threads = threads
    return jitort.InferenceSession(model.SerializeToString(), jso), ref


def burst_median(sess, feeds, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Median per-run time of a burst lasting about ``seconds``."""
    run = sess.run
    run(None, feeds)
    t0 = time.perf_counter()
    run(None, feeds)
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(3, min(2000, int(seconds / one)))
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        run(None, feeds)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def split_sweep(rounds: int, rows: tuple[int, ...] = (1, 2, 4), sizes_filter: str = "") -> None:
    """The measurement behind ``gemm._BYTES_PER_PART``: small-M products through ``gemm.gemm`` on one
    thread and split over two (by column tiles, forced) as native parts (``threads.run_native``, what
    ``gemm.gemm`` does) and, for comparison, as the Python parts it used before (``threads.run_parts``
    calling the one-thread kernel per chunk: a worker takes the GIL per part). Interleaved rounds of
    ~10 ms bursts; prints the medians of the rounds and the 5th percentiles of single calls (on a loaded
    machine: the calls during which both threads had a CPU, what a quiet machine would see), as ratios
    split / one thread per size of B."""
    from jitort.kernels import gemm as G
    from jitort.kernels.threads import run_parts, set_num_threads
    set_num_threads(2)
    rng = np.random.default_rng(0)
    print(f"small-M split sweep, CPU {cpu_label()}, GEMM path {G.default_isa()}, load {os.getloadavg()}")
    sizes = [(256, 256), (256, 512), (512, 512), (512, 1024), (768, 768), (768, 1536), (768, 2304), (3072, 768),
             (1024, 4096)]
    if sizes_filter:
        sizes = [(k, n) for k, n in sizes if f"{k}x{n}" in sizes_filter.split(",")]
    saved = G._BYTES_PER_PART
    isa = G.default_isa()
    f32 = np.float32
    try:
        for M in rows:
            for K, N in sizes:
                a = rng.standard_normal((M, K)).astype(np.float32)
                bp = G.pack_b(rng.standard_normal((K, N)).astype(np.float32))
                bias = G.pad_bias(None, N)
                out = np.empty((M, N), np.float32)
                G._BYTES_PER_PART = 1
                chunks = G.split(M, N, K, isa, 2)
                G._BYTES_PER_PART = saved
                kern = G.KERNELS[isa]

                def one() -> None:
                    G.gemm(a, bp, N, bias, False, out=out, nthreads=1)

                def native() -> None:
                    G._BYTES_PER_PART = 1  # force the split
                    G.gemm(a, bp, N, bias, False, out=out, nthreads=2)
                    G._BYTES_PER_PART = saved

                def python() -> None:
                    run_parts(lambda k: kern(a, bp, out, bias, 0, G._Z2, 0, 0, f32(0), f32(0), 0, *chunks[k]),
                              len(chunks), 2)
                variants = (("one", one), ("native", native), ("python", python))
                for _, f in variants:
                    f()
                t0 = time.perf_counter()
                one()
                reps = max(3, int(0.01 / max(time.perf_counter() - t0, 1e-7)))
                tm: dict[str, list[float]] = {k: [] for k, _ in variants}
                cs: dict[str, list[float]] = {k: [] for k, _ in variants}
                for r in range(rounds):
                    order = variants[r % 3:] + variants[:r % 3]
                    for name, f in order:
                        t0 = time.perf_counter()
                        for _ in range(reps):
                            t = time.perf_counter()
                            f()
                            cs[name].append(time.perf_counter() - t)
                        tm[name].append((time.perf_counter() - t0) / reps)
                med = {k: statistics.median(v) for k, v in tm.items()}
                q = {k: float(np.percentile(v, 5)) for k, v in cs.items()}
                print(f"M={M} K={K:5d} N={N:5d} B {K * N * 4 >> 10:6d} KiB: medians 1T {med['one'] * 1e6:7.1f} us, "
                      f"native {med['native'] / med['one']:.2f}, python {med['python'] / med['one']:.2f}; "
                      f"5th pct 1T {q['one'] * 1e6:7.1f} us, native {q['native'] / q['one']:.2f}, "
                      f"python {q['python'] / q['one']:.2f}; load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        G._BYTES_PER_PART = saved
    print(f"load after: {os.getloadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--filter", default="")
    ap.add_argument("--seconds", type=float, default=0.05, help="length of one timed burst")
    ap.add_argument("--ort-spin", choices=ORT_SPIN_CHOICES, default="both",
                    help="onnxruntime's intra-op spinning in multi-thread rows: both (two rows), on (its default), "
                         "off (session.intra_op.allow_spinning=0)")
    ap.add_argument("--split-sweep", action="store_true",
                    help="only measure small-M products on 1 vs 2 threads (how gemm._BYTES_PER_PART was set)")
    ap.add_argument("--python-parts", action="store_true",
                    help="also time jitort with its split GEMM's parts as Python calls (threads.NATIVE_PARTS off), "
                         "interleaved")
    ap.add_argument("--rows", default="1,2,4", help="--split-sweep: rows of A")
    ap.add_argument("--sizes", default="", help="--split-sweep: only these KxN, e.g. 768x768,1024x4096")
    args = ap.parse_args()
    if args.split_sweep:
        split_sweep(max(args.rounds, 9), tuple(int(r) for r in args.rows.split(",")), args.sizes)
        return
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    try:
        from jitort.kernels.gemm import default_isa
        isa = default_isa()
    except ImportError:  # before the GEMM engine existed (baseline runs)
        isa = "BLAS"
    print(f"CPU: {cpu}; jitort GEMM path: {isa}; load: {os.getloadavg()}")
    print(f"{'case':28s} {'thr':>9s} {'jitort ms':>10s} {'ort ms':>9s} {'ratio':>6s}  maxdiff")
    ratios: dict[str, list[float]] = {}
    for name, M, K, N, kind, act in CASES:
        if args.filter not in name:
            continue
        model = build(M, K, N, kind, act)
        x = np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)
        feeds = {"x": x}
        for t, spin in ((int(s), sp) for s in args.threads.split(",") for sp in ort_spin_modes(int(s), args.ort_spin)):
            col = spin_label(t, spin)
            js, rs = sessions(model, t, spin)
            diff = float(np.abs(js.run(None, feeds)[0] - rs.run(None, feeds)[0]).max())
            tj, tr, tp = [], [], []
            for _ in range(args.rounds):
                tj.append(burst_median(js, feeds, args.seconds))
                tr.append(burst_median(rs, feeds, args.seconds))
                if args.python_parts:
                    T.NATIVE_PARTS = False
                    try:
                        tp.append(burst_median(js, feeds, args.seconds))
                    finally:
                        T.NATIVE_PARTS = True
            mj, mr = statistics.median(tj), statistics.median(tr)
            del rs  # its threads stop (no spinning onnxruntime pool left behind the next row)
            ratios.setdefault(col, []).append(mj / mr)
            extra = ""
            if tp:
                mp = statistics.median(tp)
                ratios.setdefault(col + " py", []).append(mp / mr)
                extra = f"  python parts {mp * 1e3:.3f} ms ({mp / mr:.2f})"
            print(f"{name:28s} {col:>9s} {mj * 1e3:10.3f} {mr * 1e3:9.3f} {mj / mr:6.2f}  {diff:.1e}{extra}",
                  flush=True)
    for col, rs in ratios.items():
        print(f"{col}: geomean ratio {float(np.exp(np.mean(np.log(rs)))):.2f}, worst {max(rs):.2f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
