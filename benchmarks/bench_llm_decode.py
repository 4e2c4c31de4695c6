"""Per-token decode latency of a Llama-style decoder with a KV cache: jitort vs onnxruntime.

    python benchmarks/bench_llm_decode.py [--rounds 30] [--threads 1,2] [--contexts 64,512] [--ort-spin on|off]
                                          [--models tiny,large,large-int4] [--prefill 128] [--op-rows 1,128]
                                          [--python-parts] [--clock wall|thread] [--save-models DIR]

The models are ``tests/test_llm_decode.py``'s ``llama_decoder`` (onnxruntime-genai's graph layout,
random weights): ``tiny`` (hidden 64, 4 heads / 2 KV heads, 2 layers, FFN 128, vocab 64),
``large`` (hidden 768, 12 / 4 heads, 4 layers, FFN 2048, vocab 4096) and ``large-int4`` (the same,
every projection an int4 MatMulNBits, block 32). For each model, thread count (intra_op_num_threads)
and context length C, both runtimes prefill a C-token prompt once; each timed call is then one decode
step (batch 1, one new token, a past of C positions, the same feeds every call, so the context
stays at C). Calls alternate jitort, onnxruntime, jitort, ... after warm-ups; medians of ``--rounds``
calls each. A second table times the prefill of a ``--prefill``-token prompt on an empty cache. The
logits are checked against onnxruntime's (rtol 1e-3). The ratio is jitort's median over
onnxruntime's (below 1: jitort is faster). The CPU and the load average are printed with the
numbers: absolute times on a shared machine are noisy, the interleaved ratios less so.

``--clock thread`` times each call by the calling thread's CPU time (``time.thread_time``) instead of
the wall clock: on a shared, loaded machine this leaves out the time the thread waits for a core, so
1-thread rows stay comparable (both runtimes compute a 1-thread call on the calling thread); rows
with more threads are then not latencies (their other threads' work is not counted) and are skipped.

``--python-parts`` adds a column to the decode and MatMulNBits tables: jitort with its GEMM / MatMulNBits splits run as
Python parts with the thresholds they had before native parts (``PYTHON_PARTS``), in the same rounds.

``--contexts ''`` leaves the decode table out. ``--save-models DIR`` writes each model as
``DIR/<model>.onnx`` (for ``jitort profile DIR/large.onnx --dim sequence_length=128 ...`` or a
per-op comparison with onnxruntime's profile).

A third table (``--op-rows``, empty: none) times one int4 MatMulNBits node (block 32, no zero
points) alone, at the large model's projection shapes K x N and M rows of A (1: a decode step's
projection; 128: a prefill's), interleaved the same way.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime

import jitort
from jitort.bench.harness import ort_session_options
from jitort.bench.machine import cpu_label

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_llm_decode import empty_cache, llama_decoder  # noqa: E402

MODELS = {
    "tiny": dict(vocab=64, hidden=64, heads=4, kv_heads=2, layers=2, ffn=128, max_len=1024),
    "large": dict(vocab=4096, hidden=768, heads=12, kv_heads=4, layers=4, ffn=2048, max_len=1024),
    "large-int4": dict(vocab=4096, hidden=768, heads=12, kv_heads=4, layers=4, ffn=2048, max_len=1024, int4=True),
}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


ORT_SPIN = True  # --ort-spin: onnxruntime's intra-op threads spin after a run (its default)


def _sessions(model, threads: int):
    so = ort_session_options(threads, ORT_SPIN)
    ref = onnxruntime.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    jo = jitort.SessionOptions()
    jo.intra_op_num_threads = threads
    return jitort.InferenceSession(model.SerializeToString(), jo), ref


def _decode_feeds(sess, model, context: int) -> dict[str, np.ndarray]:
    """Prefill ``context`` tokens on ``sess``; -> the feeds of the next (decode) step."""
    rng = np.random.default_rng(0)
    vocab = model.graph.output[0].type.tensor_type.shape.dim[2].dim_value
    prompt = rng.integers(0, vocab, (1, context)).astype(np.int64)
    names = [o.name for o in model.graph.output]
    outs = dict(zip(names, sess.run(None, {"input_ids": prompt, "attention_mask": np.ones((1, context), np.int64),
                                            **empty_cache(model, 1)})))
    nxt = outs["logits"][:, -1].argmax(-1).reshape(1, 1).astype(np.int64)
    feeds = {"input_ids": nxt, "attention_mask": np.ones((1, context + 1), np.int64)}
    feeds.update({n.replace("present.", "past_key_values."): outs[n] for n in names if n != "logits"})
    return feeds


def _prefill_feeds(model, n: int) -> dict[str, np.ndarray]:
    vocab = model.graph.output[0].type.tensor_type.shape.dim[2].dim_value
    prompt = np.random.default_rng(0).integers(0, vocab, (1, n)).astype(np.int64)
    return {"input_ids": prompt, "attention_mask": np.ones((1, n), np.int64), **empty_cache(model, 1)}


# --python-parts: jitort's split kernels as before native parts (kernels/native_parts.py): each part a
# Python call (threads.NATIVE_PARTS False) and the split thresholds those had; interleaved with the
# native form in the same rounds
PYTHON_PARTS = dict(NATIVE_PARTS=False, BYTES_PER_PART=16 << 20, GEMV_MACS_PER_PART=1e6)


def _variant(v: dict | None) -> dict:
    """Set jitort's split mode to v (None: leave it); returns the previous one."""
    from jitort.kernels import gemm, nbits
    from jitort.kernels import threads as T
    old = dict(NATIVE_PARTS=T.NATIVE_PARTS, BYTES_PER_PART=gemm._BYTES_PER_PART,
               GEMV_MACS_PER_PART=nbits.GEMV_MACS_PER_PART)
    if v is not None:
        T.NATIVE_PARTS, gemm._BYTES_PER_PART = v["NATIVE_PARTS"], v["BYTES_PER_PART"]
        nbits.GEMV_MACS_PER_PART = v["GEMV_MACS_PER_PART"]
    return old


