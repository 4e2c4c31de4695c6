"""``jitort bench``: jitort against onnxruntime (``jitort.bench``)."""
from __future__ import annotations

import argparse
from typing import Any


from jitort.cli.common import UsageError, int_list, parse_dims


# --- bench ---------------------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    # deferred: the CLI answers --help without importing the bench machinery
    from jitort.bench import BenchConfig, Progress, format_table, run_benchmark, total_steps, write_all

    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    try:
        cfg = BenchConfig(models=list(args.models), runtimes=runtimes, threads=int_list(args.threads, "threads"),
                          batch=int_list(args.batch, "batch"), rounds=args.rounds, warmup_s=args.warmup,
                          round_s=args.round_time, min_iters=args.min_iters, dims=parse_dims(args.dim),
                          seq=args.seq, seed=args.seed, cold=not args.no_cold, peaks=not args.no_peaks,
                          quick_peaks=args.quick_peaks,
                          timeout_s=args.timeout)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if "onnxruntime" in cfg.runtimes:
        import importlib.util
        if importlib.util.find_spec("onnxruntime") is None:
            raise UsageError("onnxruntime is not installed (pip install 'jitort[bench]'), or use --runtimes jitort")
    res = run_benchmark(cfg, Progress(total_steps(cfg)), keep_tmp=args.keep_tmp)
    print(format_table(res))
    if args.out:
        files = write_all(res, args.out)
        written = [files["json"], files["markdown"], *files["charts"]]
        print("wrote " + ", ".join(str(f) for f in written)
              + ("" if files["charts"] else " (no charts: matplotlib is not installed)"))
    return res.exit_status()


def add_parser(sub: Any) -> None:
    b = sub.add_parser("bench", help="benchmark against onnxruntime: latency, throughput, session time, memory",
                       description="Benchmark MODELs on each runtime at each thread count and batch size: "
                                   "cold/warm session creation, warm-ups, interleaved timed rounds, outputs "
                                   "checked against onnxruntime. MODEL is an .onnx path, light_<name>, or a zoo "
                                   "model (chain, mlp, bert, gpt, conv_block; builder arguments after a colon, "
                                   "e.g. bert:hidden=256,heads=8). Exit code 0 ok, 1 outputs disagree, 3 a "
                                   "runtime failed on a model (the results record it).")
    b.add_argument("models", nargs="+", metavar="MODEL")
    b.add_argument("--runtimes", default="jitort,onnxruntime", metavar="A,B",
                   help="runtimes to compare (default jitort,onnxruntime)")
    b.add_argument("--threads", default="1", metavar="N,M", help="intra-op thread counts (default 1)")
    b.add_argument("--batch", default="1", metavar="N,M", help="batch sizes: the inputs' first dim (default 1)")
    b.add_argument("--rounds", type=int, default=10, metavar="N", help="interleaved timed rounds (default 10)")
    b.add_argument("--round-time", type=float, default=0.25, metavar="S",
                   help="seconds of calls per runtime per round (default 0.25)")
    b.add_argument("--warmup", type=float, default=0.5, metavar="S", help="warm-up seconds per runtime (default 0.5)")
    b.add_argument("--min-iters", type=int, default=3, metavar="N", help="calls per round at least (default 3)")
    b.add_argument("--dim", action="append", metavar="NAME=N", help="value of a symbolic input dim; repeatable")
    b.add_argument("--seq", type=int, metavar="N", help="other symbolic dims than the batch (default 128)")
    b.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")
    b.add_argument("--out", metavar="DIR", help="write results.json, results.md and PNG charts to DIR")
    b.add_argument("--no-cold", action="store_true",
                   help="skip cold/warm session timing; jitort then uses JITORT_CACHE_DIR as it is")
    b.add_argument("--no-peaks", action="store_true", help="skip measuring the sgemm and copy peaks")
    b.add_argument("--timeout", type=float, default=900, metavar="S",
                   help="give up on a runtime step (compile, warm-up, round) after S seconds (default 900)")
    b.add_argument("--keep-tmp", action="store_true", help="keep the work directory (models, inputs, worker logs)")
    b.add_argument("--quick-peaks", action="store_true", help=argparse.SUPPRESS)  # tests: small, fast, not real
    b.set_defaults(fn=cmd_bench)
