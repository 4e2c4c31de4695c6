"""``jitort bench``: jitort side by side with onnxruntime, measured so that a noisy machine cannot
tilt the comparison (separate processes, warm-ups, interleaved rounds, paired per-round ratios).

    from jitort import bench
    res = bench.run(["light_squeezenet", "mlp"], threads=[1], rounds=5, out="bench-out")
    print(bench.format_table(res))

Modules: ``harness`` (the method and the records), ``workload`` (models by name, batch and inputs),
``stats`` (percentiles, geometric mean, ratio), ``flops`` (FLOPs and bytes per op), ``machine``
(CPU, versions, sgemm and copy peaks), ``report`` (table, results.json, results.md, charts),
``worker`` (the per-runtime process; a script, not imported by the rest).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from jitort.bench.harness import BenchConfig, Results, run_benchmark, total_steps
from jitort.bench.report import Progress, format_table, write_all

__all__ = ["BenchConfig", "Progress", "Results", "format_table", "run", "run_benchmark", "total_steps", "write_all"]


def run(models: Sequence[str], runtimes: Sequence[str] = ("jitort", "onnxruntime"), threads: Sequence[int] = (1,),
        batch: Sequence[int] = (1,), rounds: int = 10, out: str | os.PathLike[str] | None = None,
        progress: bool | None = None, **options: Any) -> Results:
    """Benchmark ``models`` (paths, ``light_<name>``, or zoo names such as ``mlp`` / ``bert:hidden=256``)
    on ``runtimes`` at each thread count and batch size. ``options`` are the other fields of
    :class:`BenchConfig` (``warmup_s``, ``round_s``, ``dims``, ``seq``, ``seed``, ``cold``, ...).
    With ``out``, writes results.json, results.md and (with matplotlib) PNG charts there.
    ``progress``: a progress bar on stderr (default: when stderr is a terminal)."""
    cfg = BenchConfig(models=list(models), runtimes=list(runtimes), threads=[int(t) for t in threads],
                      batch=[int(b) for b in batch], rounds=rounds, **options)
    res = run_benchmark(cfg, Progress(total_steps(cfg), enabled=progress))
    if out is not None:
        write_all(res, out)
    return res
