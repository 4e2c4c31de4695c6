"""The ``jitort`` command line: ``run``, ``explain``, ``bench``, ``profile`` and ``cache``.

``jitort run MODEL`` compiles and runs a model (a path, or ``light_<name>`` for a CNN shipped in
the onnx wheel), prints its outputs and what Numba compiled, and optionally checks it against
onnxruntime. ``jitort explain MODEL`` shows what the compiler did: the IR after passes, the fused
groups, the passes' notes, the generated kernels and plan in the cache. ``jitort bench`` compares
jitort with onnxruntime (``jitort.bench``). ``jitort profile MODEL`` puts jitort's per-op time next
to onnxruntime's per-node profile (``jitort/profile_compare.py``). ``jitort cache`` inspects and
cleans the on-disk cache.
``jitort conformance`` runs onnx's backend conformance cases in worker subprocesses and writes a
per-op report (``jitort/conformance.py``).

Exit codes: 0 success; 1 outputs disagree (rtol 1e-3, atol 1e-4); 2 usage error (bad argument,
missing file, onnxruntime not installed); 3 jitort (or, for ``--compare-ort``, onnxruntime) failed
to compile or run the model (``compile``: no artifact could be built); 130 interrupted (``compile``).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

RTOL, ATOL = 1e-3, 1e-4
EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
CACHE_KINDS = ("kernels", "plans")  # the trees jitort writes under the cache root (jitort/cache.py)


class UsageError(Exception):
    """A bad argument or missing file: reported in one line, exit code 2."""


# --- the cache layout ----------------------------------------------------------------------------

def cached_source_path(name: str, kind: str = "kernels", root: Path | None = None) -> Path:
    """Where ``jitort.cache.load_source_module(kind, name, ...)`` keeps a generated module:
    ``<root>/<kind>/<name[-20:-18]>/<name>.py``."""
    from jitort.cache import cache_root
    return (root or cache_root()) / kind / name[-20:-18] / f"{name}.py"


@dataclass
class CacheEntry:
    """One generated module in the cache: its source, lock, and Numba's / Python's compiled files."""

    kind: str
    name: str
    files: list[Path] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(_stat(f, "st_size") for f in self.files)

    @property
    def mtime(self) -> float:
        return max((_stat(f, "st_mtime") for f in self.files), default=0.0)

    @property
    def last_used(self) -> float:
        """Latest read or write of any of its files (reads count where the filesystem records
        access times; under ``noatime`` this is the last write)."""
        return max((max(_stat(f, "st_mtime"), _stat(f, "st_atime")) for f in self.files), default=0.0)


def _stat(p: Path, attr: str) -> Any:
    try:
        return getattr(p.lstat(), attr)
    except OSError:
        return 0


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every module under ``<root>/kernels`` and ``<root>/plans``, files grouped by module name
    (Numba's ``__pycache__/<name>.<func>-<line>.py311.nbi/.nbc`` files belong to ``<name>``).
    Leftover temporary files (``.tmp-*``) are entries of their own."""
    from jitort.cache import cache_root
    root = root or cache_root()
    entries: dict[tuple[str, str], CacheEntry] = {}
    for kind in CACHE_KINDS:
        top = root / kind
        if top.is_symlink() or not top.is_dir():
            continue
        for shard in sorted(top.iterdir()):
            if shard.is_symlink() or not shard.is_dir():
                continue
            files = [f for f in shard.iterdir() if not f.is_dir() or f.is_symlink()]
            pyc = shard / "__pycache__"
            if pyc.is_dir() and not pyc.is_symlink():
                files += list(pyc.iterdir())
            for f in sorted(files):
                name = f.name if f.name.startswith(".") else f.name.split(".")[0]
                entries.setdefault((kind, name), CacheEntry(kind, name)).files.append(f)
    return sorted(entries.values(), key=lambda e: (e.kind, e.name))


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _remove_entry(e: CacheEntry) -> None:
    for f in e.files:
        try:
            f.unlink()
        except FileNotFoundError:
            pass
    for d in {f.parent for f in e.files}:
        for dd in (d, d.parent) if d.name == "__pycache__" else (d,):
            try:
                dd.rmdir()  # only when empty
            except OSError:
                pass


