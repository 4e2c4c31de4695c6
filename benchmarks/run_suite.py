"""The benchmark suite: the onnx wheel's nine light CNNs and the zoo, jitort against onnxruntime.

Calls ``jitort.bench.run`` (the same method as ``jitort bench``: separate processes per runtime,
cold/warm session timing, warm-ups, interleaved rounds, outputs checked against onnxruntime) and
writes results.json, results.md and, with matplotlib, PNG charts to ``--out``.

    python benchmarks/run_suite.py [--out bench-results] [--threads 1,2] [--batch 1,8] [--rounds 10]
                                   [--only light|zoo] [--quick]

The zoo models are sized to do real work (the test-sized defaults mostly measure call overhead;
benchmarks/bench_overhead.py covers that). Expect an hour or more for the full suite at two thread
counts and two batch sizes on a small machine: the cold runs compile every model from an empty cache.
"""
from __future__ import annotations

import argparse
import sys

from jitort import bench
from jitort.models import light_models

ZOO = [
    "chain:shape=Nx32x56x56",              # 20 elementwise ops over 100k floats per item: one fused loop
    "mlp:sizes=1024x1024x1024x10",         # MatMul/Add/Relu
    "bert:hidden=256,heads=4,ffn=1024",    # one encoder layer, sequence 128 (--seq)
    "gpt:hidden=256,heads=4",              # one decoder block, sequence 128 (max_positions 128)
    "conv_block:channels=64,size=56",      # a ResNet basic block at stage 1
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-results", help="output directory (default bench-results)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seq", type=int, default=128, help="sequence length of bert and gpt (default 128)")
    ap.add_argument("--only", choices=["light", "zoo"], help="run only the light CNNs or only the zoo")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 thread, batch 1, 3 short rounds")
    args = ap.parse_args(argv)
    models = ([] if args.only == "zoo" else light_models()) + ([] if args.only == "light" else ZOO)
    threads = [int(t) for t in args.threads.split(",")]
    batch = [int(b) for b in args.batch.split(",")]
    rounds, round_s = args.rounds, 0.25
    if args.quick:
        threads, batch, rounds, round_s = [1], [1], 3, 0.1
    res = bench.run(models, threads=threads, batch=batch, rounds=rounds, out=args.out, seq=args.seq,
                    round_s=round_s)
    print(bench.format_table(res))
    print(f"wrote {args.out}/results.json and results.md")
    return res.exit_status()


if __name__ == "__main__":
    sys.exit(main())
