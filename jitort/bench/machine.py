"""What machine the numbers came from, and how far from its limits they are.

* ``cpu_info()``: the CPU model (``lscpu``'s "Model name", else /proc/cpuinfo, else
  ``platform.processor()``), logical CPUs, CPUs this process may use, physical cores when known.
* ``versions()``: python and the packages whose versions change the numbers.
* ``sgemm_peak(threads, n)``: float32 matrix product of two n x n matrices, best of several, through
  both BLAS libraries in the environment (numpy's ``matmul`` and scipy's ``sgemm``, which is the one
  jitort's kernels call), each limited to ``threads`` by threadpoolctl; the peak is the better of the
  two, in GFLOP/s (``2 n^3 / seconds``). ``measure_peaks`` takes the best of n = 1024 and 2048.
* ``copy_bandwidth(threads)``: ``np.copyto`` between two 256 MiB float32 arrays, split in ``threads``
  chunks copied by as many Python threads (numpy releases the GIL while copying), best of several, in
  GB/s counting the bytes read plus the bytes written (``2 * nbytes / seconds``).

These are what this machine, with these libraries, reaches on the two operations a model's run is
made of; they are practical ceilings, not the vendor's datasheet numbers.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, Callable

import numpy as np

__all__ = ["copy_bandwidth", "cpu_info", "measure_peaks", "sgemm_peak", "versions"]

SGEMM_SIZES = (1024, 2048)  # the best of both: on a busy machine the shorter one may catch a quiet moment
SGEMM_QUICK = (256,)

PACKAGES = ("jitort", "numpy", "scipy", "numba", "llvmlite", "onnx", "onnxruntime", "threadpoolctl")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(),
                                  "implementation": platform.python_implementation()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def _lscpu() -> dict[str, str]:
    try:
        r = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                           env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in r.stdout.splitlines()) if v}


def cpu_info() -> dict[str, Any]:
    ls = _lscpu()
    model = ls.get("Model name")
    if not model:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
                model = m.group(1).strip() if m else None
        except OSError:
            model = None
    physical = None
    try:
        physical = int(ls["Core(s) per socket"]) * int(ls.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"model_name": model or platform.processor() or None, "processor": platform.processor() or None,
            "machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
            "logical_cpus": os.cpu_count(), "usable_cpus": usable, "physical_cores": physical,
            "hypervisor": ls.get("Hypervisor vendor"), "flags_avx512": "avx512f" in ls.get("Flags", ""),
            "flags_avx2": "avx2" in ls.get("Flags", "")}


def cpu_label() -> str:
    """One line naming the CPU for a benchmark table: model name, family/model numbers where
    /proc/cpuinfo has them (a virtualised "AMD EPYC" says little without them), widest vector ISA,
    and the CPUs this process may use."""
    info = cpu_info()
    fam = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
        m = re.search(r"^cpu family\s*:\s*(\d+)$.*?^model\s*:\s*(\d+)$", text, re.M | re.S)
        fam = f" (family {m.group(1)} model {m.group(2)})" if m else ""
    except OSError:
        pass
    isa = "AVX-512F" if info["flags_avx512"] else "AVX2" if info["flags_avx2"] else "no AVX2"
    return f"{info['model_name'] or 'unknown CPU'}{fam}, {isa}, {info['usable_cpus']} CPUs"


def _best(fn: Callable[[], Any], reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sgemm_peak(threads: int, n: int = 2048, reps: int = 5) -> dict[str, float]:
    """Best float32 GEMM rate (GFLOP/s) of numpy's and scipy's BLAS at ``threads`` threads."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    flop = 2.0 * n ** 3
    out: dict[str, float] = {}
    try:  # loaded before the limits: threadpoolctl limits only the libraries already loaded
        from scipy.linalg import blas
    except ImportError:
        blas = None
    with threadpool_limits(limits=threads, user_api="blas"):
        out["numpy_gflops"] = flop / _best(lambda: np.matmul(a, b, out=c), reps) / 1e9
        if blas is not None:
            # C = A B  <=>  C^T = B^T A^T, and the transposes of C-ordered arrays are Fortran-ordered:
            # no copies on the way in.
            out["scipy_gflops"] = flop / _best(lambda: blas.sgemm(1.0, b.T, a.T), reps) / 1e9
    out["gflops"] = max(out.values())
    out["n"] = n
    return out


def copy_bandwidth(threads: int, nbytes: int = 256 << 20, reps: int = 5) -> dict[str, float]:
    """Best ``np.copyto`` bandwidth (GB/s, read + write) with the array split among ``threads`` threads."""
    n = nbytes // 4
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    edges = np.linspace(0, n, threads + 1).astype(np.int64)
    chunks = [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    if threads == 1:
        seconds = _best(lambda: np.copyto(dst, src), reps)
    else:
        with ThreadPoolExecutor(threads) as ex:
            def copy() -> None:
                list(ex.map(lambda c: np.copyto(dst[c[0]:c[1]], src[c[0]:c[1]]), chunks))
            seconds = _best(copy, reps)
    return {"gbytes_s": 2.0 * src.nbytes / seconds / 1e9, "nbytes": int(src.nbytes)}


def measure_peaks(threads: list[int], quick: bool = False) -> dict[str, dict[str, Any]]:
    """``{str(threads): {"sgemm_gflops", "copy_gbytes_s", ...}}`` for each thread count.
    ``quick`` (for tests) uses small sizes: fast, but not a real peak."""
    out: dict[str, dict[str, Any]] = {}
    for t in threads:
        sizes = SGEMM_QUICK if quick else SGEMM_SIZES
        runs = [sgemm_peak(t, n=n, reps=2 if quick else 5) for n in sizes]
        g = max(runs, key=lambda r: r["gflops"])
        bw = copy_bandwidth(t, nbytes=(8 << 20) if quick else (256 << 20), reps=2 if quick else 5)
        out[str(t)] = {"sgemm_gflops": g["gflops"], "sgemm_n": g["n"], "sgemm_runs": runs,
                       "copy_gbytes_s": bw["gbytes_s"], "copy_nbytes": bw["nbytes"], "quick": quick}
    return out


if __name__ == "__main__":  # pragma: no cover - manual check
    import json
    json.dump({"cpu": cpu_info(), "versions": versions(),
               "peaks": measure_peaks([int(a) for a in sys.argv[1:]] or [1])}, sys.stdout, indent=1)