def cmd_cache(args: argparse.Namespace) -> int:
    from jitort.artifact import wait_pending
    from jitort.cache import cache_root
    wait_pending()  # entries this process's sessions are still writing
    root = cache_root()
    if args.action == "path":
        print(root)
        return EXIT_OK
    entries = cache_entries(root)
    if args.action == "list":
        if not entries:
            print(f"cache {root} is empty")
            return EXIT_OK
        print(f"{'kind':8} {'name':28} {'size':>9}  modified")
        for e in entries:
            print(f"{e.kind:8} {e.name:28} {_human(e.size):>9}  {_when(e.mtime)}")
        print(f"{len(entries)} entries, {_human(sum(e.size for e in entries))} in {root}")
        return EXIT_OK
    if args.action == "prune":
        if args.older_than is None:
            raise UsageError("cache prune needs --older-than DAYS")
        cutoff = time.time() - args.older_than * 86400
        entries = [e for e in entries if e.last_used < cutoff]
    total = sum(e.size for e in entries)
    for e in entries:
        print(f"removed {e.kind}/{e.name} ({_human(e.size)})")
        _remove_entry(e)
    if args.action == "clear":
        for kind in CACHE_KINDS:  # whatever else is left in jitort's own trees (empty shards)
            top = root / kind
            if top.is_dir() and not top.is_symlink():
                shutil.rmtree(top, ignore_errors=True)
    what = "cleared" if args.action == "clear" else f"pruned (unused for {args.older_than:g} days)"
    print(f"{what}: {len(entries)} entries, {_human(total)} from {root}")
    return EXIT_OK


# --- inputs and outputs --------------------------------------------------------------------------

def _parse_dims(items: Sequence[str] | None) -> dict[str, int]:
    dims: dict[str, int] = {}
    for it in items or []:
        name, sep, val = it.rpartition("=")
        if not sep or not name:
            raise UsageError(f"--dim expects NAME=N, got {it!r}")
        try:
            dims[name] = int(val)
        except ValueError:
            raise UsageError(f"--dim {it!r}: {val!r} is not an integer") from None
    return dims


def _load_array(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"input file not found: {path}")
    if p.suffix == ".pb":
        import onnx
        return onnx.numpy_helper.to_array(onnx.load_tensor(str(p)))
    return np.load(p, allow_pickle=False)


def _parse_inputs(items: Sequence[str] | None, specs: list[tuple[str, np.dtype, Any]]) -> dict[str, np.ndarray]:
    names = [s[0] for s in specs]
    feeds: dict[str, np.ndarray] = {}
    for it in items or []:
        # Input names may contain '=' or '/', so match a known name first.
        match = max((n for n in names if it.startswith(n + "=")), key=len, default=None)
        if match is not None:
            name, path = match, it[len(match) + 1:]
        elif "=" not in it and len(names) == 1:
            name, path = names[0], it
        else:
            name, _, path = it.partition("=")
            raise UsageError(f"--input {it!r}: the model has no input {name!r}; its inputs are {names}")
        feeds[name] = _load_array(path)
    for name, dt, _ in specs:
        if name in feeds and feeds[name].dtype != dt:
            raise UsageError(f"input {name!r}: the file holds {feeds[name].dtype}, the model expects {dt}")
    return feeds


