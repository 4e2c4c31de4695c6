"""What the subcommands share: exit codes, usage errors, reading inputs, comparing outputs,
session options for jitort and onnxruntime."""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import jitort


RTOL, ATOL = 1e-3, 1e-4
EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """A bad argument or missing file: reported in one line, exit code 2."""



# --- inputs and outputs --------------------------------------------------------------------------

def parse_dims(items: Sequence[str] | None) -> dict[str, int]:
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


def load_array(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"input file not found: {path}")
    if p.suffix == ".pb":
        import onnx
        return onnx.numpy_helper.to_array(onnx.load_tensor(str(p)))
    return np.load(p, allow_pickle=False)


def parse_inputs(items: Sequence[str] | None, specs: list[tuple[str, np.dtype, Any]]) -> dict[str, np.ndarray]:
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
        feeds[name] = load_array(path)
    for name, dt, _ in specs:
        if name in feeds and feeds[name].dtype != dt:
            raise UsageError(f"input {name!r}: the file holds {feeds[name].dtype}, the model expects {dt}")
    return feeds


def safe_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "output"
    out, k = base, 1
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def summary(a: np.ndarray) -> str:
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


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, float, list[float]]:
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, first, times


def ms(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.3f} s"


def print_compile_report(sess: Any, run_compiled: list[tuple[str, float]] | None = None) -> None:
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

def session_options(threads: int | None, dims: dict[str, int] | None = None) -> Any:
    so = jitort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    for k, v in (dims or {}).items():
        so.add_free_dimension_override_by_name(k, v)
    return so


def ort_session(source: Path | Any, threads: int | None, profile_prefix: str | None = None) -> Any:
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


def median(times: list[float]) -> str:
    return ms(statistics.median(times)) if times else "-"


def resolve(model: str, resolve_model: Callable[[str], Path]) -> Path:
    try:
        return resolve_model(model)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None


def int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{what} expects comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise UsageError(f"--{what} expects positive integers, got {text!r}")
    return vals


