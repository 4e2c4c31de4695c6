"""The ``jitort`` command line: ``run``, ``explain``, ``bench``, ``profile`` and ``cache``.

``jitort run MODEL`` compiles and runs a model (a path, or ``light_<name>`` for a CNN shipped in
the onnx wheel), prints its outputs and what Numba compiled, and optionally checks it against
onnxruntime. ``jitort explain MODEL`` shows what the compiler did: the IR after passes, the fused
groups, the passes' notes, the generated kernels and plan in the cache. ``jitort bench`` compares
jitort with onnxruntime (``jitort.bench``). ``jitort profile MODEL`` puts jitort's per-op time next
to onnxruntime's per-node profile (``jitort.cli.profile``). ``jitort cache`` inspects and
cleans the on-disk cache.
``jitort conformance`` runs onnx's backend conformance cases in worker subprocesses and writes a
per-op report (``jitort/cli/conformance.py`` over ``jitort/conformance.py``).

Exit codes: 0 success; 1 outputs disagree (rtol 1e-3, atol 1e-4); 2 usage error (bad argument,
missing file, onnxruntime not installed); 3 jitort (or, for ``--compare-ort``, onnxruntime) failed
to compile or run the model (``compile``: no artifact could be built); 130 interrupted (``compile``).

One module per subcommand, each with its ``add_parser``; ``common`` holds what they share (exit
codes, ``UsageError``, reading inputs, comparing outputs).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from jitort.cli import bench, cache, compile, conformance, explain, profile, run
from jitort.cli.common import EXIT_OK, EXIT_USAGE, UsageError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jitort", description="jitort: a JIT-compiling ONNX runtime (onnxruntime's API, Numba kernels).",
        epilog="MODEL is a path to an .onnx file or light_<name>, a CNN shipped with the onnx package "
               "(light_squeezenet, light_resnet50, ...). Exit codes: 0 ok, 1 outputs disagree, "
               "2 usage error, 3 jitort (or onnxruntime) failed on the model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add in (run.add_parser, explain.add_parser, bench.add_parser, cache.add_parser, conformance.add_parser,
                compile.add_parser, profile.add_parser):
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The ``jitort`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or argparse's usage error
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        return int(args.fn(args))
    except UsageError as e:
        print(f"jitort {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `jitort cache list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