def _safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "output"
    out, k = base, 1
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def _summary(a: np.ndarray) -> str:
    if a.size == 0:
        return "empty"
    if a.dtype.kind == "b":
        return f"true={int(a.sum())}/{a.size}"
    if a.dtype.kind not in "iuf":
        return f"first={a.flat[0]!r}"
    x = a.astype(np.float64)
    fin = np.isfinite(x)
    bad = "" if fin.all() else f" nan={int(np.isnan(x).sum())} inf={int(np.isinf(x).sum())}"
    x = x[fin]
    if x.size == 0:
        return bad.strip()
    return f"min={x.min():.6g} max={x.max():.6g} mean={x.mean():.6g} std={x.std():.6g}{bad}"


def compare(got: np.ndarray, ref: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> tuple[bool, str]:
    """Whether ``got`` matches ``ref`` within ``|got - ref| <= atol + rtol * |ref|``, and a line saying
    how far apart they are (max abs error; max rel error over elements with ``|ref| > atol``)."""
    if got.shape != ref.shape:
        return False, f"shape {got.shape} != reference {ref.shape}"
    if got.size == 0:
        return True, "empty"
    g, r = got.astype(np.float64), ref.astype(np.float64)
    same_nan = np.isnan(g) == np.isnan(r)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(g - r)
        diff[(g == r) | np.isnan(g) | np.isnan(r)] = 0.0  # equal infinities; NaNs are counted apart
        big = np.isfinite(r) & (np.abs(r) > atol) & np.isfinite(diff)
        rel = float(np.max(diff[big] / np.abs(r[big]))) if big.any() else 0.0
    ok = bool(same_nan.all()) and np.allclose(g, r, rtol=rtol, atol=atol, equal_nan=True)
    note = "" if same_nan.all() else f", NaN in different places ({int((~same_nan).sum())})"
    return ok, f"max abs err {float(diff.max()):.3g}, max rel err {rel:.3g}{note}"


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, float, list[float]]:
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, first, times


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.3f} s"


def _print_compile_report(sess: Any, run_compiled: list[tuple[str, float]] | None = None) -> None:
    rep = sess.compile_report
    compiled = rep["compiled"]
    print(f"compile: session created in {rep['session_seconds']:.2f} s "
          f"(compile pipeline {rep['compile_seconds']:.2f} s); {len(rep['kernels'])} fused kernel(s), "
          f"plan {rep['plan']}")
    if compiled:
        print(f"  Numba compiled {len(compiled)} function(s) in {sum(s for _, s in compiled):.2f} s:")
        for fn, s in compiled:
            print(f"    {fn}  {s:.2f} s")
    else:
        print("  Numba compiled nothing: every kernel was loaded from the cache")
    if run_compiled is not None:
        if run_compiled:
            print(f"  first run compiled {len(run_compiled)} library function(s) in "
                  f"{sum(s for _, s in run_compiled):.2f} s:")
            for fn, s in run_compiled:
                print(f"    {fn}  {s:.2f} s")
        else:
            print("  first run compiled nothing")


# --- run -----------------------------------------------------------------------------------------

def _session_options(threads: int | None, dims: dict[str, int] | None = None) -> Any:
    import jitort
    so = jitort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    for k, v in (dims or {}).items():
        so.add_free_dimension_override_by_name(k, v)
    return so


