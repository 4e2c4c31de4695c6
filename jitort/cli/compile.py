"""``jitort compile``: build an ahead-of-time artifact (``jitort.aot``) from the command line."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Iterator

from jitort.aot import compile_artifact, model_specs
from jitort.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError, parse_inputs
from jitort.errors import Fail


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile (as Ctrl-C does), so the compile cleans up."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def add_parser(sub: Any) -> None:
    """The ``compile`` subcommand of jitort's CLI."""
    p = sub.add_parser("compile", help="compile a model ahead of time into an artifact directory",
                       description="Compile MODEL into DIR: generated source, Numba's objects, folded constants "
                                   "and a manifest; InferenceSession(DIR) then starts without compiling. With "
                                   "--provider cuda: the CUDA partition, and every CUDA kernel as PTX (and cubin "
                                   "with registers/shared memory where nvJitLink is installed); no GPU needed.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="artifact directory")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224",
                   help="shape of an input for the warm-up run (binds its symbolic dims); repeatable")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="a sample input for the warm-up run (its values and shape; default zeros, ones for "
                        "mask-like inputs); repeatable")
    p.add_argument("--target", default="host", choices=["host", "portable"], help="CPU target (default host)")
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda"], help="execution provider (default cpu)")
    p.add_argument("--cc", default="9.0", metavar="MAJOR.MINOR", help="CUDA compute capability (default 9.0)")
    p.set_defaults(fn=cmd_compile)


def cmd_compile(args: Any) -> int:
    """``jitort compile``: exit 0 when the artifact is written (a failed warm-up run is a warning),
    2 on bad arguments, 3 when no artifact can be built, 130 when interrupted; a failure is one
    line on stderr and leaves no directory behind."""
    if not os.path.isfile(args.model):
        raise UsageError(f"no such model file: {args.model}")
    try:
        major, minor = (int(v) for v in args.cc.split("."))
    except ValueError:
        raise UsageError(f"--cc expects MAJOR.MINOR (e.g. 9.0), got {args.cc!r}") from None
    shapes: dict[str, list[int]] = {}
    for item in args.input_shape or []:
        name, sep, dims = item.rpartition("=")
        try:
            if not sep:
                raise ValueError
            shapes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise UsageError(f"--input-shape expects NAME=1x3x224x224, got {item!r}") from None
    try:
        samples = parse_inputs(args.input, model_specs(args.model)) if args.input else {}
        with _sigterm_interrupts():
            rep = compile_artifact(args.model, args.output, shapes, args.target, provider=args.provider,
                                   cc=(major, minor), inputs=samples)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except Fail as e:
        print(f"jitort compile: error: {e.args[0]}; no artifact written", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("jitort compile: interrupted; no artifact written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if rep.get("warmup_error"):
        print(f"jitort compile: warning: the warm-up run failed ({rep['warmup_error']}); the library kernels "
              "it did not reach compile on first use", file=sys.stderr)
    print(f"artifact: {rep['artifact']} (target {rep['target']}, {rep['kernels']} kernels)")
    if rep.get("inputs"):
        shapes = (f"{n} {'x'.join(map(str, s)) or 'scalar'}" for n, s in rep["inputs"].items())
        print(f"  warm-up inputs: {', '.join(shapes)}")
    for r in rep.get("resources", []):
        res = "" if r.get("registers") is None else (
            f"  {r['registers']:3d} registers, {r['shared_bytes']:6d} B shared, {r['stack_bytes']} B stack, "
            f"{r['spill_stores']} B spilled")
        print(f"  {r['kernel']:<28} {r['key']:<14}{res}")
    if "cuda_ops" in rep:
        print(f"  on CUDA: {', '.join(rep['cuda_ops'])}")
        print(f"  on CPU:  {', '.join(rep['cpu_ops']) or '-'}")
    return EXIT_OK
