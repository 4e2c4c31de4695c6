"""``jitort run``: compile and run a model, print its outputs and what was compiled, optionally
compare with onnxruntime."""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import jitort
from jitort import cache
from jitort.cli.common import ATOL, EXIT_FAILED, EXIT_MISMATCH, EXIT_OK, EXIT_USAGE, RTOL, UsageError, compare, median, ms, ort_session, parse_dims, parse_inputs, print_compile_report, resolve, safe_name, session_options, summary, timed
from jitort.errors import ALL_ERRORS
from jitort.models import expected_output, input_specs, random_feeds, reference_inputs, resolve_model


def cmd_run(args: argparse.Namespace) -> int:
    path = resolve(args.model, resolve_model)
    specs = input_specs(path)
    dims = parse_dims(args.dim)
    feeds = parse_inputs(args.input, specs)
    missing = [n for n, _, _ in specs if n not in feeds]
    reference = None
    light = re.fullmatch(r"light_[a-z0-9_]+", args.model) is not None and not Path(args.model).exists()
    if missing and args.random:
        rand = random_feeds(path, seed=args.seed, dims=dims)
        feeds.update({n: rand[n] for n in missing})
        print(f"inputs: random (seed {args.seed}) for {', '.join(missing)}")
    elif missing and light and not feeds:
        feeds = reference_inputs(args.model)
        reference = expected_output(args.model)
        print("inputs: the ONNX backend test input (its expected output ships with the onnx wheel)")
    elif missing:
        raise UsageError(f"no data for input(s) {missing}: give --input NAME=FILE.npy or --random")
    for n, a in feeds.items():
        print(f"  {n}: {a.dtype} {tuple(a.shape)}")

    try:
        sess = jitort.InferenceSession(str(path), session_options(args.threads),
                                       providers=["CPUExecutionProvider"])
        mark = cache.compile_count()
        outs, first, times = timed(lambda: sess.run(None, feeds), args.repeat)
    except ALL_ERRORS as e:
        print(f"jitort failed on {path}: {type(e).__name__}: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_FAILED
    print_compile_report(sess, cache.compiled_since(mark))
    names = [o.name for o in sess.get_outputs()]

    print("outputs:")
    taken: set[str] = set()
    for n, a in zip(names, outs):
        print(f"  {n}: {a.dtype} {tuple(a.shape)}  {summary(a)}")
        if args.output_dir:
            out_dir = Path(args.output_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            f = out_dir / f"{safe_name(n, taken)}.npy"
            np.save(f, a)
            print(f"    saved {f}")

    status = EXIT_OK
    if reference is not None:
        ok, line = compare(outs[0], reference)
        print(f"vs expected output shipped with onnx: {names[0]}: {line}  {'OK' if ok else 'MISMATCH'}")
        status = status if ok else EXIT_MISMATCH

    print(f"time jitort:      first run {ms(first)}; median of {len(times)} runs {median(times)}")
    if args.compare_ort:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("--compare-ort needs onnxruntime, which is not installed (pip install onnxruntime)",
                  file=sys.stderr)
            return EXIT_USAGE
        t0 = time.perf_counter()
        try:
            osess = ort_session(path, args.threads)
            created = time.perf_counter() - t0
            ref, ofirst, otimes = timed(lambda: osess.run(None, feeds), args.repeat)
        except Exception as e:  # onnxruntime's exceptions share no base class
            print(f"onnxruntime failed on {path}: {type(e).__name__}: {e}", file=sys.stderr)
            return EXIT_FAILED
        print(f"time onnxruntime: first run {ms(ofirst)}; median of {len(otimes)} runs {median(otimes)}"
              f" (session created in {created:.2f} s)")
        if times and otimes:
            print(f"  jitort / onnxruntime median time: {statistics.median(times) / statistics.median(otimes):.2f}x")
        print("vs onnxruntime:")
        bad = 0
        for n, a, r in zip(names, outs, ref):
            ok, line = compare(a, r)
            bad += not ok
            print(f"  {n}: {line}  {'OK' if ok else 'MISMATCH'}")
        if bad:
            status = EXIT_MISMATCH
        print(f"{'all outputs agree' if not bad else f'{bad} output(s) disagree'} with onnxruntime "
              f"(rtol {RTOL:g}, atol {ATOL:g})")
    return status


def add_parser(sub: Any) -> None:
    r = sub.add_parser("run", help="compile and run a model; optionally compare with onnxruntime",
                       description="Compile and run MODEL. Without --input/--random, a light_<name> model "
                                   "runs the ONNX backend test's input and is checked against the output "
                                   "shipped with onnx.")
    r.add_argument("model", metavar="MODEL")
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input from a .npy (or TensorProto .pb) file; repeatable")
    r.add_argument("--random", action="store_true", help="random inputs for those not given by --input")
    r.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    r.add_argument("--dim", action="append", metavar="NAME=N", help="value of a symbolic dim for --random")
    r.add_argument("--output-dir", metavar="DIR", help="save each output as DIR/<name>.npy")
    r.add_argument("--compare-ort", action="store_true", help="also run onnxruntime and compare")
    r.add_argument("--repeat", type=int, default=5, metavar="N", help="timed runs after the first (default 5)")
    r.add_argument("--threads", type=int, metavar="N", help="intra-op threads for jitort and onnxruntime")
    r.set_defaults(fn=cmd_run)