def _ort_session(source: Path | Any, threads: int | None, profile_prefix: str | None = None) -> Any:
    """An onnxruntime CPU session for a model file or ModelProto (``profile_prefix``: with profiling)."""
    import onnx
    import onnxruntime
    so = onnxruntime.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    is_proto = isinstance(source, onnx.ModelProto)
    try:
        return onnxruntime.InferenceSession(source.SerializeToString() if is_proto else str(source), so,
                                            providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime reads only IR versions up to its own: lower the field
        m = re.search(r"max supported IR version: (\d+)", str(e))
        if m is None:
            raise
        proto = onnx.ModelProto()
        proto.CopyFrom(source if is_proto else onnx.load(str(source)))
        proto.ir_version = min(proto.ir_version, int(m.group(1)))
        return onnxruntime.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def cmd_run(args: argparse.Namespace) -> int:
    import jitort
    from jitort import cache
    from jitort.errors import ALL_ERRORS
    from jitort.models import expected_output, input_specs, random_feeds, reference_inputs, resolve_model

    path = _resolve(args.model, resolve_model)
    specs = input_specs(path)
    dims = _parse_dims(args.dim)
    feeds = _parse_inputs(args.input, specs)
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
        sess = jitort.InferenceSession(str(path), _session_options(args.threads),
                                       providers=["CPUExecutionProvider"])
        mark = cache.compile_count()
        outs, first, times = _timed(lambda: sess.run(None, feeds), args.repeat)
    except ALL_ERRORS as e:
        print(f"jitort failed on {path}: {type(e).__name__}: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_FAILED
    _print_compile_report(sess, cache.compiled_since(mark))
    names = [o.name for o in sess.get_outputs()]

    print("outputs:")
    taken: set[str] = set()
    for n, a in zip(names, outs):
        print(f"  {n}: {a.dtype} {tuple(a.shape)}  {_summary(a)}")
        if args.output_dir:
            out_dir = Path(args.output_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            f = out_dir / f"{_safe_name(n, taken)}.npy"
            np.save(f, a)
            print(f"    saved {f}")

    status = EXIT_OK
    if reference is not None:
        ok, line = compare(outs[0], reference)
        print(f"vs expected output shipped with onnx: {names[0]}: {line}  {'OK' if ok else 'MISMATCH'}")
        status = status if ok else EXIT_MISMATCH

    print(f"time jitort:      first run {_ms(first)}; median of {len(times)} runs {_median(times)}")
    if args.compare_ort:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("--compare-ort needs onnxruntime, which is not installed (pip install onnxruntime)",
                  file=sys.stderr)
            return EXIT_USAGE
        t0 = time.perf_counter()
        try:
            osess = _ort_session(path, args.threads)
            created = time.perf_counter() - t0
            ref, ofirst, otimes = _timed(lambda: osess.run(None, feeds), args.repeat)
        except Exception as e:  # onnxruntime's exceptions share no base class
            print(f"onnxruntime failed on {path}: {type(e).__name__}: {e}", file=sys.stderr)
            return EXIT_FAILED
        print(f"time onnxruntime: first run {_ms(ofirst)}; median of {len(otimes)} runs {_median(otimes)}"
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


def _median(times: list[float]) -> str:
    return _ms(statistics.median(times)) if times else "-"


def _resolve(model: str, resolve_model: Callable[[str], Path]) -> Path:
    try:
        return resolve_model(model)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None


# --- explain -------------------------------------------------------------------------------------

def format_graph(g: Any) -> str:
    """The IR as ``Graph.__str__`` prints it, with each fused group's body shown by node names."""
    from jitort.passes.fusion import FUSED
    nodes = [replace(n, attrs={**n.attrs, "body": "+".join(b.name or b.op_type for b in n.attrs["body"])})
             if n.op_type == FUSED and "body" in n.attrs else n for n in g.nodes]
    return str(replace(g, nodes=nodes))


def _module_path(name: str, kind: str) -> Path:
    # The file a generated module was imported from: a process that changed JITORT_CACHE_DIR
    # after importing it keeps using the first copy.
    f = getattr(sys.modules.get(name), "__file__", None)
    return Path(f) if f else cached_source_path(name, kind)


def cmd_explain(args: argparse.Namespace) -> int:
    import jitort
    from jitort.codegen.cpu import fused_kernel
    from jitort.errors import ALL_ERRORS
    from jitort.models import resolve_model
    from jitort.passes.fusion import FUSED

    path = _resolve(args.model, resolve_model)
    try:
        sess = jitort.InferenceSession(str(path), _session_options(None, _parse_dims(args.dim)),
                                       providers=["CPUExecutionProvider"])
    except ALL_ERRORS as e:
        print(f"jitort failed on {path}: {type(e).__name__}: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_FAILED
    c = sess._compiled
    g = sess._ir()  # a session loaded from the cache or an artifact rebuilds it
    print(f"model: {path}")
    print("\n== IR after passes ==")
    print(format_graph(g))

    groups = [n for n in g.nodes if n.op_type == FUSED and n.domain == "jitort"]
    print(f"\n== fused groups ({len(groups)}) ==")
    for n in groups:
        body = n.attrs["body"]
        fk = fused_kernel(n, g)
        print(f"{fk.name} ({fk.mode}): {len(body)} node(s) -> {', '.join(n.outputs)}")
        for b in body:
            print(f"    {b.name or '?'}: {b.op_type}({', '.join(i or '_' for i in b.inputs)}) -> "
                  f"{', '.join(o for o in b.outputs if o)}")
    if not groups:
        print("(none)")

    print(f"\n== pass notes ({len(g.notes)}) ==")
    for note in g.notes:
        print(note)
    if not g.notes:
        print("(none)")

    compiled = {fn.split(".")[0]: 0.0 for fn, _ in c.compiled}
    for fn, s in c.compiled:
        compiled[fn.split(".")[0]] += s
    kernels = c.kernels or list({k.name: k for k in (fused_kernel(n, g) for n in groups)}.values())
    print(f"\n== kernels ({len(kernels)}) ==")
    for k in kernels:
        how = f"compiled now ({compiled[k.name]:.2f} s)" if k.name in compiled else "loaded from the cache"
        print(f"{k.name} ({k.mode}) {how}")
        print(f"    {_module_path(k.name, 'kernels')}")
        if args.source:
            print(k.source)
    print("\n== plan ==")
    print(f"{c.plan_name}  {_module_path(c.plan_name, 'plans')}")
    if args.source:
        print(c.plan_source)
    print(f"\ncompile: {c.seconds:.2f} s, session {sess.session_seconds:.2f} s")
    return EXIT_OK


# --- bench ---------------------------------------------------------------------------------------

def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{what} expects comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise UsageError(f"--{what} expects positive integers, got {text!r}")
    return vals


def cmd_bench(args: argparse.Namespace) -> int:
    from jitort.bench import BenchConfig, Progress, format_table, run_benchmark, total_steps, write_all

    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    try:
        cfg = BenchConfig(models=list(args.models), runtimes=runtimes, threads=_int_list(args.threads, "threads"),
                          batch=_int_list(args.batch, "batch"), rounds=args.rounds, warmup_s=args.warmup,
                          round_s=args.round_time, min_iters=args.min_iters, dims=_parse_dims(args.dim),
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


# --- entry ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jitort", description="jitort: a JIT-compiling ONNX runtime (onnxruntime's API, Numba kernels).",
        epilog="MODEL is a path to an .onnx file or light_<name>, a CNN shipped with the onnx package "
               "(light_squeezenet, light_resnet50, ...). Exit codes: 0 ok, 1 outputs disagree, "
               "2 usage error, 3 jitort (or onnxruntime) failed on the model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    e = sub.add_parser("explain", help="show the IR after passes, fusion decisions, kernels and plan")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("--dim", action="append", metavar="NAME=N", help="fix a symbolic dim before compiling")
    e.add_argument("--source", action="store_true", help="also print the generated source")
    e.set_defaults(fn=cmd_explain)

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

    c = sub.add_parser("cache", help="the compiled-code cache (JITORT_CACHE_DIR)")
    c.add_argument("action", choices=["path", "list", "clear", "prune"],
                   help="path: print the root; list: entries; clear: remove all; prune: remove old entries")
    c.add_argument("--older-than", type=float, metavar="DAYS", help="prune: entries unused for DAYS days")
    c.set_defaults(fn=cmd_cache)

    from jitort.conformance import add_parser as add_conformance_parser
    add_conformance_parser(sub)
    from jitort.aot import add_parser as add_compile_parser
    add_compile_parser(sub)
    from jitort.profile_compare import add_parser as add_profile_parser
    add_profile_parser(sub)
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