CLOCK = time.perf_counter  # --clock: time.thread_time for the calling thread's CPU time


def _timed(fns: list, rounds: int, warmup: int) -> list[float]:
    """Medians of fns called in turn (one call each per round) after warm-ups. The order rotates
    every round: a call right after another runtime's finds part of its weights evicted from the
    caches (the int4 decoder reads ~18 MB of weights per step: one runtime's fit the dev VM's 32 MiB
    L3, two do not), so a fixed order favours whoever follows itself."""
    ts: list[list[float]] = [[] for _ in fns]
    for k in range(warmup + rounds):
        for j in range(len(fns)):
            i = (j + k) % len(fns)
            f = fns[i]
            t0 = CLOCK()
            f()
            if k >= warmup:
                ts[i].append(CLOCK() - t0)
    return [statistics.median(t) for t in ts]


def bench(name: str, threads: int, context: int, rounds: int, warmup: int = 5, prefill: bool = False,
          python_parts: bool = False) -> dict:
    """Decode-step latency at ``context`` (or, with ``prefill``, the latency of a ``context``-token
    prompt on an empty cache); with python_parts also jitort with ``PYTHON_PARTS`` (key ``py_ms``)."""
    model = llama_decoder(**MODELS[name])
    mine, ref = _sessions(model, threads)
    if prefill:
        fm = fr = _prefill_feeds(model, context)
    else:
        fm, fr = _decode_feeds(mine, model, context), _decode_feeds(ref, model, context)
    got, want = mine.run(["logits"], fm)[0], ref.run(["logits"], fr)[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    native = _variant(None)

    def old_parts() -> None:
        _variant(PYTHON_PARTS)
        try:
            mine.run(None, fm)
        finally:
            _variant(native)
    fns = [lambda: mine.run(None, fm), lambda: ref.run(None, fr)] + ([old_parts] if python_parts else [])
    t = _timed(fns, rounds, warmup)
    r = dict(model=name, threads=threads, context=context, jitort_ms=t[0] * 1e3, ort_ms=t[1] * 1e3,
             ratio=t[0] / t[1])
    if python_parts:
        r.update(py_ms=t[2] * 1e3, py_ratio=t[2] / t[1])
    return r


OP_SHAPES = [(768, 768), (768, 2048), (2048, 768), (768, 4096)]  # q/o, gate/up, down, lm head


def bench_op(K: int, N: int, M: int, threads: int, rounds: int, warmup: int = 5, python_parts: bool = False
             ) -> dict:
    """One int4 MatMulNBits node, A [M, K]: jitort vs onnxruntime, interleaved (with python_parts also
    jitort with ``PYTHON_PARTS``: key ``py_us``)."""
    from onnx import TensorProto, helper, numpy_helper

    from test_llm_decode import _quant4
    w, s = _quant4(np.random.default_rng(K + N), K, N)
    node = helper.make_node("MatMulNBits", ["a", "B", "s"], ["y"], domain="com.microsoft", K=K, N=N, bits=4,
                            block_size=32)
    graph = helper.make_graph([node], "op", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [M, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])],
                              [numpy_helper.from_array(w, "B"), numpy_helper.from_array(s, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    mine, ref = _sessions(model, threads)
    feeds = {"a": np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)}
    np.testing.assert_allclose(mine.run(None, feeds)[0], ref.run(None, feeds)[0], rtol=1e-3, atol=1e-3)
    native = _variant(None)

    def old_parts() -> None:
        _variant(PYTHON_PARTS)
        try:
            mine.run(None, feeds)
        finally:
            _variant(native)
    fns = [lambda: mine.run(None, feeds), lambda: ref.run(None, feeds)] + ([old_parts] if python_parts else [])
    t = _timed(fns, rounds, warmup)
    r = dict(jitort_us=t[0] * 1e6, ort_us=t[1] * 1e6, ratio=t[0] / t[1])
    if python_parts:
        r.update(py_us=t[2] * 1e6, py_ratio=t[2] / t[1])
    return r


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--contexts", default="64,512", help="decode-step contexts ('': no decode table)")
    ap.add_argument("--save-models", metavar="DIR", help="also write each model to DIR/<model>.onnx")
    ap.add_argument("--models", default="tiny,large,large-int4")
    ap.add_argument("--prefill", type=int, default=128, help="prompt length of the prefill table (0: none)")
    ap.add_argument("--op-rows", default="1,128", help="rows of A of the MatMulNBits table ('': none)")
    ap.add_argument("--ort-spin", choices=("on", "off"), default="on",
                    help="onnxruntime's session.intra_op.allow_spinning: on (its default) or off; its spinning "
                         "threads take the second core jitort's next 2-thread call needs on a 2-core machine")
    ap.add_argument("--python-parts", action="store_true",
                    help="decode table: also jitort with its split kernels' parts as Python calls (before native "
                         "parts), interleaved")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="time calls by the wall clock or by the calling thread's CPU time (1-thread rows only)")
    args = ap.parse_args(argv)
    global ORT_SPIN, CLOCK
    ORT_SPIN = args.ort_spin == "on"
    if args.clock == "thread":
        CLOCK = time.thread_time
        args.threads = "1"
    print(f"CPU: {cpu_label()}; onnxruntime {onnxruntime.__version__} (intra-op spinning {args.ort_spin}); "
          f"clock: {args.clock}; load average before: {_load()}")
    py = args.python_parts
    if args.save_models:
        import onnx
        os.makedirs(args.save_models, exist_ok=True)
        for name in args.models.split(","):
            onnx.save(llama_decoder(**MODELS[name]), os.path.join(args.save_models, f"{name}.onnx"))
    print("| model | threads | context | jitort ms/token | onnxruntime ms/token | ratio |"
          + (" python parts ms | ratio |" if py else "") + " load |")
    print("|---|---|---|---|---|---|" + ("---|---|" if py else "") + "---|")
    for name in args.models.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            for context in (int(c) for c in args.contexts.split(",") if c):
                r = bench(name, threads, context, args.rounds, python_parts=py)
                extra = f" {r['py_ms']:.3f} | {r['py_ratio']:.2f}x |" if py else ""
                print(f"| {name} | {threads} | {context} | {r['jitort_ms']:.3f} | {r['ort_ms']:.3f} | "
                      f"{r['ratio']:.2f}x |{extra} {_load()} |", flush=True)
    if args.prefill:
        print(f"\nprefill of {args.prefill} tokens (empty cache, batch 1)\n")
        print("| model | threads | jitort ms | onnxruntime ms | ratio | load |")
        print("|---|---|---|---|---|---|")
        for name in args.models.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                r = bench(name, threads, args.prefill, max(15, args.rounds // 2), warmup=5, prefill=True)
                print(f"| {name} | {threads} | {r['jitort_ms']:.2f} | {r['ort_ms']:.2f} | {r['ratio']:.2f}x | "
                      f"{_load()} |", flush=True)


    if args.op_rows:
        print("\none int4 MatMulNBits node (block 32), A [M, K] @ [K, N]\n")
        print("| K x N | M | threads | jitort us | onnxruntime us | ratio |" + (" python parts us | ratio |" if py else "")
              + " load |")
        print("|---|---|---|---|---|---|" + ("---|---|" if py else "") + "---|")
        for M in (int(m) for m in args.op_rows.split(",")):
            for K, N in OP_SHAPES:
                for threads in (int(t) for t in args.threads.split(",")):
                    r = bench_op(K, N, M, threads, max(50, args.rounds) if M == 1 else args.rounds, python_parts=py)
                    extra = f" {r['py_us']:.0f} | {r['py_ratio']:.2f}x |" if py else ""
                    print(f"| {K} x {N} | {M} | {threads} | {r['jitort_us']:.0f} | {r['ort_us']:.0f} | "
                          f"{r['ratio']:.2f}x |{extra} {_load()} |", flush=True)


if __name__ == "__main__":
    main()
